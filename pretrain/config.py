"""The pretraining stage's configuration schema."""

from __future__ import annotations

from dataclasses import dataclass, field

from ssast.data.pipeline import DataConfig
from ssast.engine import OptimConfig, TrainConfig
from ssast.features import FeatureConfig
from ssast.models import ModelConfig
from ssast.pretraining import SSLConfig


@dataclass
class PretrainConfig:
    run_dir: str = ""  # default: runs/pretrain-<date>-<time>
    resume: str = "none"  # none | auto (latest checkpoint of run_dir) | path of a checkpoint
    overwrite: bool = False  # replace a run already in run_dir (without it, such a run_dir is refused)
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
