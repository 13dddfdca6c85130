"""Markdown tables and plots of probe results (mean +- sample std over seeds or checkpoints)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ssast.eval.linear_probe import mean_std_ci


def cell(values: list[float], ci: bool = True) -> str:
    """Percent: the mean, and over several values the sample std (and with `ci` the 95% CI half-width and n)."""
    mean, std, half = mean_std_ci([100 * v for v in values])
    if len(values) < 2:
        return f"{mean:.1f}"
    return f"{mean:.1f} +- {std:.1f}" + (f" [+-{half:.1f}] (n={len(values)})" if ci else "")


def table(results: dict, tasks: list[str]) -> str:
    """Markdown table of the test metric (%): mean +- sample std [95% CI half-width] over seeds / checkpoints."""
    lines = ["| features | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, by_task in results.items():
        lines.append(f"| {name} | " + " | ".join(cell([r["score"] for r in by_task[t]]) for t in tasks) + " |")
        k = next((r["retrieval_k"] for t in tasks for r in by_task[t] if "retrieval_k" in r), "k")
        for key, label in (("knn", "kNN"), ("retrieval", f"retrieval mAP@{k}")):
            if all(key in r for t in tasks for r in by_task[t]):
                lines.append(
                    f"| {name}, {label} | " + " | ".join(cell([r[key] for r in by_task[t]]) for t in tasks) + " |"
                )
    return "\n".join(lines)


def choices(results: dict, tasks: list[str]) -> str:
    """The feature and C each probe chose on held-out training data (the most frequent over folds)."""
    lines = ["| chosen on held-out training data | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, by_task in results.items():
        cells = [
            ", ".join(f"{c[0]} ({c[1]}x)" for c in Counter(r["choice"][0] for r in by_task[t]).most_common(2))
            for t in tasks
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep(results: dict, tasks: list[str]) -> str:
    """Test metric (%) of every feature, each at its own chosen C: the layer x pooling sweep."""
    lines = []
    for t in tasks:
        groups = [g for g in results if len(results[g][t][0]["by_feature"]) > 1]
        features = list(results[groups[0]][t][0]["by_feature"]) if groups else []
        lines += [
            f"\n{t}: test metric of each feature",
            "| feature | " + " | ".join(groups) + " |",
            "|---" * (len(groups) + 1) + "|",
        ]
        lines += [
            f"| {f} | " + " | ".join(cell([r["by_feature"][f] for r in results[g][t]]) for g in groups) + " |"
            for f in features
        ]
    return "\n".join(lines)


def plot_sweep(results: dict, tasks: list[str], path: Path) -> None:
    """A PNG of the test metric against the layer, one line per group and pooling, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
    for ax, t in zip(axes[0], tasks, strict=True):
        swept: set[int] = set()
        for g in (g for g in results if len(results[g][t][0]["by_feature"]) > 1):
            features = list(results[g][t][0]["by_feature"])
            for pooling in dict.fromkeys(f.split("_", 1)[1] for f in features):
                names = [f for f in features if f.endswith("_" + pooling) and f[1:].split("_")[0].isdigit()]
                layers = [int(f[1:].split("_")[0]) for f in names]
                swept.update(layers)
                ax.plot(
                    layers,
                    [100 * np.mean([r["by_feature"][f] for r in results[g][t]]) for f in names],
                    marker="o",
                    label=f"{g}, {pooling}",
                )
        ax.set(title=t, xlabel="layer", ylabel="test metric (%)")
        ax.set_xticks(sorted(swept))  # the layers probed (one layer: its number, not a 3.8-4.2 axis)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
