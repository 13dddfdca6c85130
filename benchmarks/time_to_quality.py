"""Time to quality: pretrain by a recipe for a budget of pretraining minutes, probe the encoder at fixed steps
(step 0, its random initialisation, included) with a probe recipe, and write the learning curve as JSON and PNG.

    python benchmarks/time_to_quality.py --config configs/pretrain/demo_fast.yaml --budget-min 5 \\
        --out runs/ttq/fast [key=value ...]                      # overrides of the pretraining recipe
    python benchmarks/time_to_quality.py plot runs/ttq/a/curve.json "demo seed 0"=runs/demo/seed0 --out curves.png

The budget becomes a number of steps (so that the learning-rate schedule ends with the budget): a 40-step
calibration run measures the recipe's seconds per step first, unless --steps gives the number. The clock is
``train_seconds`` of the run log: wall seconds of training steps, data waits included, probes and validation
excluded. curve.json holds the points (step, pretraining seconds, clips decoded, and per probe task its test
accuracy, the held-out accuracy that chose the probe's feature and C, and retrieval mAP@k), the fbank
statistics' level, steps/s and clips/s. Choose between recipes by the held-out values, never the test ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssast.config import load_config  # noqa: E402
from ssast.eval.probe_suite import ProbeConfig, probe_tasks  # noqa: E402
from ssast.train.curves import learning_curve, plot_curves  # noqa: E402
from ssast.train.logs import read_metrics  # noqa: E402
from ssast.train.pretraining import PretrainConfig  # noqa: E402

LOG_EVERY = 10


def pretrain(config: str, run_dir: Path, overrides: list[str]) -> None:
    """One pretraining run in its own process (its thread settings its own); its log goes to run_dir/log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = next((o.split("=")[1] for o in reversed(overrides) if o.startswith("train.max_steps=")), "the recipe's")
    print(f"pretraining {config} for {steps} steps in {run_dir} (its log: {run_dir / 'log'})", flush=True)
    with open(run_dir / "log", "w") as log:
        cmd = [sys.executable, "-m", "pretrain", "--config", config, f"run_dir={run_dir}", "overwrite=true"]
        if subprocess.run(cmd + overrides, stderr=log, stdout=log).returncode:
            sys.exit(f"pretraining failed: see {run_dir / 'log'}")


def seconds_per_step(config: str, overrides: list[str], out: Path) -> float:
    """The recipe's pretraining seconds per step, from steps 10 to 40 of a short run (start-up excluded)."""
    pretrain(
        config,
        out / "calibration",
        overrides + ["train.max_steps=40", "train.log_every=10", "train.eval_every=1000", "train.tensorboard=false"],
    )
    seconds = {line["step"]: line["train_seconds"] for line in read_metrics(out / "calibration")}
    return (seconds[40] - seconds[10]) / 30


def fbank_level(probe: ProbeConfig, cache: Path) -> dict[str, float]:
    """The fbank statistics' probe values: the curve's reference that no pretraining is needed for, kept in
    `cache` (a folder) for the next run of the same probe recipe."""
    path = cache / f".fbank-{hashlib.sha256(repr(probe).encode()).hexdigest()[:12]}.json"
    if not path.exists():
        with tempfile.TemporaryDirectory() as stores:
            path.write_text(json.dumps(probe_tasks(probe, None, stores)))
    return json.loads(path.read_text())


def measure(args: argparse.Namespace) -> dict:
    """Calibrate (unless --steps), pretrain with periodic probes, and collect the curve."""
    out = Path(args.out)
    probe = load_config(ProbeConfig, args.probe_recipe, args.probe)
    cfg = load_config(PretrainConfig, args.config, args.overrides)  # checks the overrides before any run
    unit = args.points * LOG_EVERY  # probed steps are logged steps
    steps = args.steps or max(unit, int(args.budget_min * 60 / seconds_per_step(args.config, args.overrides, out)))
    steps -= steps % unit
    every = steps // args.points
    run_dir = out / "run"
    pretrain(
        args.config,
        run_dir,
        args.overrides
        + [
            f"train.max_steps={steps}",
            f"train.log_every={LOG_EVERY}",
            f"train.checkpoint_every={every}",
            f"probe.every={every}",
            f"probe.start={str(not args.skip_start).lower()}",
            f"probe.recipe={args.probe_recipe}",
            f"probe.overrides=[{','.join(repr(o) for o in args.probe)}]",
        ],
    )
    points = learning_curve(run_dir)
    clips_per_step = cfg.data.batch_size // cfg.data.views
    for p in points:
        p["clips"] = p["step"] * clips_per_step
    last = points[-1]
    return {
        "label": args.label or out.name,
        "config": args.config,
        "overrides": args.overrides,
        "probe_recipe": args.probe_recipe,
        "retrieval_k": probe.retrieval_k,
        "probe_overrides": args.probe,
        "steps": steps,
        "batch_size": cfg.data.batch_size,
        "views": cfg.data.views,
        "steps_per_s": last["step"] / last["train_seconds"],
        "clips_per_s": last["clips"] / last["train_seconds"],
        "points": points,
        "fbank": fbank_level(probe, out.resolve().parent),
    }


def plot(paths: list[str], out: str) -> None:
    """Several curves in one PNG: curve.json files or pretraining run folders with periodic probes (labelled by
    `LABEL=PATH`, or by their name); the fbank level is the first curve.json's."""
    curves, fbank, k = {}, None, None
    for item in paths:
        label, _, path = item.rpartition("=")
        if Path(path).is_dir():
            curves[label or Path(path).name] = learning_curve(path)
            continue
        curve = json.loads(Path(path).read_text())
        curves[label or curve["label"]] = curve["points"]
        fbank, k = fbank or curve["fbank"], k or curve["retrieval_k"]
    plot_curves(curves, out, fbank, k)
    print(out)


def main(argv: list[str] | None = None) -> None:
    """The command line (see the module's docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:
        parser = argparse.ArgumentParser(prog="time_to_quality.py plot")
        parser.add_argument("curves", nargs="+")
        parser.add_argument("--out", required=True)
        args = parser.parse_args(argv[1:])
        return plot(args.curves, args.out)
    parser = argparse.ArgumentParser(
        prog="time_to_quality.py",
        description=__doc__.split("\n\n")[0],
        epilog="time_to_quality.py plot CURVE [LABEL=CURVE ...] --out PNG draws curve.json files or run folders with "
        "periodic probes in one figure.",
    )
    parser.add_argument("--config", required=True, help="pretraining recipe")
    parser.add_argument("--budget-min", type=float, default=5.0, help="pretraining minutes (probes excluded)")
    parser.add_argument("--steps", type=int, default=0, help="steps instead of a budget (no calibration)")
    parser.add_argument("--points", type=int, default=4, help="probes after step 0, evenly spaced")
    parser.add_argument("--skip-start", action="store_true", help="no probe at step 0 (screening runs of one seed)")
    parser.add_argument("--probe-recipe", default="configs/probes/demo.yaml")
    parser.add_argument("--probe", action="append", default=[], metavar="KEY=VALUE", help="probe recipe override")
    parser.add_argument("--out", required=True, help="folder: run/, curve.json, curve.png")
    parser.add_argument("--label", default="")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="pretraining recipe overrides")
    args = parser.parse_args(argv)
    curve = measure(args)
    out = Path(args.out)
    (out / "curve.json").write_text(json.dumps(curve, indent=1))
    plot_curves({curve["label"]: curve["points"]}, out / "curve.png", curve["fbank"], curve["retrieval_k"])
    last = curve["points"][-1]
    tasks = [k for k in curve["fbank"] if not k.endswith(("_held_out", "_map"))]
    print(
        f"{curve['label']}: {curve['steps']} steps in {last['train_seconds'] / 60:.1f} min "
        f"({curve['steps_per_s']:.2f} steps/s, {curve['clips_per_s']:.0f} clips/s); "
        + "; ".join(
            f"{t}: held-out {100 * last[t + '_held_out']:.1f}, test {100 * last[t]:.1f}, "
            f"mAP {100 * last[t + '_map']:.1f}"
            for t in tasks
        )
    )
    print(out / "curve.json", out / "curve.png")


if __name__ == "__main__":
    main()
