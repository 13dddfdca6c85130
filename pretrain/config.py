"""The pretraining stage's configuration schema."""

from __future__ import annotations

from dataclasses import dataclass, field

from ssast.config import invalid
from ssast.data.sampling import DataConfig
from ssast.engine import TrainConfig
from ssast.features import FeatureConfig, check_target_length
from ssast.models import ModelConfig, grid_size
from ssast.models.ast import SSLConfig
from ssast.optim import OptimConfig
from ssast.pretraining import ProbeHookConfig
from ssast.runs import RunConfig


@dataclass
class PretrainConfig(RunConfig):
    """The run section (`init`: a pretraining checkpoint of the recipe's architecture, released or this project's),
    then the recipe."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeHookConfig = field(default_factory=ProbeHookConfig)  # linear probes while pretraining

    def __post_init__(self):
        m = self.model
        if (m.fstride, m.tstride) != (m.fshape, m.tshape):
            raise invalid(
                "model.fstride",
                [m.fstride, m.tstride],
                f"equal to the patch shape [{m.fshape}, {m.tshape}] (pretraining uses non-overlapping patches)",
            )
        check_target_length(self.features, m.input_tdim)
        if self.features.num_mel_bins != m.input_fdim:
            raise invalid(
                "features.num_mel_bins", self.features.num_mel_bins, f"equal to model.input_fdim ({m.input_fdim})"
            )
        if self.probe.every and not self.probe.recipe:
            raise invalid("probe.recipe", "", "a probe recipe when probe.every > 0")
        f, t = grid_size(m)
        # cluster masks never take patch 0 and need one spare; inverse block masks leave a patch visible
        most = f * t - 2 if self.ssl.cluster else f * t - 1 if self.ssl.inverse_block else f * t
        for key in ("mask_size", "valid_mask_size"):
            if getattr(self.ssl, key) > most:
                raise invalid(f"ssl.{key}", getattr(self.ssl, key), f"<= {most} for a {f}x{t} patch grid")
