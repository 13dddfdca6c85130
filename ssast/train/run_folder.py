"""What every stage does with the outputs a user names: the run section of a stage's configuration, one rule for an
output already there (refused, resumed or overwritten) and the default run folder."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ssast.config import UserError, save_config
from ssast.distributed import Dist, barrier


class RunError(UserError, RuntimeError):
    """A run that cannot start or go on (an output in the way, diverged training); one line for the user."""


@dataclass
class StageConfig:
    """The run section every stage schema starts with."""

    run_dir: str = ""  # default: runs/<stage>-<date>-<time>
    resume: str = "none"  # none | auto (continue the run in run_dir) | path of a checkpoint
    overwrite: bool = False  # replace what an earlier run left in run_dir (without it, such a run_dir is refused)
    init: str = ""  # weights to start from: a checkpoint or a Hugging Face AST directory (see ssast.models.load_model)


def default_run_dir(stage: str) -> Path:
    """``runs/<stage>-<date>-<time>``."""
    return Path(f"runs/{stage}-{time.strftime('%Y%m%d-%H%M%S')}")


def claim_output(
    folder: Path,
    written: Sequence[str],
    what: str,
    key: str,
    resume: bool = False,
    overwrite: bool = False,
    retry: str = "",
) -> None:
    """The rule for an output the user names (config key `key`): when `folder` already holds any of `written`
    (what this kind of output writes there), it is continued only with `resume`, replaced only with `overwrite`
    (the files of `written` are removed, never the folder itself), else refused with one line naming `what` is
    there and how to `retry`."""
    there = [folder / name for name in written if (folder / name).exists()]
    if there and not resume and not overwrite:
        raise RunError(
            f"{folder} already holds {what} ({', '.join(p.name for p in there)}): "
            f"{retry + ', ' if retry else ''}choose another {key}, or pass overwrite=true to replace it"
        )
    if there and overwrite and not resume:
        for path in there:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


RUN_FILES = ("metrics.jsonl", "checkpoints", "tensorboard")  # what a run that has started leaves in its folder


def open_run_dir(folder: Path, resume: str, overwrite: bool, config: dict, dist: Dist) -> None:
    """A stage's run folder by the rule of `claim_output`, with the resolved configuration written into it. Every
    process looks before the main one changes anything."""
    claim = dict(what="a run", key="run_dir", retry="continue it with resume=auto")
    if resume == "none" and not overwrite:  # refused on every process, before any of them changes anything
        claim_output(folder, RUN_FILES, **claim)
    barrier(dist)
    if dist.main:
        claim_output(folder, RUN_FILES, resume=resume != "none", overwrite=overwrite, **claim)
        folder.mkdir(parents=True, exist_ok=True)
        save_config(config, folder / "config.yaml")
