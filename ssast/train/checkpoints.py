"""A run's checkpoints: the state they hold, writing them (atomically, linked as ``last.pt`` and ``best.pt``, the
oldest pruned) and finding the one to resume from."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ssast.distributed import Dist, gather
from ssast.files import WriteError, atomic_write
from ssast.models.formats import CheckpointError, load_state, model_state, read, weights_hash
from ssast.train.optim import Schedule
from ssast.train.run_folder import RunError

log = logging.getLogger("ssast")


def atomic_save(obj: Any, path: Path) -> None:
    """`torch.save` through `atomic_write`: a kill never leaves a torn checkpoint."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _link(src: Path, dst: Path) -> None:
    """Point `dst` at `src`'s data atomically (hard link, or a copy where links are not supported)."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _step_of(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


@dataclass
class TrainState:
    """Everything a checkpoint restores. The model, optimiser, schedule and scaler are the same on every
    process; the generator and the data pipeline are each process's own, so a checkpoint holds one of those
    per rank and any checkpoint of the run (``step_N.pt``, ``best.pt``) resumes exactly."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    loader: Any
    validator: Any  # a `Validator` with running state over validations, or None
    step: int = 0
    best: Optional[float] = None  # best monitored validation value so far
    skipped: int = 0  # steps skipped for a non-finite loss or gradient
    train_seconds: float = 0.0  # wall seconds spent in training steps (data waits in, validation and probes out)

    def local_state(self) -> dict:
        """This process's own part: its generator and its data pipeline."""
        return {"generator": self.generator.get_state(), "data": self.loader.state_dict()}

    def state_dict(self, ranks: list[dict]) -> dict:
        """The checkpoint's contents, with every process's `local_state` in `ranks`."""
        validator = self.validator.state_dict() if self.validator else {}
        return {
            **model_state(self.model),
            "step": self.step,
            "best": self.best,
            "skipped_steps": self.skipped,
            "train_seconds": self.train_seconds,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ranks": ranks,
            **({"validator": validator} if validator else {}),
        }

    def load_state_dict(self, state: dict, path: Path, d: Dist) -> None:
        """Restore a checkpoint of `state_dict`, taking this process's part of it."""
        if "optimizer" not in state:
            raise CheckpointError(
                f"{path} holds model weights only, not a run to resume: start from its weights with init={path}"
            )
        if len(state["ranks"]) != d.world:
            raise CheckpointError(
                f"{path} was written by {len(state['ranks'])} process(es); resume it with that "
                f"many (this run has {d.world})"
            )
        load_state(self.model, state["model"], f"checkpoint {path}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best, self.skipped = state["step"], state["best"], state["skipped_steps"]
        self.train_seconds = state.get("train_seconds", 0.0)  # absent from checkpoints of earlier versions
        self.generator.set_state(state["ranks"][d.rank]["generator"])
        self.loader.load_state_dict(state["ranks"][d.rank]["data"])
        if "validator" in state:
            self.validator.load_state_dict(state["validator"])


class Checkpoints:
    """The ``checkpoints`` folder of a run: ``step_N.pt`` files (the newest `keep_last` kept), ``last.pt`` and
    ``best.pt`` links, written by the main process after every process has handed in its own state."""

    def __init__(self, folder: Path, keep_last: int, dist: Dist, config: dict):
        self.folder, self.keep_last, self.dist, self.config = folder, keep_last, dist, config
        self.saved_step = -1
        if dist.main:  # the run holds its folder: temporaries there are those of a writer killed mid-write
            for stale in folder.glob(".*.tmp*"):
                stale.unlink()

    def save(self, run: TrainState, best: bool = False) -> None:
        """Checkpoint the whole run state as ``step_N.pt``, linked as ``last.pt`` (and ``best.pt``)."""
        path = self.folder / f"step_{run.step:08d}.pt"
        if self.saved_step != run.step:
            # Each rank's weights hash travels with its state: the bytes are equal on every rank under DDP.
            ranks = gather({**run.local_state(), "weights": weights_hash(run.model)}, self.dist)
            if not all(p.isfinite().all() for p in run.model.parameters()):  # such steps are skipped: guard anyway
                raise RunError(f"refusing to write a checkpoint with non-finite weights at step {run.step}")
            if len({r["weights"] for r in ranks}) > 1:
                raise RunError(
                    f"the processes' weights differ at step {run.step} (hashes "
                    f"{[r['weights'][:12] for r in ranks]}): refusing to checkpoint a diverged run"
                )
            if self.dist.main:
                self.folder.mkdir(parents=True, exist_ok=True)
                try:
                    atomic_save({**run.state_dict(ranks), "config": self.config}, path)
                except WriteError as e:
                    last = self.folder / "last.pt"
                    kept = f"{last} (step {self.saved_step}) is intact" if self.saved_step >= 0 else "none written yet"
                    raise WriteError(f"{e}; the last checkpoint: {kept}; free some space, then resume=auto") from None
                _link(path, self.folder / "last.pt")
                self._prune(run.step)
            self.saved_step = run.step
        if best and self.dist.main:
            _link(path, self.folder / "best.pt")

    def _prune(self, step: int) -> None:
        """Keep the newest `keep_last` step checkpoints; drop those of steps after `step` (a run resumed from an
        older checkpoint abandons them, as it drops their metrics)."""
        steps = sorted(self.folder.glob("step_*.pt"), key=_step_of)
        kept = [p for p in steps if _step_of(p) <= step][-self.keep_last or len(steps) :]
        for old in set(steps) - set(kept):
            old.unlink()

    def to_resume(self, resume: str) -> Optional[tuple[Path, dict]]:
        """(path, state) of the checkpoint `resume` names. ``auto``: ``last.pt``, or, if it cannot be read, the
        newest readable ``step_N.pt`` (with a warning); None when the folder holds no checkpoint yet."""
        if resume == "none":
            return None
        if resume != "auto":
            return Path(resume), read(resume)
        candidates = [self.folder / "last.pt", *sorted(self.folder.glob("step_*.pt"), key=_step_of, reverse=True)]
        candidates = [p for p in candidates if p.exists()]
        for path in candidates:
            try:
                return path, read(path)
            except CheckpointError as e:
                log.warning("%s; trying an older checkpoint", e)
        if candidates:
            raise CheckpointError(f"no readable checkpoint in {self.folder}: start a fresh run_dir")
        return None
