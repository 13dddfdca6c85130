"""Fair linear probes (and kNN) of encoders on the tasks of a probe recipe, read from embedding stores."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from probes.config import ProbeConfig, ProbeTaskConfig
from ssast.config import ConfigError
from ssast.data.readers import Dataset, read_dataset
from ssast.distributed import Dist, init_distributed, resolve_device
from ssast.embeddings import Store, extract, feature_names, layer_number
from ssast.models import ASTEncoder, SSASTModel, load_encoder
from ssast.probing import fair_probe, mean_std_ci, task_metric
from ssast import retrieval
from ssast.retrieval import knn_classify


def task_parts(task: ProbeTaskConfig, root: str) -> dict[str, Dataset]:
    """The data sets of a task: {"1", ..., "5"} for folds; {"train", "test"(, "valid")} for a split."""
    read = lambda split: read_dataset(dataclasses.replace(task.dataset, split=split), root)
    if task.protocol == "folds":
        return {str(f): read(str(f)) for f in task.folds}
    parts = {"train": read(task.train_split),
             "test": read_dataset(task.test, root) if task.test.path else read(task.test_split)}
    if task.valid_split:
        parts["valid"] = read(task.valid_split)
    return parts


def evaluations(task: ProbeTaskConfig, stores: dict[str, Store]):
    """[(train rows, test rows, inner [(fit rows, held-out rows)])] of a protocol, rows numbered over the stores
    concatenated in order: one per test fold, or one for a split."""
    part = np.concatenate([np.full(len(s.index), i) for i, s in enumerate(stores.values())])
    rows = {name: np.flatnonzero(part == i) for i, name in enumerate(stores)}
    if task.protocol == "folds":
        out = []
        for k in stores:
            train = [j for j in stores if j != k]
            inner = [(np.concatenate([rows[i] for i in train if i != j]), rows[j]) for j in train]
            out.append((np.concatenate([rows[j] for j in train]), rows[k], inner))
        return out
    if "valid" in rows:
        return [(rows["train"], rows["test"], [(rows["train"], rows["valid"])])]
    train = rows["train"]
    held = np.zeros(len(train), dtype=bool)
    held[np.linspace(0, len(train) - 1, max(1, round(task.valid_fraction * len(train)))).round().astype(int)] = True
    return [(train, rows["test"], [(train[~held], train[held])])]


def probe_source(cfg: ProbeConfig, task: ProbeTaskConfig, stores: dict[str, Store], device: str) -> dict:
    """Fair probe (and kNN) of one encoder's (or the fbank's) stores on a task: the mean test metric over the
    protocol's evaluations, the choices made, and each feature's test metric."""
    first = next(iter(stores.values()))
    multi = first.multi_label
    x = {name: np.concatenate([s.features(name) for s in stores.values()]) for name in first.names}
    y = np.concatenate([s.label_array() for s in stores.values()])
    solver = cfg.solver if cfg.solver != "auto" else ("torch" if device != "cpu" else "sklearn")
    results = [fair_probe(x, y, train, test, inner, cfg.cs, multi, solver, device, cfg.tol)
               for train, test, inner in evaluations(task, stores)]
    out = {"score": float(np.mean([r.score for r in results])),
           "choice": list(Counter(f"{r.feature} C={r.c:g}" for r in results).most_common(1)[0]),
           "by_feature": {n: float(np.mean([r.by_feature[n] for r in results])) for n in x}}
    if cfg.retrieval_k:  # query by example over all the task's clips, with the feature the probes chose most
        out["retrieval"] = retrieval.evaluate(x[out["choice"][0].split()[0]], y, cfg.retrieval_k)["map_at_k"]
    if cfg.knn.k and not multi:
        knn = [task_metric(y[test], knn_classify(x[r.feature][train], y[train], x[r.feature][test], cfg.knn.k,
                                                 cfg.knn.metric, int(y.max()) + 1), False)
               for r, (train, test, _) in zip(results, evaluations(task, stores))]
        out["knn"] = float(np.mean(knn))
    return out


def probe_encoder(cfg: ProbeConfig, task: ProbeTaskConfig, parts: dict[str, Dataset], encoder: Optional[ASTEncoder],
                  dist: Dist, device: str, desc: str = "") -> dict:
    """The stores of every part of a task through `encoder` (sharded over the processes), then, on the main
    process, `probe_source` of them."""
    features = dataclasses.replace(cfg.features, target_length=task.target_length)
    stores = {p: extract(encoder, d, features, cfg.data, cfg.embed, cfg.store_dir, dist, device, desc=f"{desc}, {p}")
              for p, d in parts.items()}
    return probe_source(cfg, task, stores, device) if dist.main else {}


def probe_tasks(cfg: ProbeConfig, encoder: ASTEncoder, store_dir: str) -> dict[str, float]:
    """{task: test metric} of a fair probe of one encoder on every task of the recipe, in this process (the
    pretraining stage's periodic probe); the stores go to `store_dir`."""
    cfg = dataclasses.replace(cfg, store_dir=store_dir)
    device = str(next(encoder.parameters()).device)
    return {t.name: probe_encoder(cfg, t, task_parts(t, cfg.data.root), encoder, Dist(), device, t.name)["score"]
            for t in cfg.tasks}


def encoders(cfg: ProbeConfig) -> dict[str, list[Optional[ASTEncoder]]]:
    """The feature sources, by group (the fbank baseline is the encoder None), checked against every task's clip
    length and the layers asked for before any clip is read."""
    trained = [load_encoder(p, fstride=cfg.fstride, tstride=cfg.tstride, input_tdim=cfg.input_tdim)
               for p in cfg.checkpoints]
    arch = trained[0].cfg if trained else cfg.model
    random_init = []
    for seed in cfg.random_init_seeds:
        torch.manual_seed(seed)  # the pretraining stage's initialisation for this seed
        random_init.append(SSASTModel(arch).v)
    for encoder in trained + random_init[:1]:
        for i, task in enumerate(cfg.tasks):
            if task.target_length % encoder.cfg.input_tdim:
                raise ConfigError(f"config key 'tasks[{i}].target_length' must be a multiple of the encoder input "
                                  f"({encoder.cfg.input_tdim} frames), got {task.target_length}")
        try:
            [layer_number(encoder, l) for l in cfg.embed.layers]
        except ValueError as e:
            raise ConfigError(f"config key 'embed.layers': {e}") from None
    groups = {"fbank mean+std": [None] if cfg.fbank_baseline else [], "random init": random_init, "pretrained": trained}
    return {name: group for name, group in groups.items() if group}


def linear(cfg: ProbeConfig) -> dict:
    if not cfg.tasks:
        raise ConfigError("the recipe lists no tasks")
    device = str(resolve_device(cfg.device))
    dist = init_distributed(torch.device(device))
    groups = encoders(cfg)
    for name, group in groups.items():
        if group[0] is not None:
            m = group[0].cfg
            print(f"{name}: {len(group)} encoder(s), {m.size} {m.depth} layers, {m.fshape}x{m.tshape} patches, "
                  f"{sum(p.numel() for p in group[0].parameters()) / 1e6:.2f}M parameters, on {device}; features "
                  f"{', '.join(feature_names(group[0], cfg.embed))}", file=sys.stderr)
    print(f"tasks: {', '.join(f'{t.name} ({t.dataset.kind} {t.dataset.path}, {t.protocol})' for t in cfg.tasks)}",
          file=sys.stderr)
    results: dict[str, dict[str, list[dict]]] = {}
    for task in cfg.tasks:
        parts = task_parts(task, cfg.data.root)
        for name, group in groups.items():
            for i, encoder in enumerate(group):
                result = probe_encoder(cfg, task, parts, encoder, dist, device, f"{task.name}: {name} {i + 1}/{len(group)}")
                results.setdefault(name, {}).setdefault(task.name, []).append(result)
    if not dist.main:
        return {}
    names = [t.name for t in cfg.tasks]
    print(table(results, names))
    print(choices(results, names))
    if any(len(r[0]["by_feature"]) > 1 for g in results.values() for r in g.values()):
        print(sweep(results, names))
    if cfg.output:
        Path(cfg.output).write_text(json.dumps(results, indent=1))
        if any(len(r[0]["by_feature"]) > 1 for g in results.values() for r in g.values()):
            plot_sweep(results, names, Path(cfg.output).with_suffix(".sweep.png"))
    return results


def _cell(values: list[float]) -> str:
    mean, std, ci = mean_std_ci([100 * v for v in values])
    return f"{mean:.1f}" + (f" +- {std:.1f} [+-{ci:.1f}] (n={len(values)})" if len(values) > 1 else "")


def table(results: dict, tasks: list[str]) -> str:
    """Markdown table of the test metric (%): mean +- sample std [95% CI half-width] over seeds / checkpoints."""
    lines = ["| features | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, by_task in results.items():
        lines.append(f"| {name} | " + " | ".join(_cell([r["score"] for r in by_task[t]]) for t in tasks) + " |")
        for key, label in (("knn", "kNN"), ("retrieval", "retrieval mAP@k")):
            if all(key in r for t in tasks for r in by_task[t]):
                lines.append(f"| {name}, {label} | " + " | ".join(_cell([r[key] for r in by_task[t]]) for t in tasks) + " |")
    return "\n".join(lines)


def choices(results: dict, tasks: list[str]) -> str:
    """The feature and C each probe chose on held-out training data (the most frequent over folds)."""
    lines = ["| chosen on held-out training data | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, by_task in results.items():
        cells = [", ".join(f"{c[0]} ({c[1]}x)" for c in Counter(r["choice"][0] for r in by_task[t]).most_common(2))
                 for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep(results: dict, tasks: list[str]) -> str:
    """Test metric (%) of every feature, each at its own chosen C: the layer x pooling sweep."""
    lines = []
    for t in tasks:
        groups = [g for g in results if len(results[g][t][0]["by_feature"]) > 1]
        features = list(results[groups[0]][t][0]["by_feature"]) if groups else []
        lines += [f"\n{t}: test metric of each feature", "| feature | " + " | ".join(groups) + " |",
                  "|---" * (len(groups) + 1) + "|"]
        lines += [f"| {f} | " + " | ".join(_cell([r["by_feature"][f] for r in results[g][t]]) for g in groups) + " |"
                  for f in features]
    return "\n".join(lines)


def plot_sweep(results: dict, tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.5), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        for g in (g for g in results if len(results[g][t][0]["by_feature"]) > 1):
            features = list(results[g][t][0]["by_feature"])
            for pooling in dict.fromkeys(f.split("_", 1)[1] for f in features):
                names = [f for f in features if f.endswith("_" + pooling) and f[1:].split("_")[0].isdigit()]
                layers = [int(f[1:].split("_")[0]) for f in names]
                ax.plot(layers, [100 * np.mean([r["by_feature"][f] for r in results[g][t]]) for f in names],
                        marker="o", label=f"{g}, {pooling}")
        ax.set(title=t, xlabel="layer", ylabel="test metric (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
