"""Short pretraining and fine-tuning runs whose loss traces `tests/data/traces.json` holds, so that a change of the
code that should change no number is checked against the numbers the code gave before it.

    python tests/support/traces.py record     # re-record (only when a change is meant to move the numbers)

The pretraining run is the demo's fast-mode recipe shrunk to one block (6 steps of 4 clips, a checkpoint every 3);
its step-3 checkpoint and run folder are kept in `tests/data/trace_run/`, so that a run written by earlier code is
resumed by the current one. The fine-tuning run is the demo's sound-event recipe, one fold, from that checkpoint.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ssast.train.logs import TIMINGS
from support.stages import run_stage

DATA = Path(__file__).parents[1] / "data"
PRETRAIN = [
    "configs/pretrain/demo_fast.yaml",
    "data.valid_holdout=8",
    "data.batch_size=4",
    "model.depth=1",
    "model.decoder_depth=1",
    "model.decoder_dim=64",
    "model.decoder_heads=1",
    "train.max_steps=6",
    "train.log_every=1",
    "train.eval_every=3",
    "train.checkpoint_every=3",
    "train.threads=1",
    "train.tensorboard=false",
    "optim.warmup_steps=2",
    "optim.lr=1.0e-3",  # the demo recipe's until the traces were recorded
]
FINETUNE = [
    "configs/finetune/demo_esc50.yaml",
    "folds=[1]",
    "epochs=2",
    "data.batch_size=16",
    "model.depth=1",
    "data.num_parallel_calls=1",
    "train.threads=1",
    "train.log_every=1",
    "train.tensorboard=false",
]


def run(module: str, args: list[str], root: Path, run_dir: Path, *extra: str) -> list[dict]:
    """The metrics.jsonl lines of one stage run (subprocess, so that thread settings are the run's own)."""
    run_stage(module, "--config", *args, f"data.root={root}", f"run_dir={run_dir}", *extra)
    folder = run_dir / "fold1" if module == "finetune" else run_dir
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]


def pretrain(root: Path, run_dir: Path, *extra: str) -> list[dict]:
    return run("pretrain", PRETRAIN, root, run_dir, *extra)


def finetune(root: Path, run_dir: Path, init: Path, *extra: str) -> list[dict]:
    return run("finetune", FINETUNE, root / "esc50", run_dir, f"init={init}", *extra)


def losses(lines: list[dict]) -> dict[str, float]:
    """Every logged number but the timings, keyed by step and name."""
    return {f"{line['step']}:{k}": v for line in lines for k, v in line.items() if k not in ("step", *TIMINGS)}


def record(root: Path, work: Path) -> None:
    lines = pretrain(root, work / "pretrain")
    kept = DATA / "trace_run"
    shutil.rmtree(kept, ignore_errors=True)
    (kept / "checkpoints").mkdir(parents=True)
    shutil.copy(work / "pretrain" / "config.yaml", kept / "config.yaml")
    shutil.copy(work / "pretrain" / "checkpoints" / "step_00000003.pt", kept / "checkpoints" / "last.pt")
    (kept / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines if line["step"] <= 3))
    tuned = finetune(root, work / "finetune", kept / "checkpoints" / "last.pt")
    (DATA / "traces.json").write_text(json.dumps({"pretrain": losses(lines), "finetune": losses(tuned)}, indent=1))


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    import tempfile

    from ssast.demo import builtin as demo

    with tempfile.TemporaryDirectory() as tmp:
        demo.build(Path(tmp) / "demo", "small", seed=0)
        record(Path(tmp) / "demo", Path(tmp))
