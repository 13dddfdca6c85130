"""The training engine shared by pretraining and fine-tuning.

One `Trainer` runs a `Task` (what a step computes and how validation scores it) with: single process or DDP,
fp32 / bf16 / fp16 autocast (a grad scaler for fp16), gradient accumulation and clipping, the reference's
optimiser and schedules or modern ones, atomic checkpoints (every N steps and on SIGINT / SIGTERM / SIGUSR1 /
SIGUSR2) that resume exactly from any of them (model, optimiser, scheduler, scaler, each rank's generator and
data pipeline, step), steps with a non-finite loss or gradient skipped and counted, and logs (``metrics.jsonl``,
TensorBoard, a progress line with clips/s and ETA).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ssast.config import NonNegative, NonNegativeFloat, Positive, Range, invalid, save_config
from ssast.distributed import Dist, all_mean, all_true, any_rank, barrier, gather, init_distributed
from ssast.models.checkpoint import CheckpointError, load_state, model_state, read, weights_hash

log = logging.getLogger("ssast")


@dataclass
class OptimConfig:
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


@dataclass
class TrainConfig:
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

    def __post_init__(self):
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise invalid("device", self.device, "auto, cpu, cuda or cuda:N")


class RunError(RuntimeError):
    """A run that cannot start or go on (a run folder in the way, diverged training); one line for the user."""


class Task(Protocol):
    """What a stage trains: the model, one step's losses, and validation."""

    model: nn.Module
    # Validation metric for the plateau schedule and best.pt, and whether higher ("max") or lower ("min") is
    # better; None: the task has no validation data (no validation, no best.pt).
    monitor: Optional[str]
    mode: Literal["max", "min"]

    def step(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch; "loss" is minimised, the others are logged."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics of this process's share of the validation set."""

    def images(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Images [3, H, W] in [0, 1] for TensorBoard at each validation."""

    # Optional: ``param_groups()`` (optimiser groups, see `build_optimizer`), ``epoch_steps`` (steps per epoch,
    # for the multistep schedule), ``state_dict()`` / ``load_state_dict()`` (state that checkpoints keep, such
    # as running averages over validations), ``probe_every`` and ``probe(model) -> dict`` (a representation
    # probe every that many steps, logged as probe_<name>).


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup_logging(main: bool) -> None:
    logging.basicConfig(level=logging.INFO if main else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def build_optimizer(cfg: OptimConfig, model: nn.Module, groups: Optional[list[dict]] = None) -> torch.optim.Optimizer:
    """Adam(W) over `groups` (dicts with "params" and an optional "lr_scale" and "frozen_until" step, see
    `Schedule`), or over all trainable parameters."""
    groups = groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


class Schedule:
    """Learning rate per step, plus the reference's ReduceLROnPlateau on the monitored metric. A parameter
    group's rate is the schedule's times its "lr_scale" (head multiplier, layer-wise decay), and 0 before its
    "frozen_until" step (an encoder frozen for the first epochs)."""

    def __init__(self, cfg: OptimConfig, optimizer: torch.optim.Optimizer, max_steps: int,
                 mode: Literal["max", "min"] = "max", epoch_steps: Optional[int] = None):
        if cfg.schedule == "multistep" and not epoch_steps:
            raise ValueError("the multistep schedule needs the number of steps per epoch")
        self.cfg, self.optimizer, self.max_steps, self.epoch_steps = cfg, optimizer, max_steps, epoch_steps
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience)

    def _set(self, lr: float, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0) * (step >= group.get("frozen_until", 0))

    def _staircase(self, step: int) -> float:
        """The reference's warm-up factor: step / warmup_steps, updated every 50 steps, from 0."""
        return min(1.0, step // 50 * 50 / self.cfg.warmup_steps) if self.cfg.warmup_steps else 1.0

    def before_step(self, step: int) -> None:
        c = self.cfg
        if c.schedule == "reference":
            if step <= c.warmup_steps and step % 50 == 0:  # staircase from 0, as the reference
                self._set(self._staircase(step) * c.lr, step)
        elif c.schedule == "multistep":  # torch's MultiStepLR stepped at each epoch's end, as the reference
            milestones = max(0, (step // self.epoch_steps - c.decay_start) // c.decay_every + 1)
            self._set(self._staircase(step) * c.lr * c.decay_factor ** milestones, step)
        elif c.schedule == "cosine":
            if step < c.warmup_steps:
                self._set(c.lr * (step + 1) / c.warmup_steps, step)
            else:
                progress = (step - c.warmup_steps) / max(1, self.max_steps - c.warmup_steps)
                self._set(c.min_lr + (c.lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))), step)
        else:
            self._set(c.lr, step)

    def after_eval(self, metric: float) -> None:
        if self.cfg.schedule == "reference":
            self.plateau.step(metric)

    def state_dict(self) -> dict:
        return {"plateau": self.plateau.state_dict(), "lr": [g["lr"] for g in self.optimizer.param_groups]}

    def load_state_dict(self, state: dict) -> None:
        self.plateau.load_state_dict(state["plateau"])
        for group, lr in zip(self.optimizer.param_groups, state["lr"]):
            group["lr"] = lr


def atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a kill never leaves a torn file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _link(src: Path, dst: Path) -> None:
    """Point `dst` at `src`'s data atomically (hard link, or a copy where links are not supported)."""
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


RUN_FILES = ("metrics.jsonl", "checkpoints", "tensorboard")  # what a run that has started leaves in its folder
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def _step_of(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


@dataclass
class RunState:
    """Everything a checkpoint restores. The model, optimiser, schedule and scaler are the same on every
    process; the generator and the data pipeline are each process's own, so a checkpoint holds one of those
    per rank and any checkpoint of the run (``step_N.pt``, ``best.pt``) resumes exactly."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    loader: Any
    task: Any = None
    step: int = 0
    best: Optional[float] = None  # best monitored validation value so far
    skipped: int = 0  # steps skipped for a non-finite loss or gradient

    def local_state(self) -> dict:
        return {"generator": self.generator.get_state(), "data": self.loader.state_dict()}

    def state_dict(self, ranks: list[dict]) -> dict:
        return {**model_state(self.model), "step": self.step, "best": self.best, "skipped_steps": self.skipped,
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(), "ranks": ranks,
                **({"task": self.task.state_dict()} if hasattr(self.task, "state_dict") else {})}

    def load_state_dict(self, state: dict, path: Path, d: Dist) -> None:
        if "optimizer" not in state:
            raise CheckpointError(f"{path} holds model weights only, not a run to resume: start from its weights "
                                  f"with init={path}")
        if len(state["ranks"]) != d.world:
            raise CheckpointError(f"{path} was written by {len(state['ranks'])} process(es); resume it with that "
                                  f"many (this run has {d.world})")
        load_state(self.model, state["model"], f"checkpoint {path}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best, self.skipped = state["step"], state["best"], state["skipped_steps"]
        self.generator.set_state(state["ranks"][d.rank]["generator"])
        self.loader.load_state_dict(state["ranks"][d.rank]["data"])
        if "task" in state:
            self.task.load_state_dict(state["task"])


class Trainer:
    """Runs a `Task` in a run folder. Construction checks the folder (a run already there is continued only with
    ``resume``, replaced only with ``overwrite``) and writes the resolved configuration."""

    def __init__(self, cfg: TrainConfig, optim: OptimConfig, run_dir: str | Path, run_config: dict,
                 resume: str = "none", overwrite: bool = False, find_unused_parameters: bool = False):
        self.cfg, self.optim_cfg, self.run_config, self.resume = cfg, optim, run_config, resume
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dist: Dist = init_distributed(self.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank if cfg.device in ("auto", "cuda") else self.device.index)
            torch.cuda.set_device(self.device)
        setup_logging(self.dist.main)
        self.find_unused = find_unused_parameters
        self._saved_step = -1
        self._signals: list[int] = []  # received during fit, in order
        self._open_run_dir(overwrite)

    def _open_run_dir(self, overwrite: bool) -> None:
        existing = [name for name in RUN_FILES if (self.run_dir / name).exists()]
        if existing and self.resume == "none" and not overwrite:
            raise RunError(f"{self.run_dir} already holds a run ({', '.join(existing)}): continue it with "
                           f"resume=auto, choose another run_dir, or pass overwrite=true to replace it")
        barrier(self.dist)  # every rank has looked before the main one writes
        if self.dist.main:
            if overwrite and self.resume == "none":  # only what a run writes: never the folder itself
                for name in existing:
                    path = self.run_dir / name
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.run_config, self.run_dir / "config.yaml")

    # -- set-up -------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.cfg.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _on_signal(self, signum, frame) -> None:
        self._signals.append(signum)  # acted on between steps: checkpoint, then stop

    # -- checkpoints --------------------------------------------------------------------------------------
    def save(self, run: RunState, best: bool = False) -> None:
        """Checkpoint the whole run state as ``step_N.pt``, linked as ``last.pt`` (and ``best.pt``)."""
        path = self.ckpt_dir / f"step_{run.step:08d}.pt"
        if self._saved_step != run.step:
            # Each rank's weights hash travels with its state: the bytes are equal on every rank under DDP.
            ranks = gather({**run.local_state(), "weights": weights_hash(run.model)}, self.dist)
            if not all(p.isfinite().all() for p in run.model.parameters()):  # such steps are skipped: guard anyway
                raise RunError(f"refusing to write a checkpoint with non-finite weights at step {run.step}")
            if len({r["weights"] for r in ranks}) > 1:
                raise RunError(f"the processes' weights differ at step {run.step} (hashes "
                               f"{[r['weights'][:12] for r in ranks]}): refusing to checkpoint a diverged run")
            if self.dist.main:
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                atomic_save({**run.state_dict(ranks), "config": self.run_config}, path)
                _link(path, self.ckpt_dir / "last.pt")
                self._prune(run.step)
            self._saved_step = run.step
        if best and self.dist.main:
            _link(path, self.ckpt_dir / "best.pt")

    def _prune(self, step: int) -> None:
        """Keep the newest `keep_last` step checkpoints; drop those of steps after `step` (a run resumed from an
        older checkpoint abandons them, as it drops their metrics)."""
        steps = sorted(self.ckpt_dir.glob("step_*.pt"), key=_step_of)
        kept = [p for p in steps if _step_of(p) <= step][-self.cfg.keep_last or len(steps):]
        for old in set(steps) - set(kept):
            old.unlink()

    def _checkpoint_to_resume(self) -> Optional[tuple[Path, dict]]:
        """(path, state) of the checkpoint `resume` names. ``auto``: ``last.pt``, or, if it cannot be read, the
        newest readable ``step_N.pt`` (with a warning); None when the folder holds no checkpoint yet."""
        if self.resume == "none":
            return None
        if self.resume != "auto":
            return Path(self.resume), read(self.resume)
        candidates = [self.ckpt_dir / "last.pt", *sorted(self.ckpt_dir.glob("step_*.pt"), key=_step_of, reverse=True)]
        candidates = [p for p in candidates if p.exists()]
        for path in candidates:
            try:
                return path, read(path)
            except CheckpointError as e:
                log.warning("%s; trying an older checkpoint", e)
        if candidates:
            raise CheckpointError(f"no readable checkpoint in {self.ckpt_dir}: start a fresh run_dir")
        return None

    # -- logging ------------------------------------------------------------------------------------------
    def _open_logs(self, step: int):
        if not self.dist.main:
            return None, None
        metrics = self.run_dir / "metrics.jsonl"
        if metrics.exists():  # drop lines of steps after the checkpoint we resumed from
            keep = [l for l in metrics.read_text().splitlines() if l and json.loads(l).get("step", 0) <= step]
            metrics.write_text("".join(l + "\n" for l in keep))
        writer = None
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=step + 1)
        return open(metrics, "a"), writer

    def _progress(self, record: dict, start: float, start_step: int) -> None:
        done = record["step"] - start_step
        eta = (time.perf_counter() - start) / max(done, 1) * (self.cfg.max_steps - record["step"])
        line = (f"step {record['step']}/{self.cfg.max_steps} loss {record['loss']:.4f} lr {record['lr']:.2e} "
                f"{record['clips_per_s']:.1f} clips/s eta {int(eta) // 60}m{int(eta) % 60:02d}s")
        if sys.stderr.isatty():
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            log.info(line)

    # -- the loop -----------------------------------------------------------------------------------------
    def fit(self, task: Task, loader) -> dict:
        cfg = self.cfg
        model = task.model.to(self.device)
        optimizer = build_optimizer(self.optim_cfg, model, getattr(task, "param_groups", lambda: None)())
        schedule = Schedule(self.optim_cfg, optimizer, cfg.max_steps, task.mode, getattr(task, "epoch_steps", None))
        run = RunState(model, optimizer, schedule,
                       torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16"),
                       torch.Generator().manual_seed(cfg.seed * 1000 + self.dist.rank), loader, task)
        resumed = self._checkpoint_to_resume()
        if resumed is not None:
            run.load_state_dict(resumed[1], resumed[0], self.dist)
            self._saved_step = run.step
            log.info("resumed from %s at step %d", resumed[0], run.step)
        log.info("device %s, precision %s, %d process(es), run folder %s", self.device, cfg.precision, self.dist.world,
                 self.run_dir)
        if task.monitor is None:
            log.info("no validation data: training without validation; checkpoints keep last.pt, no best.pt")
        ddp = model if self.dist.world == 1 else DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.find_unused)
        metrics_file, writer = self._open_logs(run.step)
        handlers = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        batches: Iterator = iter(loader)
        start, start_step, last_log, clips = time.perf_counter(), run.step, time.perf_counter(), 0
        in_a_row, last_eval = 0, {}
        try:
            while run.step < cfg.max_steps:
                run.schedule.before_step(run.step)
                model.train()
                optimizer.zero_grad(set_to_none=True)
                totals: dict[str, torch.Tensor] = {}
                paths: list[str] = []
                for micro in range(cfg.grad_accum):
                    batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                             for k, v in next(batches).items()}
                    sync = micro == cfg.grad_accum - 1 or self.dist.world == 1
                    with (nullcontext() if sync else ddp.no_sync()), self._autocast():
                        out = task.step(ddp, batch, generator=run.generator)
                    run.scaler.scale(out["loss"] / cfg.grad_accum).backward()
                    for k, v in out.items():  # on the device: read only at log steps
                        totals[k] = totals.get(k, 0.0) + v.detach().float() / cfg.grad_accum
                    paths += batch["path"]
                clips += len(paths)
                run.scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad or math.inf)
                # fp16: the grad scaler skips steps with non-finite gradients itself (and lowers its scale)
                finite = totals["loss"].isfinite() & (grad_norm.isfinite() if cfg.precision != "fp16" else True)
                if all_true(finite, self.dist):
                    run.scaler.step(optimizer)
                    in_a_row = 0
                else:
                    run.skipped, in_a_row = run.skipped + 1, in_a_row + 1
                    log.warning("step %d: non-finite loss %s or gradient norm %s; optimiser not stepped (%d in a "
                                "row); clips: %s", run.step + 1, float(totals["loss"]), float(grad_norm), in_a_row,
                                " ".join(paths))
                run.scaler.update()
                run.step += 1
                if in_a_row > cfg.max_skipped_steps:
                    self.save(run)  # the weights are those of the last finite step
                    raise RunError(f"{in_a_row} steps in a row had a non-finite loss or gradient (the last at step "
                                   f"{run.step}; limit train.max_skipped_steps={cfg.max_skipped_steps}); checkpoint "
                                   f"written: lower optim.lr, set train.clip_grad or check the data")
                if run.step % cfg.log_every == 0 or run.step in (1, cfg.max_steps):  # step 1: shows it runs
                    now = time.perf_counter()
                    record = {"step": run.step, **{k: float(v) for k, v in totals.items()},
                              "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                              "clips_per_s": clips * self.dist.world / (now - last_log), "bad_clips": loader.bad.bad,
                              "skipped_steps": run.skipped}
                    last_log, clips = now, 0
                    self._log(record, metrics_file, writer, start, start_step)
                if task.monitor and (run.step % cfg.eval_every == 0 or run.step == cfg.max_steps):
                    last_eval = self._evaluate(task, model, run.schedule, writer, metrics_file, run.step)
                    value = last_eval[task.monitor]
                    if run.best is None or (value > run.best if task.mode == "max" else value < run.best):
                        run.best = value
                        self.save(run, best=True)
                if getattr(task, "probe_every", 0) and run.step % task.probe_every == 0:
                    self._probe(task, model, writer, metrics_file, run.step)
                if run.step % cfg.checkpoint_every == 0 or run.step == cfg.max_steps:
                    self.save(run)
                if any_rank(bool(self._signals), self.dist):  # every rank stops at the same step
                    self.save(run)
                    name = signal.Signals(self._signals[0]).name if self._signals else "a signal on another rank"
                    log.info("%s: checkpoint written at step %d, stopping (resume=auto continues)", name, run.step)
                    break
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
            if metrics_file:
                metrics_file.close()
            if writer:
                writer.close()
        # A launcher that asked to hear of these signals (submitit requeues the job on SIGUSR2) is told once the
        # checkpoint is written; the interpreter's own Ctrl-C handler is not (it would raise KeyboardInterrupt).
        for s in dict.fromkeys(self._signals):
            if callable(handlers[s]) and handlers[s] is not signal.default_int_handler:
                signal.raise_signal(s)
        return last_eval

    def _write(self, step: int, values: dict, section: str, metrics_file, writer) -> None:
        """One metrics.jsonl line (keys prefixed ``<section>_`` but for train) and TensorBoard scalars."""
        prefix = "" if section == "train" else f"{section}_"
        metrics_file.write(json.dumps({"step": step, **{prefix + k: v for k, v in values.items()}}) + "\n")
        metrics_file.flush()
        if writer:
            for k, v in values.items():
                writer.add_scalar(f"{section}/{k}", v, step)

    def _log(self, record: dict, metrics_file, writer, start: float, start_step: int) -> None:
        if not self.dist.main:
            return
        self._write(record["step"], {k: v for k, v in record.items() if k != "step"}, "train", metrics_file, writer)
        self._progress(record, start, start_step)

    def _probe(self, task: Task, model: nn.Module, writer, metrics_file, step: int) -> None:
        """The task's periodic representation probe, on the main process (the others wait at the next step)."""
        if self.dist.main:
            model.eval()
            with torch.no_grad():
                result = task.probe(model)
            log.info("probe step %d: %s", step, " ".join(f"{k} {v:.4f}" for k, v in result.items()))
            self._write(step, result, "probe", metrics_file, writer)

    def _evaluate(self, task: Task, model: nn.Module, schedule: Schedule, writer, metrics_file, step: int) -> dict:
        model.eval()
        with torch.no_grad(), self._autocast():
            result = all_mean(task.evaluate(model), self.dist)
            images = task.images(model) if writer else {}
        schedule.after_eval(result[task.monitor])
        if self.dist.main:
            if sys.stderr.isatty():
                print(file=sys.stderr)
            log.info("valid step %d: %s", step, " ".join(f"{k} {v:.4f}" for k, v in result.items()))
            self._write(step, result, "valid", metrics_file, writer)
            for k, img in images.items():
                writer.add_image(k, img, step)
        return result
