"""Probe recipes and their protocols: the data sets of each task, how they split into fit, held-out and test parts,
and the fair linear probe (and kNN, retrieval) of encoders, random initialisations and fbank statistics on them.
`python -m probes linear` and pretraining's periodic probe both run through `run_probes` / `probe_tasks`."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

import numpy as np
import torch

from ssast.config import ConfigError, NonNegative, Positive, PositiveFloat, Range, invalid
from ssast.data.index import Dataset, read_dataset
from ssast.data.sampling import DataConfig
from ssast.data.sources import FolderSource, SourceConfig
from ssast.distributed import Dist, set_up
from ssast.eval import retrieval
from ssast.eval.embeddings import EmbedConfig, EmbedFeatureConfig, Store, extract, feature_names, layer_number
from ssast.eval.linear_probe import Solver, fair_probe, task_metric
from ssast.eval.retrieval import knn_classify
from ssast.features import FeatureConfig
from ssast.models import ASTEncoder, ModelConfig, SSASTModel
from ssast.models.loading import encoder_and_front_end

log = logging.getLogger("ssast")


@dataclass
class ProbeTaskConfig:
    """One probe task: its data set, protocol, held-out data and clip length."""

    name: str = ""
    dataset: SourceConfig = field(default_factory=FolderSource)
    # split: train on one split, test on another; folds: ESC-50 cross-validation (each fold tested once)
    protocol: Literal["split", "folds"] = "split"
    train_split: str = "training"
    test_split: str = "testing"
    test: SourceConfig = field(default_factory=FolderSource)  # split: a test set in its own manifest (AudioSet)
    # split: the held-out training data that chooses the feature and C: a split of `dataset` (Speech Commands'
    # validation list), else `valid_fraction` of the training clips; folds: each training fold in turn.
    valid_split: str = ""
    valid_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.2
    folds: list[Positive] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    target_length: Positive = 128  # frames; a multiple of the encoder's input length

    def __post_init__(self):
        if self.protocol == "folds" and len(set(self.folds)) < 3:
            raise invalid("folds", self.folds, "three or more distinct folds (one tested, one held out, one fitted)")


@dataclass
class KnnConfig:
    """kNN classification on the probe's chosen feature."""

    k: NonNegative = 0  # neighbours voting; 0: no kNN rows
    metric: Literal["cosine", "l2"] = "cosine"


@dataclass
class ProbeConfig:
    """A probe recipe: what is probed (checkpoints, random inits, fbank), the features and C grid, the tasks."""

    checkpoints: list[str] = field(default_factory=list)  # pretraining or fine-tuned checkpoints to probe
    # Released fine-tuned checkpoints do not store their patch stride and input length: give them here. An
    # input_tdim also resizes pretraining encoders (`ssast.models.resized`): the probe's window, in frames.
    fstride: Optional[Positive] = None
    tstride: Optional[Positive] = None
    input_tdim: Optional[Positive] = None
    random_init_seeds: list[int] = field(default_factory=list)  # the same encoder at random initialisation
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture when no checkpoint is given
    fbank_baseline: bool = True  # also probe the fbank's mean and std over time (no learning)
    # Features to choose from (every layer x pooling, see ssast.eval.embeddings) and inverse L2 strengths: each
    # chosen on held-out training data, per encoder and test part.
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    cs: list[PositiveFloat] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])
    solver: Solver = "auto"  # auto: torch L-BFGS on a GPU, scikit-learn on CPU
    tol: PositiveFloat = 1e-4  # both solvers stop at this largest gradient entry
    knn: KnnConfig = field(default_factory=KnnConfig)
    retrieval_k: NonNegative = 0  # > 0: also query-by-example mAP@k over each task's clips (exact cosine search)
    device: str = "auto"  # where the encoders run: auto | cpu | cuda | cuda:N
    # Embedding stores, reused when the same inputs come again; empty: beside `output` (<its folder>/embeddings), or
    # runs/embeddings without one.
    store_dir: str = ""
    # The front end: each encoder's own normalisation unless set here (see EmbedFeatureConfig); the clip length is
    # each task's `target_length`.
    features: EmbedFeatureConfig = field(default_factory=EmbedFeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tasks: list[ProbeTaskConfig] = field(default_factory=list)
    output: str = ""  # optional path of a JSON file with every number (and <output>.sweep.png for a sweep)
    overwrite: bool = False  # replace an `output` file already there

    def __post_init__(self):
        if not self.cs:
            raise invalid("cs", self.cs, "one or more inverse L2 strengths")
        if not self.store_dir:
            self.store_dir = str(Path(self.output).parent / "embeddings") if self.output else "runs/embeddings"


def task_parts(task: ProbeTaskConfig, root: str) -> dict[str, Dataset]:
    """The data sets of a task: {"1", ..., "5"} for folds; {"train", "test"(, "valid")} for a split."""

    def read(split):
        return read_dataset(task.dataset.with_split(split), root)

    if task.protocol == "folds":
        return {str(f): read(str(f)) for f in task.folds}
    parts = {
        "train": read(task.train_split),
        "test": read_dataset(task.test, root) if task.test.path else read(task.test_split),
    }
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
    results = [
        fair_probe(x, y, train, test, inner, cfg.cs, multi, solver, device, cfg.tol)
        for train, test, inner in evaluations(task, stores)
    ]
    out = {
        "score": float(np.mean([r.score for r in results])),
        "held_out": float(np.mean([r.held_out for r in results])),
        "choice": list(Counter(f"{r.feature} C={r.c:g}" for r in results).most_common(1)[0]),
        "by_feature": {n: float(np.mean([r.by_feature[n] for r in results])) for n in x},
    }
    if cfg.retrieval_k:  # query by example over all the task's clips, with the feature the probes chose most
        out["retrieval"] = retrieval.evaluate(x[out["choice"][0].split()[0]], y, cfg.retrieval_k)["map_at_k"]
        out["retrieval_k"] = cfg.retrieval_k
    if cfg.knn.k and not multi:
        knn = [
            task_metric(
                y[test],
                knn_classify(
                    x[r.feature][train], y[train], x[r.feature][test], cfg.knn.k, cfg.knn.metric, int(y.max()) + 1
                ),
                False,
            )
            for r, (train, test, _) in zip(results, evaluations(task, stores), strict=True)
        ]
        out["knn"] = float(np.mean(knn))
    return out


def probe_encoder(
    cfg: ProbeConfig,
    task: ProbeTaskConfig,
    parts: dict[str, Dataset],
    encoder: Optional[ASTEncoder],
    front_end: FeatureConfig,
    dist: Dist,
    device: str,
    desc: str = "",
) -> dict:
    """The stores of every part of a task through `encoder` and its `front_end` (sharded over the processes), then,
    on the main process, `probe_source` of them."""
    features = dataclasses.replace(front_end, target_length=task.target_length)
    stores = {
        p: extract(encoder, d, features, cfg.data, cfg.embed, cfg.store_dir, dist, device, desc=f"{desc}, {p}")
        for p, d in parts.items()
    }
    return probe_source(cfg, task, stores, device) if dist.main else {}


def probe_tasks(
    cfg: ProbeConfig, encoder: Optional[ASTEncoder], store_dir: str, trained: Optional[FeatureConfig] = None
) -> dict[str, float]:
    """A fair probe of one encoder (None: the fbank statistics) trained with the front end `trained` on every task of
    the recipe, in this process (the pretraining stage's periodic probe): {task: test metric, "<task>_held_out":
    the held-out metric that chose the feature and C, "<task>_map": query-by-example mAP@retrieval_k (when the
    recipe asks)}; the stores go to `store_dir`."""
    cfg = dataclasses.replace(cfg, store_dir=store_dir)
    device = str(next(encoder.parameters()).device) if encoder is not None else "cpu"
    front_end = cfg.features.resolved(trained, "the encoder" if encoder is not None else "the fbank statistics")
    out = {}
    for t in cfg.tasks:
        result = probe_encoder(cfg, t, task_parts(t, cfg.data.root), encoder, front_end, Dist(), device, t.name)
        out[t.name], out[f"{t.name}_held_out"] = result["score"], result["held_out"]
        if "retrieval" in result:
            out[f"{t.name}_map"] = result["retrieval"]
    return out


def check_tasks(cfg: ProbeConfig, input_tdim: int) -> None:
    """Refuse a task whose clips are not a whole number of the encoder's input windows."""
    for i, task in enumerate(cfg.tasks):
        if task.target_length % input_tdim:
            raise ConfigError(
                f"config key 'tasks[{i}].target_length' must be a multiple of the encoder input "
                f"({input_tdim} frames), got {task.target_length}"
            )


def encoders(cfg: ProbeConfig) -> dict[str, list[tuple[Optional[ASTEncoder], FeatureConfig]]]:
    """The feature sources with their front ends, by group (the fbank baseline is the encoder None), checked against
    every task's clip length and the layers asked for before any clip is read. A checkpoint is embedded with its own
    normalisation; random initialisations and the fbank statistics with the first checkpoint's, the input the
    pretrained encoders they are compared with see."""
    loaded = [
        encoder_and_front_end(p, fstride=cfg.fstride, tstride=cfg.tstride, input_tdim=cfg.input_tdim)
        for p in cfg.checkpoints
    ]
    trained = [encoder for encoder, _ in loaded]
    first = loaded[0][1] if loaded else None
    arch = trained[0].cfg if trained else cfg.model
    random_init = []
    for seed in cfg.random_init_seeds:
        torch.manual_seed(seed)  # the pretraining stage's initialisation for this seed
        random_init.append(SSASTModel(arch).v)
    for encoder in trained + random_init[:1]:
        check_tasks(cfg, encoder.cfg.input_tdim)
        try:
            [layer_number(encoder, layer) for layer in cfg.embed.layers]
        except ValueError as e:
            raise ConfigError(f"config key 'embed.layers': {e}") from None
    groups = {
        "fbank mean+std": [(None, cfg.features.resolved(first, "the fbank statistics"))] if cfg.fbank_baseline else [],
        "random init": [(e, cfg.features.resolved(first, "random init")) for e in random_init],
        "pretrained": [(e, cfg.features.resolved(f, p)) for (e, f), p in zip(loaded, cfg.checkpoints, strict=True)],
    }
    return {name: group for name, group in groups.items() if group}


def run_probes(cfg: ProbeConfig) -> dict[str, dict[str, list[dict]]]:
    """{group: {task: [result of each encoder]}} of every feature source on every task (`probe_source`'s results),
    on the main process ({} elsewhere): the processes of a launch share the extraction."""
    if not cfg.tasks:
        raise ConfigError("the recipe lists no tasks")
    world = set_up(cfg.device)
    device, dist = str(world.device), world.dist
    groups = encoders(cfg)
    for name, group in groups.items():
        encoder = group[0][0]
        if encoder is not None:
            m = encoder.cfg
            log.info(
                "%s: %d encoder(s), %s %d layers, %dx%d patches, %.2fM parameters, on %s; features %s",
                name,
                len(group),
                m.size,
                m.depth,
                m.fshape,
                m.tshape,
                sum(p.numel() for p in encoder.parameters()) / 1e6,
                device,
                ", ".join(feature_names(encoder, cfg.embed)),
            )
    log.info("tasks: %s", ", ".join(f"{t.name} ({t.dataset.kind} {t.dataset.path}, {t.protocol})" for t in cfg.tasks))
    results: dict[str, dict[str, list[dict]]] = {}
    for task in cfg.tasks:
        parts = task_parts(task, cfg.data.root)
        for name, group in groups.items():
            for i, (encoder, front_end) in enumerate(group):
                desc = f"{task.name}: {name} {i + 1}/{len(group)}"
                result = probe_encoder(cfg, task, parts, encoder, front_end, dist, device, desc)
                results.setdefault(name, {}).setdefault(task.name, []).append(result)
    return results if dist.main else {}
