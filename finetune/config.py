"""The fine-tuning stage's configuration schema."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from ssast.config import Positive, invalid
from ssast.data.sampling import DataConfig
from ssast.data.sources import FolderSource, SourceConfig
from ssast.engine import TrainConfig
from ssast.features import FeatureConfig, check_target_length
from ssast.finetuning import FinetuneConfig
from ssast.models import ModelConfig
from ssast.optim import OptimConfig
from ssast.runs import RunConfig

# Fine-tuning counts in epochs: these TrainConfig keys are derived from `epochs` and the data set size.
_EPOCH_DERIVED = ("max_steps", "eval_every", "checkpoint_every")


@dataclass
class FinetuneRunConfig(RunConfig):
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
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if not self.init:
            raise invalid("init", self.init, "a checkpoint, a Hugging Face AST directory or scratch")
        check_target_length(self.features, self.model.input_tdim)
        default = TrainConfig()
        for key in _EPOCH_DERIVED:
            if getattr(self.train, key) != getattr(default, key):
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
        return dataclasses.replace(
            self.train, max_steps=self.epochs * per_epoch, eval_every=per_epoch, checkpoint_every=per_epoch
        )
