"""Supervised fine-tuning as a stage: the recipe's schema and its two protocols. split: train, choose the epoch on
validation (best.pt), score it, the last epoch, the weight average and the ensemble on test. folds (ESC-50): one run
per fold in <run_dir>/fold<k>, the epoch chosen on the fold-averaged validation accuracy. `finetune` writes
<run_dir>/results.json."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from ssast.cli import Stopped
from ssast.config import Positive, invalid, to_dict
from ssast.data.index import Dataset, read_dataset
from ssast.data.sampling import DataConfig, Mixture, train_valid
from ssast.data.sources import FolderSource, SourceConfig
from ssast.distributed import World, set_up
from ssast.eval.metrics import per_class_ap
from ssast.features import FeatureConfig, check_target_length
from ssast.files import atomic_write_text
from ssast.models import ASTClassifier, CheckpointError, ModelConfig, describe, load_model
from ssast.models.formats import read
from ssast.train.classification import ClassifyUnit, ClassifyValidator, FinetuneConfig, clip_metrics, predict
from ssast.train.engine import TrainConfig, Trainer
from ssast.train.logs import read_metrics
from ssast.train.optim import OptimConfig
from ssast.train.run_folder import StageConfig, claim_output, default_run_dir, hold_folder, open_run_dir

log = logging.getLogger("ssast")


@dataclass
class EpochTrainConfig(TrainConfig):
    """The engine's settings of a fine-tuning run, which counts in epochs: its steps, validations and checkpoints
    follow from `epochs` and the data set size, so they are not for the recipe to set."""

    max_steps: Optional[int] = None
    eval_every: Optional[int] = None
    checkpoint_every: Optional[int] = None


EPOCH_DERIVED = ("max_steps", "eval_every", "checkpoint_every")


@dataclass
class FinetuneRunConfig(StageConfig):
    """The run section (`init` is required: this project's pretraining or fine-tuning checkpoint, a released
    SSAST/AST checkpoint, a Hugging Face ASTForAudioClassification directory, or `scratch`: the `model` section;
    `resume` with a checkpoint's path: split protocol only), then the recipe."""

    new_head: bool = False  # start a fine-tuned checkpoint with another number of classes from a fresh head
    # split: train on data.train, select the epoch on data.valid, score it on `test`; folds: ESC-50 cross-
    # validation over `folds` (data.train is the ESC-50 folder), the epoch selected on the fold-averaged curve.
    protocol: Literal["split", "folds"] = "split"
    folds: list[Positive] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    epochs: Positive = 10
    test: SourceConfig = field(default_factory=FolderSource)  # split: empty path = no test set
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    # scratch: the architecture; otherwise only the fine-tuning geometry (fstride, tstride) is taken from here,
    # the rest from the checkpoint. input_tdim must equal features.target_length.
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(schedule="multistep", warmup_steps=0))
    train: EpochTrainConfig = field(default_factory=EpochTrainConfig)

    def __post_init__(self):
        if not self.init:
            raise invalid("init", self.init, "a checkpoint, a Hugging Face AST directory or scratch")
        check_target_length(self.features, self.model.input_tdim)
        for key in EPOCH_DERIVED:
            if getattr(self.train, key) is not None:
                raise invalid(
                    f"train.{key}",
                    getattr(self.train, key),
                    "left unset: fine-tuning counts in epochs "
                    "(set epochs; steps per epoch follow from the data and batch size)",
                )
        if self.protocol == "folds":
            if self.data.train.kind != "esc50":
                raise invalid("data.train.kind", self.data.train.kind, "esc50 for the folds protocol")
            if not self.folds:
                raise invalid("folds", self.folds, "one or more ESC-50 folds")
        if self.finetune.freeze_epochs and self.optim.schedule == "reference":
            raise invalid("optim.schedule", "reference", "multistep, cosine or constant with finetune.freeze_epochs")

    def steps(self, train_clips: int, world: int) -> TrainConfig:
        """The engine's settings for `epochs` over `train_clips` clips: validation and a checkpoint per epoch."""
        per_epoch = -(-train_clips // (self.data.batch_size * world))
        kept = {f.name: getattr(self.train, f.name) for f in dataclasses.fields(TrainConfig)}
        derived = {"max_steps": self.epochs * per_epoch, "eval_every": per_epoch, "checkpoint_every": per_epoch}
        return TrainConfig(**{**kept, **derived})


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


def train(
    cfg: FinetuneRunConfig, world: World, train_set: Dataset | Mixture, valid_set: Optional[Dataset], run_dir: Path
) -> tuple[ASTClassifier, Optional[ClassifyValidator]]:
    """One fine-tuning run in `run_dir`; its model and validator (the averages) after the last epoch."""
    model = build_model(cfg, train_set.classes)  # a bad init fails before the run folder is written
    with open_run_dir(run_dir, cfg.resume, cfg.overwrite, to_dict(cfg), world.dist, "a fine-tuning run") as changes:
        return _fit(cfg, world, model, train_set, valid_set, run_dir, changes)


def _fit(
    cfg: FinetuneRunConfig,
    world: World,
    model: ASTClassifier,
    train_set: Dataset | Mixture,
    valid_set: Optional[Dataset],
    run_dir: Path,
    changes: dict,
) -> tuple[ASTClassifier, Optional[ClassifyValidator]]:
    """`train` in its opened run folder."""
    from ssast.data.loader import AudioLoader  # fairseq2: the rest of this module runs without it

    d, train_cfg = world.dist, cfg.steps(len(train_set), world.dist.world)
    log.info(
        "train: %d clips, %d classes%s; %d epochs of %d steps",
        len(train_set),
        len(train_set.classes),
        f"; valid: {len(valid_set.examples)} clips" if valid_set else "",
        cfg.epochs,
        train_cfg.eval_every,
    )
    log.info("model: AST %s, from %s", describe(model), cfg.init)
    on = dict(rank=d.rank, world=d.world, device=world.device)
    loader = AudioLoader(train_set, cfg.features, cfg.data, train=True, seed=cfg.train.seed, **on)
    validator = None
    if valid_set:
        valid = AudioLoader(valid_set, cfg.features, cfg.data, train=False, **on)
        validator = ClassifyValidator(cfg.finetune, valid, train_cfg.eval_every, world.device, d)
    trainer = Trainer(train_cfg, cfg.optim, world, run_dir, to_dict(cfg), cfg.resume, config_changes=changes)
    trainer.fit(ClassifyUnit(model, cfg.finetune, train_cfg.eval_every), loader, validator)
    return model, validator


def run_split(cfg: FinetuneRunConfig, world: World, run_dir: Path) -> dict:
    """The split protocol: train, choose the epoch on validation (best.pt), score it (and the averages) on test."""
    from ssast.data.loader import AudioLoader

    train_set, valid_set = train_valid(cfg.data, cfg.data.root)
    test_set = read_dataset(cfg.test, cfg.data.root) if cfg.test.named() else None
    model, validator = train(cfg, world, train_set, valid_set, run_dir)
    d, loss = world.dist, cfg.finetune.loss
    curve = read_metrics(run_dir, "valid") if d.main else []
    chosen = run_dir / "checkpoints" / ("best.pt" if valid_set else "last.pt")
    model.load_state_dict(read(chosen)["model"])
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
            scored, cfg.features, cfg.data, train=False, rank=d.rank, world=d.world, device=world.device
        )
        targets, scores, _ = predict(model, loader, loss, world.device, d)
        if test_set:
            results["test"] = clip_metrics(targets, scores)
        averaged = validator.averaged_model(model) if validator else None
        if averaged is not None:
            results["weight_average"] = {
                "epochs": cfg.finetune.weight_average,
                **clip_metrics(*predict(averaged, validator.loader, loss, world.device, d)[:2]),
            }
            if test_set:
                results["weight_average_test"] = clip_metrics(*predict(averaged, loader, loss, world.device, d)[:2])
        if d.main:
            write_per_class_ap(run_dir / "per_class_ap.csv", model.classes, targets, scores)
    return results if d.main else {}


def write_per_class_ap(path: Path, classes: list[str], targets: np.ndarray, scores: np.ndarray) -> None:
    """index, name, positives, AP of each class (empty AP: no positive clip)."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["index", "name", "positives", "ap"])
        for i, (name, ap) in enumerate(zip(classes, per_class_ap(targets, scores), strict=True)):
            out.writerow([i, name, int((targets[:, i] > 0.5).sum()), "" if np.isnan(ap) else f"{ap:.6f}"])


def run_folds(cfg: FinetuneRunConfig, world: World, run_dir: Path) -> dict:
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
        train(cfg, world, train_set, valid_set, run_dir / f"fold{k}")
        curves.append([e["accuracy"] for e in read_metrics(run_dir / f"fold{k}", "valid")] if world.dist.main else [])
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


def finetune(cfg: FinetuneRunConfig) -> dict:
    """Fine-tune by the recipe's protocol and write <run_dir>/results.json."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir("finetune")
    world = set_up(cfg.train.device, cfg.train.threads, cfg.train.collective_timeout_s)
    with hold_folder(run_dir, "a fine-tuning run", world.dist):
        claim_output(
            run_dir,
            ["results.json"],
            "fine-tuning results",
            "run_dir",
            resume=cfg.resume != "none",
            overwrite=cfg.overwrite,
            retry="continue the run with resume=auto",
        )
        try:
            results = (run_folds if cfg.protocol == "folds" else run_split)(cfg, world, run_dir)
        except Stopped:
            if world.dist.main:  # what there is so far, marked unfinished
                partial = {"protocol": cfg.protocol, "complete": False, "epochs": cfg.epochs, **progress(cfg, run_dir)}
                atomic_write_text(run_dir / "results.json", json.dumps(partial, indent=1))
                log.info("unfinished: %s says so (complete: false); resume=auto finishes it", run_dir / "results.json")
            raise
        if results:  # the main process
            results = {"complete": True, "epochs": cfg.epochs, **results}
            atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1))
            log.info("results (%s): %s", run_dir / "results.json", summary(results))
        return results


def progress(cfg: FinetuneRunConfig, run_dir: Path) -> dict:
    """The epochs done so far: of the run (split), or of each fold started (folds)."""
    if cfg.protocol == "split":
        return {"epochs_done": len(read_metrics(run_dir, "valid"))}
    started = [k for k in cfg.folds if (run_dir / f"fold{k}" / "metrics.jsonl").exists()]
    return {"epochs_done": {f"fold{k}": len(read_metrics(run_dir / f"fold{k}", "valid")) for k in started}}


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
