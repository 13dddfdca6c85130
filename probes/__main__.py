"""Frozen-encoder evaluation.

    python -m probes linear --config configs/probes/<recipe>.yaml [checkpoints=[a.pt,b.pt]] [key=value ...]

Linear probe of each checkpoint, of the same encoder at random initialisation, and of the fbank-statistics
baseline on every task of the recipe; prints a table of mean +- std over seeds / checkpoints. Example:
    python -m probes linear --config configs/probes/demo.yaml checkpoints=[runs/demo/seed0/checkpoints/last.pt]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from probes.config import ProbeConfig, ProbeTaskConfig
from ssast.cli import run_cli
from ssast.config import ConfigError, cli_config, usage
from ssast.data.readers import read_dataset
from ssast.models import ASTEncoder, SSASTModel, load_encoder
from ssast.probing import Features, embed, fbank_statistics, fold_accuracy, linear_probe, read_features

PROG = "python -m probes"


def task_features(cfg: ProbeConfig, task: ProbeTaskConfig) -> dict[str, Features]:
    """The fbank of each part of a task: {"train", "test"} for splits, {"1", ..., "5"} for folds."""
    features = dataclasses.replace(cfg.features, target_length=task.target_length)
    parts = ([str(f) for f in task.folds] if task.protocol == "folds" else [task.train_split, task.test_split])
    return {p: read_features(read_dataset(dataclasses.replace(task.dataset, split=p), cfg.data.root), features,
                             cfg.data, desc=f"{task.name}: reading {p}") for p in parts}


def score(task: ProbeTaskConfig, parts: dict[str, Features], represent, c: float) -> float:
    xs = {p: represent(f.fbank) for p, f in parts.items()}
    if task.protocol == "folds":
        x = np.concatenate(list(xs.values()))
        y = np.concatenate([f.labels for f in parts.values()])
        folds = np.concatenate([np.full(len(f.labels), int(p)) for p, f in parts.items()])
        return fold_accuracy(x, y, folds, c)
    train, test = task.train_split, task.test_split
    return linear_probe(xs[train], parts[train].labels, xs[test], parts[test].labels, c)


def encoders(cfg: ProbeConfig) -> dict[str, list[ASTEncoder]]:
    """The encoders to probe, checked against every task's clip length before any clip is read."""
    trained = [load_encoder(p, fstride=cfg.fstride, tstride=cfg.tstride, input_tdim=cfg.input_tdim)
               for p in cfg.checkpoints]
    arch = trained[0].cfg if trained else cfg.model
    random_init = []
    for seed in cfg.random_init_seeds:
        torch.manual_seed(seed)  # the pretraining stage's initialisation for this seed
        random_init.append(SSASTModel(arch).v)
    for i, task in enumerate(cfg.tasks):
        for encoder in trained + random_init[:1]:
            if task.target_length % encoder.cfg.input_tdim:
                raise ConfigError(f"config key 'tasks[{i}].target_length' must be a multiple of the encoder input "
                                  f"({encoder.cfg.input_tdim} frames), got {task.target_length}")
    return {name: group for name, group in (("random init", random_init), ("pretrained", trained)) if group}


def linear(cfg: ProbeConfig) -> dict:
    if not cfg.tasks:
        raise ConfigError("the recipe lists no tasks")
    groups = encoders(cfg)
    for name, group in groups.items():
        m = group[0].cfg
        print(f"{name}: {len(group)} encoder(s), {m.size} {m.depth} layers, {m.fshape}x{m.tshape} patches, "
              f"{sum(p.numel() for p in group[0].parameters()) / 1e6:.2f}M parameters, on cpu", file=sys.stderr)
    print(f"tasks: {', '.join(f'{t.name} ({t.dataset.kind} {t.dataset.path}, {t.protocol})' for t in cfg.tasks)}",
          file=sys.stderr)
    results: dict[str, dict[str, list[float]]] = {}
    for task in cfg.tasks:
        parts = task_features(cfg, task)
        if cfg.fbank_baseline:
            results.setdefault("fbank mean+std", {})[task.name] = [score(task, parts, fbank_statistics, cfg.c)]
        for name, group in groups.items():
            results.setdefault(name, {})[task.name] = [
                score(task, parts, lambda x, e=e, i=i: embed(e, x, desc=f"{task.name}: {name} {i + 1}/{len(group)}"),
                      cfg.c) for i, e in enumerate(group)]
    print(table(results, [t.name for t in cfg.tasks]))
    if cfg.output:
        Path(cfg.output).write_text(json.dumps(results, indent=1))
    return results


def table(results: dict[str, dict[str, list[float]]], tasks: list[str]) -> str:
    """Markdown table of accuracy (%) mean +- std over seeds or checkpoints."""
    lines = ["| features | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for name, by_task in results.items():
        cells = []
        for t in tasks:
            v = 100 * np.array(by_task[t])
            cells.append(f"{v.mean():.1f}" + (f" +- {v.std():.1f} (n={len(v)})" if len(v) > 1 else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "linear":  # the only evaluation so far
        wants_help = args[:1] in (["-h"], ["--help"])
        print(usage(f"{PROG} linear", __doc__, "probes"), file=sys.stdout if wants_help else sys.stderr)
        raise SystemExit(0 if wants_help else 2)
    cfg = cli_config(ProbeConfig, args[1:], prog=f"{PROG} linear", doc=__doc__, recipes="probes")
    return run_cli(PROG, lambda: linear(cfg))


if __name__ == "__main__":
    main()
