"""Masked spectrogram patch modeling as a stage: the recipe's schema, the training unit, validation with fixed
masks and its images, and `pretrain`, which runs a recipe on the engine."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ssast.config import ConfigError, NonNegative, invalid, load_config, to_dict
from ssast.data.index import read_dataset
from ssast.data.sampling import DataConfig, train_valid
from ssast.distributed import set_up
from ssast.features import FeatureConfig, check_target_length
from ssast.models import CheckpointError, ModelConfig, SSASTModel, describe, grid_size, load_model, resized
from ssast.models.ast import SSLConfig
from ssast.models.spectrograms import figure_rgb, reconstruction_panels, reconstruction_plot
from ssast.train.engine import PeriodicProbe, TrainConfig, Trainer, TrainUnit, Validator
from ssast.train.optim import OptimConfig
from ssast.train.run_folder import StageConfig, default_run_dir, open_run_dir

log = logging.getLogger("ssast")


@dataclass
class ProbeHookConfig:
    """A fair linear probe of the encoder every so many pretraining steps."""

    every: NonNegative = 0  # steps between linear probes of the encoder during pretraining; 0: none
    start: bool = True  # also probe the initialisation (step 0 of a fresh run): a learning curve's first point
    recipe: str = ""  # a probe recipe (configs/probes/...): its tasks, features and C grid
    overrides: list[str] = field(default_factory=list)  # key=value overrides of that recipe, e.g. data.root=...
    # Where the probes' embedding stores go and stay, for a later `probes linear` over the same encoders to reuse;
    # empty: a folder of the run, removed after each probe.
    store_dir: str = ""


@dataclass
class PretrainConfig(StageConfig):
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


class PretrainUnit(TrainUnit):
    """The objective on a batch's fbank, masks drawn from the run's generator."""

    def __init__(self, model: SSASTModel):
        self.model = model

    def compile(self) -> None:
        """The encoder and decoder only: drawing masks from a generator would break the graph at every step."""
        for part in (self.model.v, self.model.decoder):
            if part is not None:
                part.compile()

    def step(self, model, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The objective's losses."""
        return model(batch["fbank"], generator=generator)


class PretrainValidator(Validator):
    """Computes what the objective trains, each head with its own masks drawn from the same seed at every
    validation, and follows MPC accuracy (joint, mpc) or the MPG loss (mpg)."""

    def __init__(self, model: SSASTModel, loader, device: torch.device, seed: int = 0):
        self.ssl, self.loader, self.device, self.seed = model.ssl, loader, device, seed
        self.monitor = "mpg_loss" if self.ssl.objective == "mpg" else "mpc_acc"
        self.mode = "min" if self.ssl.objective == "mpg" else "max"

    def _batches(self):
        self.loader.reset()
        for batch in self.loader:
            yield batch["fbank"].to(self.device)

    def validate(self, model: SSASTModel, step: int) -> dict[str, float]:
        """The objective's losses over this process's share of the validation set."""
        generator = torch.Generator().manual_seed(self.seed + 7919)
        totals, count = {}, 0
        for fbank in self._batches():
            out = model(fbank, generator=generator, mask_size=self.ssl.valid_mask_size)
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v) * len(fbank)
            count += len(fbank)
        return {k: v / count for k, v in totals.items()}

    def images(self, model: SSASTModel) -> dict[str, torch.Tensor]:
        """Input, masked input, reconstruction and per-patch error of the first validation clip, with the masks
        of validation (`ssast.models.spectrograms`)."""
        fbank = next(iter(self._batches()))[0]
        generator = torch.Generator().manual_seed(self.seed + 7919)
        mask = model.draw_mask(1, self.ssl.valid_mask_size, generator)[0].to(fbank.device)
        figure = figure_rgb(reconstruction_plot(reconstruction_panels(model, fbank, mask)))
        return {"valid/reconstruction": torch.from_numpy(figure)}


def pretrain(cfg: PretrainConfig) -> dict:
    """Pretrain by the recipe: data, model (from `init` if given), the run folder, and the engine; the last
    validation's metrics."""
    from ssast.data.loader import AudioLoader  # fairseq2: the rest of this module runs without it

    train, valid = train_valid(cfg.data, cfg.data.root)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir("pretrain")
    probe = periodic_probe(cfg, run_dir) if cfg.probe.every else None  # a bad probe recipe stops it here
    torch.manual_seed(cfg.train.seed)
    model = SSASTModel(cfg.model, cfg.ssl)
    if cfg.init:
        start_from(model, cfg.init)
    world = set_up(cfg.train.device, cfg.train.threads, cfg.train.collective_timeout_s)
    with open_run_dir(run_dir, cfg.resume, cfg.overwrite, to_dict(cfg), world.dist, "a pretraining run") as changes:
        log.info(
            "train: %d clips (%s %s)%s",
            len(train),
            cfg.data.train.kind,
            cfg.data.train.path,
            f"; valid: {len(valid.examples)} clips" if valid else "",
        )
        log.info(
            "model: SSAST %s%s; objective %s%s",
            describe(model),
            f", from {cfg.init}" if cfg.init else "",
            cfg.ssl.objective,
            ", shared mask" if cfg.ssl.shared_mask else "",
        )
        rank, size = world.dist.rank, world.dist.world
        on = dict(rank=rank, world=size, device=world.device)
        loader = AudioLoader(train, cfg.features, cfg.data, train=True, seed=cfg.train.seed, **on)
        validator = None
        if valid:
            valid_loader = AudioLoader(valid, cfg.features, cfg.data, train=False, **on)
            validator = PretrainValidator(model, valid_loader, world.device, cfg.train.seed)
        find_unused = cfg.ssl.objective != "joint"  # one head unused: DDP must not wait for its gradients
        trainer = Trainer(cfg.train, cfg.optim, world, run_dir, to_dict(cfg), cfg.resume, find_unused, changes)
        return trainer.fit(PretrainUnit(model), loader, validator, probe)


def periodic_probe(cfg: PretrainConfig, run_dir: Path) -> PeriodicProbe:
    """The fair linear probe of the probe recipe (`ssast.eval.probe_suite.probe_tasks`) on the encoder, as a hook:
    {task: metric, ...}. The recipe is checked now, so that a bad one stops the run before it trains; the stores of
    each probe go to `probe.store_dir`, or else to a folder of run_dir that is removed afterwards."""
    from ssast.eval.probe_suite import ProbeConfig, check_tasks, probe_tasks

    probe_cfg = load_config(ProbeConfig, cfg.probe.recipe, cfg.probe.overrides)
    window = probe_cfg.input_tdim or cfg.model.input_tdim  # the recipe's input_tdim: the encoder `resized` to it
    try:
        check_tasks(probe_cfg, window)
    except ConfigError as e:
        raise ConfigError(f"probe recipe {cfg.probe.recipe}: {e}") from None
    for t in probe_cfg.tasks:
        read_dataset(t.dataset, probe_cfg.data.root)

    def probe(model: SSASTModel) -> dict[str, float]:
        encoder = resized(model.v, window)
        if cfg.probe.store_dir:
            return probe_tasks(probe_cfg, encoder, cfg.probe.store_dir, cfg.features)
        with tempfile.TemporaryDirectory(dir=run_dir, prefix=".probe-stores-") as stores:
            return probe_tasks(probe_cfg, encoder, stores, cfg.features)

    return PeriodicProbe(cfg.probe.every, probe, cfg.probe.start)


def start_from(model: SSASTModel, path: str) -> None:
    """Copy the weights of a pretraining checkpoint whose architecture is the recipe's."""
    source = load_model(path, "pretraining").model
    ours, theirs = dataclasses.asdict(model.cfg), dataclasses.asdict(source.cfg)
    differ = [f"model.{k}={theirs[k]}" for k in ours if k != "fused_attn" and ours[k] != theirs[k]]
    if differ:
        raise CheckpointError(f"init checkpoint {path} has another architecture: set {' '.join(differ)}")
    model.load_state_dict(source.state_dict())
