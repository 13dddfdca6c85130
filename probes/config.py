"""The probe stage's configuration schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ssast.config import Positive, PositiveFloat, invalid
from ssast.data.pipeline import DataConfig
from ssast.data.readers import DatasetConfig
from ssast.features import FeatureConfig
from ssast.models import ModelConfig


@dataclass
class ProbeTaskConfig:
    name: str = ""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    protocol: Literal["split", "folds"] = "split"  # split: train on one split, test on another; folds: ESC-50 CV
    train_split: str = "training"
    test_split: str = "testing"
    folds: list[Positive] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    target_length: Positive = 128  # frames; a multiple of the encoder's input length

    def __post_init__(self):
        if self.protocol == "folds" and len(set(self.folds)) < 2:
            raise invalid("folds", self.folds, "two or more distinct folds")


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
    c: PositiveFloat = 1.0  # inverse L2 strength of the logistic regression
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tasks: list[ProbeTaskConfig] = field(default_factory=list)
    output: str = ""  # optional path of a JSON file with every number
