"""Pretrain an AST encoder with SSAST's masked spectrogram patch modeling (MPC + MPG).

Writes config.yaml, metrics.jsonl, TensorBoard events and checkpoints/ into run_dir; resume=auto continues a
stopped run exactly, init=<checkpoint> starts from released or earlier weights. Example:
    python -m pretrain --config configs/pretrain/demo.yaml data.root=data/demo run_dir=runs/demo
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import torch

from pretrain.config import PretrainConfig
from ssast.cli import run_cli
from ssast.config import ConfigError, cli_config, load_config, to_dict
from ssast.data.index import read_dataset
from ssast.data.loader import AudioLoader
from ssast.data.sampling import train_valid
from ssast.engine import Trainer
from ssast.models import CheckpointError, SSASTModel, load_model, resized
from ssast.pretraining import PretrainTask
from ssast.runs import default_run_dir

PROG = "python -m pretrain"
log = logging.getLogger("ssast")


def run(cfg: PretrainConfig) -> dict:
    """Pretrain by the recipe: data, model (from `init` if given), task, and the engine in run_dir."""
    train, valid = train_valid(cfg.data, cfg.data.root)
    torch.manual_seed(cfg.train.seed)
    model = SSASTModel(cfg.model, cfg.ssl)
    if cfg.init:
        start_from(model, cfg.init)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir("pretrain")
    trainer = Trainer(
        cfg.train,
        cfg.optim,
        run_dir,
        to_dict(cfg),
        cfg.resume,
        cfg.overwrite,
        find_unused_parameters=cfg.ssl.objective != "joint",
    )
    rank, world = trainer.dist.rank, trainer.dist.world
    m, (f, t) = cfg.model, model.v.grid
    log.info(
        "train: %d clips (%s %s)%s",
        len(train),
        cfg.data.train.kind,
        cfg.data.train.path,
        f"; valid: {len(valid.examples)} clips" if valid else "",
    )
    log.info(
        "model: SSAST %s, %d layers, %dx%d patches, %dx%d grid, %.2fM parameters%s; objective %s%s",
        m.size,
        m.depth,
        m.fshape,
        m.tshape,
        f,
        t,
        sum(p.numel() for p in model.parameters()) / 1e6,
        f", from {cfg.init}" if cfg.init else "",
        cfg.ssl.objective,
        ", shared mask" if cfg.ssl.shared_mask else "",
    )
    train_loader = AudioLoader(train, cfg.features, cfg.data, train=True, seed=cfg.train.seed, rank=rank, world=world)
    valid_loader = valid and AudioLoader(valid, cfg.features, cfg.data, train=False, rank=rank, world=world)
    prober = periodic_probe(cfg, run_dir) if cfg.probe.every else None
    task = PretrainTask(model, valid_loader, trainer.device, cfg.train.seed, prober, cfg.probe.every, cfg.probe.start)
    return trainer.fit(task, train_loader)


def periodic_probe(cfg: PretrainConfig, run_dir: Path):
    """encoder -> {task: metric, ...} of the probe recipe's fair linear probe (`probe_tasks`), checked now so that
    a bad recipe stops the run before it trains; the stores of each probe go to `probe.store_dir`, or else to a
    folder of run_dir that is removed afterwards."""
    from ssast.protocols import ProbeConfig, check_tasks, probe_tasks

    probe_cfg = load_config(ProbeConfig, cfg.probe.recipe, cfg.probe.overrides)
    window = probe_cfg.input_tdim or cfg.model.input_tdim  # the recipe's input_tdim: the encoder `resized` to it
    try:
        check_tasks(probe_cfg, window)
    except ConfigError as e:
        raise ConfigError(f"probe recipe {cfg.probe.recipe}: {e}") from None
    for t in probe_cfg.tasks:
        read_dataset(t.dataset, probe_cfg.data.root)

    def probe(encoder) -> dict[str, float]:
        encoder = resized(encoder, window)
        if cfg.probe.store_dir:
            return probe_tasks(probe_cfg, encoder, cfg.probe.store_dir)
        with tempfile.TemporaryDirectory(dir=run_dir, prefix=".probe-stores-") as stores:
            return probe_tasks(probe_cfg, encoder, stores)

    return probe


def start_from(model: SSASTModel, path: str) -> None:
    """Copy the weights of a pretraining checkpoint whose architecture is the recipe's."""
    source = load_model(path, "pretraining").model
    ours, theirs = dataclasses.asdict(model.cfg), dataclasses.asdict(source.cfg)
    differ = [f"model.{k}={theirs[k]}" for k in ours if k != "fused_attn" and ours[k] != theirs[k]]
    if differ:
        raise CheckpointError(f"init checkpoint {path} has another architecture: set {' '.join(differ)}")
    model.load_state_dict(source.state_dict())


def main(argv: list[str] | None = None) -> dict:
    """The command line: a recipe, overrides, one line on a user error."""
    cfg = cli_config(PretrainConfig, argv, prog=PROG, doc=__doc__, recipes="pretrain")
    return run_cli(PROG, lambda: run(cfg))


if __name__ == "__main__":
    main()
