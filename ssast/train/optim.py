"""Optimisers and learning-rate schedules: the reference's (Adam, staircase warm-up, halving on a plateau of the
validation metric; MultiStepLR per epoch for fine-tuning) and modern ones (AdamW, cosine)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

import torch
from torch import nn

from ssast.config import NonNegative, NonNegativeFloat, Positive, Range, invalid

log = logging.getLogger("ssast")


@dataclass
class OptimConfig:
    """The optimiser and its learning-rate schedule."""

    name: Literal["adam", "adamw"] = "adam"
    lr: NonNegativeFloat = 1e-4
    betas: list[Annotated[float, Range(ge=0, lt=1)]] = field(default_factory=lambda: [0.95, 0.999])
    weight_decay: NonNegativeFloat = 5e-7
    # reference: staircase warm-up (every 50 steps lr = step / warmup_steps * lr), then halve on a plateau of
    # the monitored validation metric (pretraining); multistep: the same warm-up, then lr * decay_factor ** k
    # after k milestone epochs decay_start, decay_start + decay_every, ... (fine-tuning); cosine: linear warm-up
    # then cosine decay to min_lr; constant.
    schedule: Literal["reference", "multistep", "cosine", "constant"] = "reference"
    warmup_steps: NonNegative = 1000
    plateau_factor: Annotated[float, Range(gt=0, lt=1)] = 0.5
    plateau_patience: NonNegative = 2
    decay_start: Positive = 1  # multistep: first milestone, in epochs
    decay_every: Positive = 1  # multistep: epochs between milestones
    decay_factor: Annotated[float, Range(gt=0, le=1)] = 0.5
    min_lr: NonNegativeFloat = 0.0

    def __post_init__(self):
        if len(self.betas) != 2:
            raise invalid("betas", self.betas, "two numbers [beta1, beta2]")


def build_optimizer(
    cfg: OptimConfig, model: nn.Module, groups: Optional[list[dict]] = None, fused: bool = False
) -> torch.optim.Optimizer:
    """Adam(W) over `groups` (dicts with "params" and an optional "lr_scale" and "frozen_until" step, see
    `Schedule`), or over all trainable parameters; `fused`: one kernel for every parameter's update (None leaves
    torch's choice: a per-parameter loop on the CPU)."""
    groups = groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused or None)


class Schedule:
    """Learning rate per step, plus the reference's ReduceLROnPlateau on the monitored metric. A parameter
    group's rate is the schedule's times its "lr_scale" (head multiplier, layer-wise decay), and 0 before its
    "frozen_until" step (an encoder frozen for the first epochs)."""

    def __init__(
        self,
        cfg: OptimConfig,
        optimizer: torch.optim.Optimizer,
        max_steps: int,
        mode: Literal["max", "min"] = "max",
        epoch_steps: Optional[int] = None,
    ):
        if cfg.schedule == "multistep" and not epoch_steps:
            raise ValueError("the multistep schedule needs the number of steps per epoch")
        self.cfg, self.optimizer, self.max_steps, self.epoch_steps = cfg, optimizer, max_steps, epoch_steps
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
        if cfg.schedule != "constant" and cfg.warmup_steps > max_steps:
            peak = max_steps / cfg.warmup_steps if cfg.schedule == "cosine" else self._staircase(max_steps - 1)
            log.warning(
                "optim.warmup_steps=%d is longer than the run's %d steps: the learning rate never goes past %.3g "
                "(%.0f%% of optim.lr=%g)",
                cfg.warmup_steps,
                max_steps,
                peak * cfg.lr,
                100 * peak,
                cfg.lr,
            )

    def _set(self, lr: float, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0) * (step >= group.get("frozen_until", 0))

    def _staircase(self, step: int) -> float:
        """The reference's warm-up factor: step / warmup_steps, updated every 50 steps, from 0."""
        return min(1.0, step // 50 * 50 / self.cfg.warmup_steps) if self.cfg.warmup_steps else 1.0

    def before_step(self, step: int) -> None:
        """Set the learning rate of step `step`."""
        c = self.cfg
        if c.schedule == "reference":
            if step <= c.warmup_steps and step % 50 == 0:  # staircase from 0, as the reference
                self._set(self._staircase(step) * c.lr, step)
        elif c.schedule == "multistep":  # torch's MultiStepLR stepped at each epoch's end, as the reference
            milestones = max(0, (step // self.epoch_steps - c.decay_start) // c.decay_every + 1)
            self._set(self._staircase(step) * c.lr * c.decay_factor**milestones, step)
        elif c.schedule == "cosine":
            if step < c.warmup_steps:
                self._set(c.lr * (step + 1) / c.warmup_steps, step)
            else:
                progress = (step - c.warmup_steps) / max(1, self.max_steps - c.warmup_steps)
                self._set(c.min_lr + (c.lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))), step)
        else:
            self._set(c.lr, step)

    def after_eval(self, metric: float) -> None:
        """Feed a validation metric to the reference schedule's plateau rule."""
        if self.cfg.schedule == "reference":
            self.plateau.step(metric)

    def state_dict(self) -> dict:
        """The plateau rule's state and the current rates."""
        return {"plateau": self.plateau.state_dict(), "lr": [g["lr"] for g in self.optimizer.param_groups]}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`."""
        self.plateau.load_state_dict(state["plateau"])
        for group, lr in zip(self.optimizer.param_groups, state["lr"], strict=True):
            group["lr"] = lr
