"""Fine-tune an AST encoder on labelled clips (AudioSet tagging, ESC-50, Speech Commands).

    python -m finetune --config configs/finetune/<recipe>.yaml init=<checkpoint|HF directory|scratch> \
        data.root=<data folder> run_dir=<dir> [key=value ...]

Runs on the training engine (DDP, AMP, exact resume with resume=auto) with a validation and a checkpoint per
epoch, and writes <run_dir>/results.json. protocol=split: the epoch with the best validation metric (best.pt)
is scored on the test set, with the last epoch, the weight average and the ensemble when the recipe asks for
them, and per_class_ap.csv. protocol=folds (ESC-50): one run per fold in <run_dir>/fold<k>, the epoch chosen
on the fold-averaged validation accuracy, and each fold's accuracy at that epoch. Example:
    python -m finetune --config configs/finetune/demo_esc50.yaml init=runs/demo/seed0/checkpoints/last.pt
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch

from finetune.config import FinetuneRunConfig
from ssast.cli import run_cli
from ssast.config import cli_config, invalid, to_dict
from ssast.data.index import Dataset, read_dataset
from ssast.data.loader import AudioLoader
from ssast.data.sampling import Mixture, train_valid
from ssast.distributed import init_distributed, resolve_device
from ssast.engine import Trainer
from ssast.files import atomic_write_text
from ssast.finetuning import ClassifyTask, clip_metrics
from ssast.metrics import per_class_ap
from ssast.models import ASTClassifier, CheckpointError, load_model
from ssast.models.checkpoint import read
from ssast.runlog import read_metrics
from ssast.runs import claim_output, default_run_dir

PROG = "python -m finetune"
log = logging.getLogger("ssast")


def build_model(cfg: FinetuneRunConfig, classes: list[str]) -> ASTClassifier:
    """The classifier to fine-tune: `init`'s encoder at the recipe's stride and input length (positional
    embedding adapted), its head when it has the data set's classes, else a fresh one."""
    m, pooling = cfg.model, cfg.finetune.pooling
    torch.manual_seed(cfg.train.seed)
    if cfg.init == "scratch":
        model = ASTClassifier(dataclasses.replace(m, decoder_depth=0), len(classes), pooling)
    else:
        # released fine-tuned checkpoints do not store their geometry: the recipe's
        source = load_model(
            cfg.init, fstride=m.fstride, tstride=m.tstride, input_tdim=m.input_tdim, fused_attn=m.fused_attn
        ).model
        head = isinstance(source, ASTClassifier) and not cfg.new_head
        if head and source.mlp_head[1].out_features != len(classes):
            raise CheckpointError(
                f"init {cfg.init} is a classifier of {source.mlp_head[1].out_features} classes, the "
                f"data have {len(classes)}: pass new_head=true to start from a fresh head"
            )
        model = ASTClassifier.from_pretrained(source, len(classes), m.fstride, m.tstride, m.input_tdim, pooling)
        if head:
            model.mlp_head.load_state_dict(source.mlp_head.state_dict())
    model.classes = list(classes)
    return model


def train(cfg: FinetuneRunConfig, train_set: Dataset | Mixture, valid_set: Dataset | None, run_dir: Path):
    """One fine-tuning run; returns its task (model, averages) and trainer after the last epoch."""
    d = init_distributed(resolve_device(cfg.train.device))
    train_cfg = cfg.steps(len(train_set), d.world)
    model = build_model(cfg, train_set.classes)  # a bad init fails before the run folder is written
    trainer = Trainer(train_cfg, cfg.optim, run_dir, to_dict(cfg), cfg.resume, cfg.overwrite)
    m, (f, t) = model.cfg, model.v.grid
    log.info(
        "train: %d clips, %d classes%s; %d epochs of %d steps",
        len(train_set),
        len(train_set.classes),
        f"; valid: {len(valid_set.examples)} clips" if valid_set else "",
        cfg.epochs,
        train_cfg.eval_every,
    )
    log.info(
        "model: AST %s, %d layers, %dx%d patches, stride %dx%d, %dx%d grid, %.2fM parameters, from %s",
        m.size,
        m.depth,
        m.fshape,
        m.tshape,
        m.fstride,
        m.tstride,
        f,
        t,
        sum(p.numel() for p in model.parameters()) / 1e6,
        cfg.init,
    )
    loader = AudioLoader(train_set, cfg.features, cfg.data, train=True, seed=cfg.train.seed, rank=d.rank, world=d.world)
    valid = valid_set and AudioLoader(valid_set, cfg.features, cfg.data, train=False, rank=d.rank, world=d.world)
    task = ClassifyTask(model, cfg.finetune, train_cfg.eval_every, valid, trainer.device, d)
    trainer.fit(task, loader)
    return task, trainer


def run_split(cfg: FinetuneRunConfig, run_dir: Path) -> dict:
    """The split protocol: train, choose the epoch on validation (best.pt), score it (and the averages) on test."""
    train_set, valid_set = train_valid(cfg.data, cfg.data.root)
    test_set = read_dataset(cfg.test, cfg.data.root) if cfg.test.named() else None
    task, trainer = train(cfg, train_set, valid_set, run_dir)
    curve = read_metrics(run_dir, "valid") if trainer.dist.main else []
    chosen = trainer.ckpt_dir / ("best.pt" if valid_set else "last.pt")
    task.model.load_state_dict(read(chosen)["model"])
    results: dict = {"protocol": "split", "checkpoint": str(chosen), "valid_curve": curve}
    if curve:
        best = max(range(len(curve)), key=lambda i: curve[i][cfg.finetune.monitor])
        results.update(epoch=best + 1, valid=curve[best], last_valid=curve[-1])
        if cfg.finetune.ensemble:
            results["ensemble_valid"] = {
                k.removeprefix("ensemble_"): v for k, v in curve[-1].items() if k.startswith("ensemble_")
            }
    scored = test_set or valid_set
    if scored is not None:
        loader = AudioLoader(
            scored, cfg.features, cfg.data, train=False, rank=trainer.dist.rank, world=trainer.dist.world
        )
        targets, scores, _ = task.predict(task.model, loader)
        if test_set:
            results["test"] = clip_metrics(targets, scores)
        averaged = task.averaged_model()
        if averaged is not None:
            results["weight_average"] = {
                "epochs": cfg.finetune.weight_average,
                **clip_metrics(*task.predict(averaged, task.valid)[:2]),
            }
            if test_set:
                results["weight_average_test"] = clip_metrics(*task.predict(averaged, loader)[:2])
        if trainer.dist.main:
            write_per_class_ap(run_dir / "per_class_ap.csv", task.model.classes, targets, scores)
    return results if trainer.dist.main else {}


def write_per_class_ap(path: Path, classes: list[str], targets: np.ndarray, scores: np.ndarray) -> None:
    """index, name, positives, AP of each class (empty AP: no positive clip)."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["index", "name", "positives", "ap"])
        for i, (name, ap) in enumerate(zip(classes, per_class_ap(targets, scores), strict=True)):
            out.writerow([i, name, int((targets[:, i] > 0.5).sum()), "" if np.isnan(ap) else f"{ap:.6f}"])


def run_folds(cfg: FinetuneRunConfig, run_dir: Path) -> dict:
    """ESC-50 cross-validation: each fold of `cfg.folds` validated on itself and trained on every other fold."""
    every = cfg.data.train.folds(cfg.data.root)
    if unknown := sorted(set(cfg.folds) - set(every)):
        raise invalid("folds", unknown, f"folds of the data set ({every})")

    def split(folds):
        return cfg.data.train.with_split(",".join(map(str, folds)))

    parts = [
        (k, read_dataset(split([f for f in every if f != k]), cfg.data.root), read_dataset(split([k]), cfg.data.root))
        for k in cfg.folds
    ]  # every fold's data is checked before the first one trains
    curves = []
    for k, train_set, valid_set in parts:
        log.info("fold %d of %s", k, cfg.folds)
        _, trainer = train(cfg, train_set, valid_set, run_dir / f"fold{k}")
        curves.append([e["accuracy"] for e in read_metrics(trainer.run_dir, "valid")] if trainer.dist.main else [])
    if not curves[0]:
        return {}
    mean = np.mean(curves, 0)
    best = int(mean.argmax())
    fold_accuracy = [c[best] for c in curves]
    return {
        "protocol": "folds",
        "folds": cfg.folds,
        "epoch": best + 1,
        "fold_accuracy": fold_accuracy,
        "mean_accuracy": float(np.mean(fold_accuracy)),
        "mean_curve": mean.tolist(),
    }


def run(cfg: FinetuneRunConfig) -> dict:
    """Fine-tune by the recipe's protocol and write <run_dir>/results.json."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir("finetune")
    claim_output(
        run_dir,
        ["results.json"],
        "fine-tuning results",
        "run_dir",
        resume=cfg.resume != "none",
        overwrite=cfg.overwrite,
        retry="continue the run with resume=auto",
    )
    results = (run_folds if cfg.protocol == "folds" else run_split)(cfg, run_dir)
    if results:  # the main process
        atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1))
        log.info("results (%s): %s", run_dir / "results.json", summary(results))
    return results


def summary(results: dict) -> str:
    """One line of the results for the log."""
    if results["protocol"] == "folds":
        return (
            f"epoch {results['epoch']}, accuracy {100 * results['mean_accuracy']:.2f} (folds "
            f"{' '.join(f'{100 * a:.1f}' for a in results['fold_accuracy'])})"
        )
    parts = [
        f"{name}: " + " ".join(f"{k} {v:.4f}" for k, v in results[name].items() if isinstance(v, float))
        for name in ("valid", "test", "weight_average", "ensemble_valid")
        if name in results
    ]
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> dict:
    """The command line: a recipe, overrides, one line on a user error."""
    cfg = cli_config(FinetuneRunConfig, argv, prog=PROG, doc=__doc__, recipes="finetune")
    return run_cli(PROG, lambda: run(cfg))


if __name__ == "__main__":
    main()
