"""Learning curves: a pretraining run's periodic probes (``probe.every``) against steps and pretraining time, and
their plot with the random-init and fbank levels as references."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ssast.train.logs import read_metrics
from ssast.train.run_folder import RunError


def learning_curve(run_dir: str | Path) -> list[dict]:
    """One point per probed step: {"step", "train_seconds" (pretraining wall seconds up to that step, probes and
    validation excluded), and the probe's values ("<task>", "<task>_held_out", "<task>_map")}. Probed steps must
    be logged steps (``train.log_every`` divides ``probe.every``)."""
    seconds = {line["step"]: line["train_seconds"] for line in read_metrics(run_dir) if "train_seconds" in line}
    seconds[0] = 0.0
    points = []
    for line in read_metrics(run_dir, "probe"):
        if line["step"] not in seconds:
            raise RunError(f"{run_dir}: step {line['step']} was probed but not logged: make log_every divide it")
        points.append({"step": line["step"], "train_seconds": seconds[line["step"]], **line})
    if not points:
        raise RunError(f"{run_dir} holds no periodic probes (pretrain with probe.every > 0): no learning curve to draw")
    return points


def tasks_of(points: list[dict]) -> list[str]:
    """The probe tasks of a curve's points."""
    return [
        k for k in points[0] if k not in ("step", "train_seconds", "clips") and not k.endswith(("_held_out", "_map"))
    ]


def plot_curves(
    curves: dict[str, list[dict]], path: str | Path, fbank: Optional[dict] = None, k: Optional[int] = None
) -> None:
    """A PNG: one row per task; probe test accuracy and retrieval mAP against steps and against pretraining
    minutes, one colour per curve. Dashed: each curve's step 0 (its random initialisation); dotted: the fbank
    statistics' level (`fbank`, as `ssast.eval.probe_suite.probe_tasks` gives it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = tasks_of(next(iter(curves.values())))
    metrics = [("", "probe accuracy (%)"), ("_map", f"retrieval mAP@{k} (%)" if k else "retrieval mAP (%)")]
    fig, axes = plt.subplots(len(tasks), 4, figsize=(16, 3.2 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks, strict=True):
        for col, ((suffix, ylabel), (x, xlabel)) in enumerate(
            (m, a) for m in metrics for a in (("step", "step"), ("train_seconds", "pretraining minutes"))
        ):
            ax, key = row[col], task + suffix
            for i, (label, points) in enumerate(curves.items()):
                if key not in points[0]:
                    continue
                xs = [p[x] / (60 if x == "train_seconds" else 1) for p in points]
                ax.plot(xs, [100 * p[key] for p in points], marker="o", color=f"C{i}", label=label)
                if points[0]["step"] == 0:
                    ax.axhline(100 * points[0][key], color=f"C{i}", linestyle="--", linewidth=0.8)
            if fbank and key in fbank:
                ax.axhline(100 * fbank[key], color="grey", linestyle=":", label="fbank mean+std")
            ax.set(title=f"{task}: {ylabel.split(' (')[0]}", xlabel=xlabel, ylabel=ylabel)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("dashed: step 0 (random init); dotted: fbank mean+std", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
