"""Fine-tune an AST encoder on labelled clips (AudioSet tagging, ESC-50, Speech Commands).

    python -m finetune --config configs/finetune/<recipe>.yaml init=<checkpoint|HF directory|scratch> \\
        data.root=<data folder> run_dir=<dir> [key=value ...]

Runs on the training engine (DDP, AMP, exact resume with resume=auto) with a validation and a checkpoint per
epoch, and writes <run_dir>/results.json. protocol=split: the epoch with the best validation metric (best.pt)
is scored on the test set, with the last epoch, the weight average and the ensemble when the recipe asks for
them, and per_class_ap.csv. protocol=folds (ESC-50): one run per fold in <run_dir>/fold<k>, the epoch chosen
on the fold-averaged validation accuracy, and each fold's accuracy at that epoch. Example:
    python -m finetune --config configs/finetune/demo_esc50.yaml init=runs/demo/seed0/checkpoints/last.pt
"""

from __future__ import annotations

from ssast.cli import run_cli
from ssast.config import cli_config
from ssast.train.finetuning import FinetuneRunConfig, finetune

PROG = "python -m finetune"


def main(argv: list[str] | None = None) -> dict:
    """The command line: a recipe, overrides, one line on a user error."""
    cfg = cli_config(FinetuneRunConfig, argv, prog=PROG, doc=__doc__, recipes="finetune")
    return run_cli(PROG, lambda: finetune(cfg))


if __name__ == "__main__":
    main()
