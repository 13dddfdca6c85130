"""What every stage does with the outputs a user names: the run section of a stage's configuration, one rule for an
output already there (refused, resumed or overwritten) and the default run folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

from ssast.config import UserError, load_yaml, save_config
from ssast.distributed import Dist, any_rank, barrier
from ssast.files import FolderInUse, FolderLock


class RunError(UserError, RuntimeError):
    """A run that cannot start or go on (an output in the way, diverged training); one line for the user."""


@dataclass
class StageConfig:
    """The run section every stage schema starts with."""

    run_dir: str = ""  # default: runs/<stage>-<date>-<time>
    resume: str = "none"  # none | auto (continue the run in run_dir) | path of a checkpoint
    overwrite: bool = False  # replace what an earlier run left in run_dir (without it, such a run_dir is refused)
    init: str = ""  # weights to start from: a checkpoint or a Hugging Face AST directory (see ssast.models.load_model)
    # Keys whose change a resume may make although it changes the result (e.g. [optim.lr]): without them, such a
    # resume is refused. The changes are recorded in the run's config_changes.jsonl.
    resume_changes: list[str] = field(default_factory=list)


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
# The run section says how to start, not what to compute: a resume's changes of it are not even recorded. The
# neutral keys say where things are and how the run is watched: changed freely, and recorded.
RUN_KEYS = ("run_dir", "resume", "overwrite", "init", "resume_changes")
TRAIN_NEUTRAL = (
    "max_steps", "log_every", "checkpoint_every", "keep_last", "device", "threads", "tensorboard", "compile",
    "collective_timeout_s",
)  # fmt: skip
NEUTRAL_KEYS = (
    "data.root",
    "data.num_parallel_calls",
    "features.device",
    "probe.",
    *(f"train.{k}" for k in TRAIN_NEUTRAL),
)
REQUEUE_WAIT_S = 300  # a requeued SLURM job waits this long for its previous allocation to let go of the folder


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_changes(saved: dict, config: dict, allowed: Sequence[str]) -> dict[str, tuple]:
    """{key: (saved value, new value)} of a resume's configuration against the run's. A change of a key that changes
    the result (anything but `NEUTRAL_KEYS`) is refused with one line listing them, unless `allowed` names it."""
    old, new = _flat(saved), _flat(config)
    # keys that only one side has come and go with the schema (a run folder of earlier code), not with the user
    keys = sorted(k for k in old.keys() & new.keys() if k not in RUN_KEYS and old[k] != new[k])
    changed = {k: (old[k], new[k]) for k in keys}
    neutral = tuple(k for k in NEUTRAL_KEYS if k.endswith(".")), tuple(k for k in NEUTRAL_KEYS if not k.endswith("."))
    refused = [k for k in changed if not (k.startswith(neutral[0]) or k in neutral[1] or k in allowed)]
    if refused:
        listed = ", ".join(f"{k} {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
        raise RunError(
            f"resuming with settings that change the result: {listed}; resume with the run's settings, or say so "
            f"with resume_changes=[{','.join(refused)}]"
        )
    return changed


@contextlib.contextmanager
def hold_folder(folder: Path, what: str, dist: Dist, key: str = "run_dir") -> Iterator[None]:
    """The main process holds `folder`'s lock (`FolderLock`) while the block runs: a second stage on it is refused
    with one line naming the holder, on every process; a requeued SLURM job first waits up to `REQUEUE_WAIT_S` for
    its previous allocation to let go."""
    requeued = os.environ.get("SLURM_RESTART_COUNT", "0") != "0"
    lock = FolderLock(folder, what, f"wait for it to end, or choose another {key}", REQUEUE_WAIT_S if requeued else 0)
    held: Optional[UserError] = None
    if dist.main:
        try:
            lock.acquire()
        except FolderInUse as e:
            held = e
    if any_rank(held is not None, dist):
        raise held or RunError(f"{folder} is in use by another run (the main process says by whom)")
    try:
        yield
    finally:
        if dist.main:
            lock.release()


@contextlib.contextmanager
def open_run_dir(
    folder: Path, resume: str, overwrite: bool, config: dict, dist: Dist, what: str = "a run"
) -> Iterator[dict]:
    """A stage's run folder for as long as the block runs, held (`hold_folder`: a second run on it, a resume or an
    overwrite included, is refused), then claimed by the rule of `claim_output`. A fresh run writes the resolved
    configuration into config.yaml; a resume keeps the run's and yields the changes it makes (`config_changes`).
    Every process looks before the main one changes anything."""
    with hold_folder(folder, what, dist):
        claim = dict(what="a run", key="run_dir", retry="continue it with resume=auto")
        if resume == "none" and not overwrite:  # refused on every process, before any of them changes anything
            claim_output(folder, RUN_FILES, **claim)
        barrier(dist)
        resuming = resume != "none" and (folder / "config.yaml").is_file()
        saved = load_yaml(folder / "config.yaml") if resuming else config
        changes = config_changes(saved, config, config["resume_changes"])
        if dist.main:
            claim_output(folder, RUN_FILES, resume=resume != "none", overwrite=overwrite, **claim)
            folder.mkdir(parents=True, exist_ok=True)
            if not resuming:
                save_config(config, folder / "config.yaml")
        yield changes
