"""The training engine shared by pretraining and fine-tuning.

One `Trainer` runs a `Task` (what a step computes and how validation scores it) with: single process or DDP,
fp32 / bf16 / fp16 autocast (a grad scaler for fp16), gradient accumulation and clipping, the reference's
optimiser and schedules or modern ones, atomic checkpoints (every N steps and on SIGTERM / SIGUSR1 / SIGUSR2)
that resume exactly (model, optimiser, scheduler, scaler, the run's generator, data pipeline, step), and logs
(``metrics.jsonl``, TensorBoard, a progress line with clips/s and ETA).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ssast.distributed import Dist, all_mean, any_rank, init_distributed
from ssast.models.checkpoint import load_state, model_state, read

log = logging.getLogger("ssast")


@dataclass
class OptimConfig:
    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    weight_decay: float = 5e-7
    # reference: staircase warm-up (every 50 steps lr = step / warmup_steps * lr), then halve on a plateau of
    # the monitored validation metric; cosine: linear warm-up then cosine decay to min_lr; constant.
    schedule: Literal["reference", "cosine", "constant"] = "reference"
    warmup_steps: int = 1000
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    max_steps: int = 100_000
    seed: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_accum: int = 1  # micro-batches per optimiser step
    clip_grad: float = 0.0  # max gradient norm; 0 = no clipping (the norm is logged either way)
    log_every: int = 10
    eval_every: int = 800
    checkpoint_every: int = 800
    keep_last: int = 2  # step checkpoints kept besides last.pt and best.pt
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    tensorboard: bool = True


class Task(Protocol):
    """What a stage trains: the model, one step's losses, and validation."""

    model: nn.Module
    monitor: str  # validation metric for the plateau schedule and best.pt (higher is better)

    def step(self, model: nn.Module, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Losses of one micro-batch; "loss" is minimised, the others are logged."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics of this process's share of the validation set."""

    def images(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Images [3, H, W] in [0, 1] for TensorBoard at each validation."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup_logging(main: bool) -> None:
    logging.basicConfig(level=logging.INFO if main else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


class Schedule:
    """Learning rate per step, plus the reference's ReduceLROnPlateau on the monitored metric."""

    def __init__(self, cfg: OptimConfig, optimizer: torch.optim.Optimizer, max_steps: int):
        self.cfg, self.optimizer, self.max_steps = cfg, optimizer, max_steps
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience)

    def _set(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def before_step(self, step: int) -> None:
        c = self.cfg
        if c.schedule == "reference":
            if step <= c.warmup_steps and step % 50 == 0:  # staircase from 0, as the reference
                self._set(step / c.warmup_steps * c.lr)
        elif c.schedule == "cosine":
            if step < c.warmup_steps:
                self._set(c.lr * (step + 1) / c.warmup_steps)
            else:
                progress = (step - c.warmup_steps) / max(1, self.max_steps - c.warmup_steps)
                self._set(c.min_lr + (c.lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

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


class Trainer:
    def __init__(self, cfg: TrainConfig, optim: OptimConfig, run_dir: str | Path, run_config: dict,
                 find_unused_parameters: bool = False):
        self.cfg, self.optim_cfg, self.run_config = cfg, optim, run_config
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
        self.step = 0
        self.best = -math.inf
        self._saved_step = -1
        self._signal: Optional[int] = None

    # -- set-up -------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.cfg.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _on_signal(self, signum, frame) -> None:
        self._signal = signum  # acted on between steps: checkpoint, then stop

    def _install_signals(self) -> None:
        for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(s, self._on_signal)

    # -- checkpoints --------------------------------------------------------------------------------------
    def save(self, model: nn.Module, optimizer, schedule: Schedule, scaler, generator, loader,
             best: bool = False) -> None:
        """Checkpoint the whole run state as ``step_N.pt``, linked as ``last.pt`` (and ``best.pt``). Under DDP
        each rank also writes its own generator and data-pipeline state beside it."""
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        if self._saved_step != self.step:
            self._write(path, model, optimizer, schedule, scaler, generator, loader)
            self._saved_step = self.step
        if best and self.dist.main:
            _link(path, self.ckpt_dir / "best.pt")

    def _write(self, path: Path, model, optimizer, schedule, scaler, generator, loader) -> None:
        state = {**model_state(model), "step": self.step, "best": self.best, "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
                 "generator": generator.get_state(), "data": loader.state_dict(), "config": self.run_config}
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.world > 1:  # each rank keeps its own data-pipeline and generator state
            atomic_save({"generator": state["generator"], "data": state["data"]},
                        self.ckpt_dir / f"rank{self.dist.rank}_step_{self.step:08d}.pt")
        if not self.dist.main:
            return
        atomic_save(state, path)
        _link(path, self.ckpt_dir / "last.pt")
        for old in sorted(self.ckpt_dir.glob("step_*.pt"))[: -self.cfg.keep_last or None]:
            old.unlink()
        for old in self.ckpt_dir.glob("rank*_step_*.pt"):
            if int(old.stem.rsplit("_", 1)[1]) < self.step - self.cfg.keep_last * self.cfg.checkpoint_every:
                old.unlink(missing_ok=True)

    def restore(self, path: Path, model, optimizer, schedule, scaler, generator, loader) -> None:
        state = read(path)
        load_state(model, state["model"], f"checkpoint {path}")
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        self.step, self.best = state["step"], state["best"]
        self._saved_step = self.step
        if self.dist.world > 1:
            state = read(self.ckpt_dir / f"rank{self.dist.rank}_step_{self.step:08d}.pt")
        generator.set_state(state["generator"])
        loader.load_state_dict(state["data"])
        log.info("resumed from %s at step %d", path, self.step)

    # -- logging ------------------------------------------------------------------------------------------
    def _open_logs(self):
        if not self.dist.main:
            return None, None
        metrics = self.run_dir / "metrics.jsonl"
        if metrics.exists():  # drop lines of steps after the checkpoint we resumed from
            keep = [l for l in metrics.read_text().splitlines() if l and json.loads(l).get("step", 0) <= self.step]
            metrics.write_text("".join(l + "\n" for l in keep))
        writer = None
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1)
        return open(metrics, "a"), writer

    def _progress(self, record: dict, start: float, start_step: int) -> None:
        done = self.step - start_step
        eta = (time.perf_counter() - start) / max(done, 1) * (self.cfg.max_steps - self.step)
        line = (f"step {self.step}/{self.cfg.max_steps} loss {record['loss']:.4f} lr {record['lr']:.2e} "
                f"{record['clips_per_s']:.1f} clips/s eta {int(eta) // 60}m{int(eta) % 60:02d}s")
        if sys.stderr.isatty():
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            log.info(line)

    # -- the loop -----------------------------------------------------------------------------------------
    def fit(self, task: Task, loader, resume: str = "none") -> dict:
        cfg = self.cfg
        model = task.model.to(self.device)
        optimizer = build_optimizer(self.optim_cfg, model)
        schedule = Schedule(self.optim_cfg, optimizer, cfg.max_steps)
        scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + self.dist.rank)
        run_state = (model, optimizer, schedule, scaler, generator, loader)
        checkpoint = self._resume_path(resume)
        if checkpoint is not None:
            self.restore(checkpoint, *run_state)
        ddp = model if self.dist.world == 1 else DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.find_unused)
        metrics_file, writer = self._open_logs()
        self._install_signals()
        batches: Iterator = iter(loader)
        start, start_step, last_log, clips = time.perf_counter(), self.step, time.perf_counter(), 0
        last_eval: dict = {}
        try:
            while self.step < cfg.max_steps:
                schedule.before_step(self.step)
                model.train()
                optimizer.zero_grad(set_to_none=True)
                totals: dict[str, float] = {}
                for micro in range(cfg.grad_accum):
                    batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                             for k, v in next(batches).items()}
                    sync = micro == cfg.grad_accum - 1 or self.dist.world == 1
                    with (nullcontext() if sync else ddp.no_sync()), self._autocast():
                        out = task.step(ddp, batch, generator)
                    scaler.scale(out["loss"] / cfg.grad_accum).backward()
                    for k, v in out.items():
                        totals[k] = totals.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
                    clips += batch["fbank"].shape[0]
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad or math.inf)
                scaler.step(optimizer)
                scaler.update()
                self.step += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    now = time.perf_counter()
                    record = {"step": self.step, **totals, "lr": optimizer.param_groups[0]["lr"],
                              "grad_norm": float(grad_norm), "clips_per_s": clips * self.dist.world / (now - last_log),
                              "bad_clips": loader.bad.bad}
                    last_log, clips = now, 0
                    self._log(record, metrics_file, writer, start, start_step)
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                    last_eval = self._evaluate(task, model, schedule, writer, metrics_file)
                    if last_eval[task.monitor] > self.best:
                        self.best = last_eval[task.monitor]
                        self.save(*run_state, best=True)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                    self.save(*run_state)
                if any_rank(self._signal is not None, self.dist):  # every rank stops at the same step
                    self.save(*run_state)
                    log.info("signal %s: checkpoint written at step %d, stopping", self._signal, self.step)
                    break
        finally:
            if metrics_file:
                metrics_file.close()
            if writer:
                writer.close()
        return last_eval

    def _resume_path(self, resume: str) -> Optional[Path]:
        if resume == "none":
            return None
        if resume == "auto":
            last = self.ckpt_dir / "last.pt"
            return last if last.exists() else None
        return Path(resume)

    def _log(self, record: dict, metrics_file, writer, start: float, start_step: int) -> None:
        if not self.dist.main:
            return
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        if writer:
            for k, v in record.items():
                if k != "step":
                    writer.add_scalar(f"train/{k}", v, self.step)
        self._progress(record, start, start_step)

    def _evaluate(self, task: Task, model: nn.Module, schedule: Schedule, writer, metrics_file) -> dict:
        model.eval()
        with torch.no_grad(), self._autocast():
            result = all_mean(task.evaluate(model), self.dist)
            images = task.images(model) if writer else {}
        schedule.after_eval(result[task.monitor])
        if self.dist.main:
            if sys.stderr.isatty():
                print(file=sys.stderr)
            log.info("valid step %d: %s", self.step, " ".join(f"{k} {v:.4f}" for k, v in result.items()))
            metrics_file.write(json.dumps({"step": self.step, **{f"valid_{k}": v for k, v in result.items()}}) + "\n")
            metrics_file.flush()
            if writer:
                for k, v in result.items():
                    writer.add_scalar(f"valid/{k}", v, self.step)
                for k, img in images.items():
                    writer.add_image(k, img, self.step)
        return result

