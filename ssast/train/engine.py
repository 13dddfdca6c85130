"""The training loop shared by pretraining and fine-tuning.

A stage sets up its process once (`ssast.distributed.set_up`: device, process group, logging) and opens its run folder
(`ssast.train.run_folder.open_run_dir`); then one `Trainer` runs a `TrainUnit` (what a step computes), scored by a
`Validator` and probed by a `PeriodicProbe`, with: single process or DDP, fp32 / bf16 / fp16 autocast (a grad
scaler for fp16), gradient accumulation and clipping, steps with a non-finite loss or gradient skipped and counted,
checkpoints every N steps and on SIGINT / SIGTERM / SIGUSR1 / SIGUSR2 that resume exactly
(`ssast.train.checkpoints`), and the run log (`ssast.train.logs`). Optimisers and schedules live in
`ssast.train.optim`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ssast.cli import Stopped
from ssast.config import NonNegative, NonNegativeFloat, Positive, invalid
from ssast.distributed import COLLECTIVE_TIMEOUT_S, World, all_mean, all_true, any_rank, lost_process
from ssast.train.checkpoints import Checkpoints, TrainState
from ssast.train.logs import RunLog
from ssast.train.optim import OptimConfig, Schedule, build_optimizer
from ssast.train.run_folder import RunError

__all__ = ["PeriodicProbe", "StopSignals", "TrainConfig", "TrainUnit", "Trainer", "Validator", "World"]
log = logging.getLogger("ssast")


@dataclass
class TrainConfig:
    """How the engine trains: steps, seed, precision, accumulation, clipping, logging and checkpoint periods."""

    max_steps: Positive = 100_000
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_accum: Positive = 1  # micro-batches per optimiser step
    clip_grad: NonNegativeFloat = 0.0  # max gradient norm; 0 = no clipping (the norm is logged either way)
    log_every: Positive = 10
    eval_every: Positive = 800
    checkpoint_every: Positive = 800
    keep_last: NonNegative = 2  # step checkpoints kept besides last.pt and best.pt
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: NonNegative = 0  # torch intra-op threads; 0 keeps torch's default
    tensorboard: bool = True
    max_skipped_steps: NonNegative = 5  # steps in a row with a non-finite loss or gradient before the run stops
    compile: bool = False  # torch.compile the model: a minute or more of compiling at the start, faster GPU steps
    tf32: bool = False  # TF32 matmuls and convolutions in fp32 on Ampere and later GPUs (the reference: true fp32)
    # How long a process waits for the others in a collective before it ends the job (a lost node or task). It
    # must outlast the longest wait of a healthy run: the periodic probe, which the main process runs alone.
    collective_timeout_s: Positive = COLLECTIVE_TIMEOUT_S

    def __post_init__(self):
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise invalid("device", self.device, "auto, cpu, cuda or cuda:N")


class TrainUnit:
    """What a stage trains: the model and one step's losses. Subclasses set `model` and implement `step`; the other
    members have defaults."""

    model: nn.Module
    epoch_steps: Optional[int] = None  # steps per epoch, for the multistep schedule

    def step(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch; "loss" is minimised, the others are logged."""
        raise NotImplementedError

    def clips(self, batch: dict) -> list[str]:
        """The clips of a batch, named in the warning about a non-finite step."""
        return list(batch.get("path", []))

    def param_groups(self) -> Optional[list[dict]]:
        """Optimiser groups (see `ssast.train.optim.build_optimizer`); None: every trainable parameter, one group."""
        return None

    def compile(self) -> None:
        """``train.compile``: torch.compile the model's forward in place (the state dict keeps its keys)."""
        self.model.compile()


class Validator:
    """Scores the model every `eval_every` steps. `monitor` names the metric of the plateau schedule and best.pt,
    `mode` whether higher ("max") or lower ("min") is better. A validator's own running state (averages over
    validations) is checkpointed with the run; validating never changes the training state."""

    monitor: str
    mode: Literal["max", "min"] = "max"

    def validate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Metrics of this process's share of the validation set at `step`."""
        raise NotImplementedError

    def images(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Images [3, H, W] in [0, 1] for TensorBoard at each validation."""
        return {}

    def state_dict(self) -> dict:
        """State that checkpoints keep."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict`."""


@dataclass
class PeriodicProbe:
    """A representation probe every `every` steps on the main process, logged as ``probe_<name>``; with `start`, at
    step 0 of a fresh run too (a learning curve's first point)."""

    every: Positive
    probe: Callable[[nn.Module], dict[str, float]]
    start: bool = False


@dataclass
class _Interval:
    """The loop's counters between two log lines, and the steps skipped in a row."""

    clips: int = 0
    seconds: float = 0.0
    skipped_in_a_row: int = 0


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class StopSignals:
    """While open, SIGINT / SIGTERM / SIGUSR1 / SIGUSR2 are recorded, to be acted on between steps (checkpoint,
    then stop). On a normal exit the previous handlers come back and a launcher that asked to hear of these
    signals (submitit requeues the job on SIGUSR2) is told once the checkpoint is written; the interpreter's own
    Ctrl-C handler is not (it would raise KeyboardInterrupt)."""

    def __enter__(self) -> "StopSignals":
        self.received: list[int] = []
        self.previous = {s: signal.signal(s, lambda signum, frame: self.received.append(signum)) for s in STOP_SIGNALS}
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        if exc_type is None:
            for s in dict.fromkeys(self.received):
                if callable(self.previous[s]) and self.previous[s] is not signal.default_int_handler:
                    signal.raise_signal(s)


class Trainer:
    """Runs a `TrainUnit` in a run folder that `ssast.train.run_folder.open_run_dir` has opened, on the `World` that
    `set_up` prepared."""

    def __init__(
        self,
        cfg: TrainConfig,
        optim: OptimConfig,
        world: World,
        run_dir: str | Path,
        run_config: dict,
        resume: str = "none",
        find_unused_parameters: bool = False,
        config_changes: Optional[dict] = None,
    ):
        self.cfg, self.optim_cfg, self.resume = cfg, optim, resume
        self.device, self.dist = world.device, world.dist
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.find_unused, self.changes = find_unused_parameters, config_changes or {}
        self.checkpoints = Checkpoints(self.ckpt_dir, cfg.keep_last, self.dist, run_config)
        if self.device.type == "cuda":  # PyTorch's default lets convolutions (the patch embedding) use TF32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32

    def _autocast(self):
        if self.cfg.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _start(self, unit: TrainUnit, loader, validator: Optional[Validator]) -> TrainState:
        """The run state on the device, resumed from a checkpoint when `resume` names one."""
        cfg, model = self.cfg, unit.model.to(self.device)
        if cfg.compile:
            unit.compile()
        # CUDA: one fused kernel updates every parameter (on the CPU the reference's loop, bit for bit)
        optimizer = build_optimizer(self.optim_cfg, model, unit.param_groups(), fused=self.device.type == "cuda")
        mode = validator.mode if validator else "max"
        run = TrainState(
            model,
            optimizer,
            Schedule(self.optim_cfg, optimizer, cfg.max_steps, mode, unit.epoch_steps),
            torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16"),
            torch.Generator().manual_seed(cfg.seed * 1000 + self.dist.rank),
            loader,
            validator,
        )
        resumed = self.checkpoints.to_resume(self.resume)
        if resumed is not None:
            run.load_state_dict(resumed[1], resumed[0], self.dist)
            self.checkpoints.saved_step = run.step
            log.info("resumed from %s at step %d", resumed[0], run.step)
            self._record_changes(run.step)
            if run.step >= cfg.max_steps:
                log.info(
                    "this run finished at step %d (train.max_steps=%d): nothing to train; raise train.max_steps to "
                    "train on",
                    run.step,
                    cfg.max_steps,
                )
        log.info(
            "device %s, precision %s%s%s, %d process(es), run folder %s",
            self.device,
            cfg.precision,
            ", TF32" if cfg.tf32 and self.device.type == "cuda" else "",
            ", compiled" if cfg.compile else "",
            self.dist.world,
            self.run_dir,
        )
        if validator is None:
            log.info("no validation data: training without validation; checkpoints keep last.pt, no best.pt")
        return run

    def _record_changes(self, step: int) -> None:
        """A resume's changes of the settings, in the log and appended to the run's config_changes.jsonl (the run's
        config.yaml keeps the settings it started with)."""
        if not self.changes:
            return
        log.info(
            "resumed with changed settings: %s", ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in self.changes.items())
        )
        if self.dist.main:
            with open(self.run_dir / "config_changes.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "changes": self.changes}) + "\n")

    def fit(
        self,
        unit: TrainUnit,
        loader,
        validator: Optional[Validator] = None,
        probe: Optional[PeriodicProbe] = None,
    ) -> dict:
        """Train until ``max_steps`` (or a stop signal, after a checkpoint); the last validation's metrics."""
        run = self._start(unit, loader, validator)
        ddp = (
            run.model
            if self.dist.world == 1
            else DistributedDataParallel(
                run.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.find_unused,
            )
        )
        runlog = RunLog(self.run_dir, run.step, self.cfg.max_steps, self.dist.main, self.cfg.tensorboard)
        batches: Iterator = iter(loader)
        interval, last_eval, stopped = _Interval(), {}, None
        if run.step == 0 and probe and probe.start:
            self._maybe_probe(run, probe, runlog)  # the initialisation: a learning curve's first point
        try:
            with StopSignals() as signals:
                while run.step < self.cfg.max_steps:
                    start = time.perf_counter()
                    totals, grad_norm = self._step(run, ddp, unit, batches, interval)
                    elapsed = time.perf_counter() - start
                    run.train_seconds += elapsed
                    interval.seconds += elapsed
                    self._maybe_log(run, totals, grad_norm, runlog, interval)
                    last_eval = self._maybe_validate(run, validator, runlog) or last_eval
                    self._maybe_probe(run, probe, runlog)
                    self._maybe_checkpoint(run)
                    if stopped := self._maybe_stop(run, signals.received):
                        break
        except RuntimeError as e:
            if not (reason := lost_process(e)):
                raise
            saved = self.checkpoints.saved_step
            raise RunError(
                f"lost contact with another process of the job after step {run.step}: {reason} "
                f"(train.collective_timeout_s={self.cfg.collective_timeout_s}); "
                + (f"the last checkpoint is step {saved}: " if saved >= 0 else "no checkpoint yet: ")
                + "a requeued job (scontrol requeue) or resume=auto goes on from it"
            ) from None
        finally:
            runlog.close()
        if stopped:  # after StopSignals handed the signal on (submitit requeues the job on SIGUSR2)
            raise Stopped(
                stopped,
                f"stopped by {signal.Signals(stopped).name} at step {run.step}, after a checkpoint: "
                f"resume=auto continues",
            )
        return last_eval

    def _step(self, run: TrainState, ddp: nn.Module, unit: TrainUnit, batches: Iterator, interval: _Interval):
        """One optimiser step over `grad_accum` micro-batches: (mean losses on the device, gradient norm). A step
        with a non-finite loss or gradient on any process leaves the weights as they were."""
        cfg = self.cfg
        run.schedule.before_step(run.step)
        run.model.train()
        run.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, torch.Tensor] = {}
        clips: list[str] = []
        for micro in range(cfg.grad_accum):
            batch = {
                k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in next(batches).items()
            }
            sync = micro == cfg.grad_accum - 1 or self.dist.world == 1
            with nullcontext() if sync else ddp.no_sync(), self._autocast():
                out = unit.step(ddp, batch, generator=run.generator)
            run.scaler.scale(out["loss"] / cfg.grad_accum).backward()
            for k, v in out.items():  # on the device: read only at log steps
                totals[k] = totals.get(k, 0.0) + v.detach().float() / cfg.grad_accum
            clips += unit.clips(batch)
        interval.clips += len(clips)
        run.scaler.unscale_(run.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad or math.inf)
        # fp16: the grad scaler skips steps with non-finite gradients itself (and lowers its scale)
        finite = totals["loss"].isfinite() & (grad_norm.isfinite() if cfg.precision != "fp16" else True)
        if all_true(finite, self.dist):
            run.scaler.step(run.optimizer)
            interval.skipped_in_a_row = 0
        else:
            run.skipped, interval.skipped_in_a_row = run.skipped + 1, interval.skipped_in_a_row + 1
            log.warning(
                "step %d: non-finite loss %s or gradient norm %s; optimiser not stepped (%d in a row); clips: %s",
                run.step + 1,
                float(totals["loss"]),
                float(grad_norm),
                interval.skipped_in_a_row,
                " ".join(clips),
            )
        run.scaler.update()
        run.step += 1
        if interval.skipped_in_a_row > cfg.max_skipped_steps:
            self.checkpoints.save(run)  # the weights are those of the last finite step
            raise RunError(
                f"{interval.skipped_in_a_row} steps in a row had a non-finite loss or gradient (the last at step "
                f"{run.step}; limit train.max_skipped_steps={cfg.max_skipped_steps}); checkpoint "
                f"written: lower optim.lr, set train.clip_grad or check the data"
            )
        return totals, grad_norm

    def _maybe_log(
        self, run: TrainState, totals: dict, grad_norm: torch.Tensor, runlog: RunLog, interval: _Interval
    ) -> None:
        """Every `log_every` steps, and at steps 1 (it runs) and the last: losses, rate and the loader's counts."""
        if not (run.step % self.cfg.log_every == 0 or run.step in (1, self.cfg.max_steps)):
            return
        record = {
            **{k: float(v) for k, v in totals.items()},
            "lr": run.optimizer.param_groups[0]["lr"],
            "grad_norm": float(grad_norm),
            "clips_per_s": interval.clips * self.dist.world / interval.seconds,
            "train_seconds": run.train_seconds,
            "skipped_steps": run.skipped,
            **{k: v for k, v in run.loader.counts().items() if k != "clips_seen"},  # bad clips, a mixture's draws
        }
        interval.seconds, interval.clips = 0.0, 0
        runlog.write(run.step, record)

    def _maybe_validate(self, run: TrainState, validator: Optional[Validator], runlog: RunLog) -> Optional[dict]:
        """Every `eval_every` steps and at the last: validation, the plateau schedule, and ``best.pt``; the metrics
        when it validated."""
        if not validator or not (run.step % self.cfg.eval_every == 0 or run.step == self.cfg.max_steps):
            return None
        run.model.eval()
        with torch.no_grad(), self._autocast():
            result = all_mean(validator.validate(run.model, run.step), self.dist)
            images = validator.images(run.model) if runlog.wants_images else {}
        run.schedule.after_eval(result[validator.monitor])
        runlog.write(run.step, result, "valid")
        runlog.images(run.step, images)
        value = result[validator.monitor]
        if run.best is None or (value > run.best if validator.mode == "max" else value < run.best):
            run.best = value
            self.checkpoints.save(run, best=True)
        return result

    def _maybe_probe(self, run: TrainState, probe: Optional[PeriodicProbe], runlog: RunLog) -> None:
        """The periodic representation probe, on the main process (the others wait at the next step)."""
        if probe and run.step % probe.every == 0 and self.dist.main:
            run.model.eval()
            with torch.no_grad():
                runlog.write(run.step, probe.probe(run.model), "probe")

    def _maybe_checkpoint(self, run: TrainState) -> None:
        if run.step % self.cfg.checkpoint_every == 0 or run.step == self.cfg.max_steps:
            self.checkpoints.save(run)

    def _maybe_stop(self, run: TrainState, received: list[int]) -> Optional[int]:
        """After a stop signal on any process: checkpoint, and every process stops at the same step; the signal
        (SIGTERM for one that reached another process only), or None."""
        if not any_rank(bool(received), self.dist):
            return None
        self.checkpoints.save(run)
        name = signal.Signals(received[0]).name if received else "a signal on another rank"
        log.info("%s: checkpoint written at step %d, stopping (resume=auto continues)", name, run.step)
        return received[0] if received else signal.SIGTERM
