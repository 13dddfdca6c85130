"""Pretraining: ``python -m pretrain --config configs/pretrain/<recipe>.yaml [key=value ...]``."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pretrain.config import PretrainConfig
from ssast.cli import run_cli
from ssast.config import cli_config, to_dict
from ssast.data.pipeline import AudioLoader
from ssast.data.readers import read_dataset, split_holdout
from ssast.engine import Trainer
from ssast.models import SSASTModel
from ssast.pretraining import PretrainTask

PROG = "python -m pretrain"


def run(cfg: PretrainConfig) -> dict:
    train = read_dataset(cfg.data.train, cfg.data.root)
    valid = None
    if cfg.data.valid.path:
        valid = read_dataset(cfg.data.valid, cfg.data.root)
    elif cfg.data.valid_holdout:
        train, valid = split_holdout(train, cfg.data.valid_holdout)
    run_dir = Path(cfg.run_dir or f"runs/pretrain-{time.strftime('%Y%m%d-%H%M%S')}")
    trainer = Trainer(cfg.train, cfg.optim, run_dir, to_dict(cfg), cfg.resume, cfg.overwrite,
                      find_unused_parameters=cfg.ssl.objective != "joint")
    rank, world = trainer.dist.rank, trainer.dist.world
    torch.manual_seed(cfg.train.seed)
    model = SSASTModel(cfg.model)
    train_loader = AudioLoader(train, cfg.features, cfg.data, train=True, seed=cfg.train.seed, rank=rank, world=world)
    valid_loader = valid and AudioLoader(valid, cfg.features, cfg.data, train=False, rank=rank, world=world)
    task = PretrainTask(model, cfg.ssl, valid_loader, trainer.device, cfg.train.seed)
    return trainer.fit(task, train_loader)


def main(argv: list[str] | None = None) -> dict:
    cfg = cli_config(PretrainConfig, argv, prog=PROG)
    return run_cli(PROG, lambda: run(cfg))


if __name__ == "__main__":
    main()
