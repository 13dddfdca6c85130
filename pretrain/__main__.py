"""Pretrain an AST encoder with SSAST's masked spectrogram patch modeling (MPC + MPG).

Writes config.yaml, metrics.jsonl, TensorBoard events and checkpoints/ into run_dir; resume=auto continues a
stopped run exactly, init=<checkpoint> starts from released or earlier weights. Example:
    python -m pretrain --config configs/pretrain/demo.yaml data.root=data/demo run_dir=runs/demo
"""

from __future__ import annotations

from ssast.cli import run_cli
from ssast.config import cli_config
from ssast.train.pretraining import PretrainConfig, pretrain

PROG = "python -m pretrain"


def main(argv: list[str] | None = None) -> dict:
    """The command line: a recipe, overrides, one line on a user error."""
    cfg = cli_config(PretrainConfig, argv, prog=PROG, doc=__doc__, recipes="pretrain")
    return run_cli(PROG, lambda: pretrain(cfg))


if __name__ == "__main__":
    main()
