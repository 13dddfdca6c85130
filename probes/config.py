"""The probe stage's configuration schemas: linear probes, kNN and retrieval."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

from ssast.config import NonNegative, Positive, PositiveFloat, Range, invalid
from ssast.data.pipeline import DataConfig
from ssast.data.readers import DatasetConfig
from ssast.embeddings import EmbedConfig
from ssast.features import FeatureConfig
from ssast.models import ModelConfig
from ssast.probing import Solver
from ssast.retrieval import IndexConfig


@dataclass
class ProbeTaskConfig:
    name: str = ""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    # split: train on one split, test on another; folds: ESC-50 cross-validation (each fold tested once)
    protocol: Literal["split", "folds"] = "split"
    train_split: str = "training"
    test_split: str = "testing"
    test: DatasetConfig = field(default_factory=DatasetConfig)  # split: a test set in its own manifest (AudioSet)
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
    k: NonNegative = 0  # neighbours voting; 0: no kNN rows
    metric: Literal["cosine", "l2"] = "cosine"


@dataclass
class ProbeConfig:
    checkpoints: list[str] = field(default_factory=list)  # pretraining or fine-tuned checkpoints to probe
    # Released fine-tuned checkpoints do not store their patch stride and input length: give them here.
    fstride: Optional[Positive] = None
    tstride: Optional[Positive] = None
    input_tdim: Optional[Positive] = None
    random_init_seeds: list[int] = field(default_factory=list)  # the same encoder at random initialisation
    model: ModelConfig = field(default_factory=ModelConfig)  # architecture when no checkpoint is given
    fbank_baseline: bool = True  # also probe the fbank's mean and std over time (no learning)
    # Features to choose from (every layer x pooling, see ssast.embeddings) and inverse L2 strengths: each
    # chosen on held-out training data, per encoder and test part.
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    cs: list[PositiveFloat] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])
    solver: Solver = "auto"  # auto: torch L-BFGS on a GPU, scikit-learn on CPU
    tol: PositiveFloat = 1e-4  # both solvers stop at this largest gradient entry
    knn: KnnConfig = field(default_factory=KnnConfig)
    retrieval_k: NonNegative = 0  # > 0: also query-by-example mAP@k over each task's clips (exact cosine search)
    device: str = "auto"  # where the encoders run: auto | cpu | cuda | cuda:N
    store_dir: str = "runs/embeddings"  # embedding stores, reused when the same inputs come again
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tasks: list[ProbeTaskConfig] = field(default_factory=list)
    output: str = ""  # optional path of a JSON file with every number (and <output>.sweep.png for a sweep)

    def __post_init__(self):
        if not self.cs:
            raise invalid("cs", self.cs, "one or more inverse L2 strengths")


@dataclass
class ExtractConfig:
    """One data set through one encoder (or the fbank statistics) into an embedding store."""

    checkpoint: str = ""  # pretraining or fine-tuned checkpoint; empty: fbank mean and std over time
    fstride: Optional[Positive] = None  # released fine-tuned checkpoints: their geometry
    tstride: Optional[Positive] = None
    input_tdim: Optional[Positive] = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    device: str = "auto"
    store_dir: str = "runs/embeddings"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)


@dataclass
class RetrievalConfig(ExtractConfig):
    """An index over a store: one feature (the first of embed.layers x embed.poolings)."""

    index: IndexConfig = field(default_factory=IndexConfig)
    index_dir: str = "runs/index"  # build writes the index and its id -> clip map here; query and eval read it
    k: Positive = 10
    files: list[str] = field(default_factory=list)  # query: audio files
