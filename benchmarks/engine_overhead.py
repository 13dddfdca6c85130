"""What the training engine costs per step: its steps/s on batches held in memory against the bare step.

    python benchmarks/engine_overhead.py [--size tiny] [--depth 1] [--input-tdim 128] [--mask-size 48] [--batch 8]

Both run the same model (the faithful pretraining objective, shared mask), the same batches and Adam: the bare step
is zero_grad, forward, backward, step; the engine (`ssast.train.engine.Trainer`) adds what a run needs around it:
the non-finite check (one host-device sync per step), gradient-norm clipping, the log every `--log-every` steps
and the final checkpoint, which is not timed. The loader hands out the same batch each step and notes when each
was asked for; the engine's rate is that of the steps after the first `--warmup`. Median of `--repeats` runs of
each, taking turns; bf16 autocast and the fused Adam on a GPU, fp32 on a CPU.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

import torch

from ssast.distributed import set_up
from ssast.models import ModelConfig, SSASTModel
from ssast.models.ast import SSLConfig
from ssast.train.engine import TrainConfig, Trainer
from ssast.train.optim import OptimConfig
from ssast.train.pretraining import PretrainUnit


class MemoryLoader:
    """The same batch at every step, and the time each step asked for it (the loader API the engine uses)."""

    def __init__(self, batch: dict):
        self.batch, self.asked = batch, []

    def __iter__(self):
        while True:
            self.asked.append(time.perf_counter())
            yield self.batch

    def counts(self) -> dict:
        """No clips read from files: nothing to count."""
        return {}

    def state_dict(self) -> dict:
        """Nothing to resume."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def engine_rate(model, batch, args, world, precision: str) -> float:
    """Steps/s of `Trainer.fit` after the warm-up steps."""
    loader = MemoryLoader(batch)
    cfg = TrainConfig(max_steps=args.warmup + args.steps, precision=precision, log_every=args.log_every,
                      checkpoint_every=10**9, tensorboard=False, device=str(world.device))  # fmt: skip
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(cfg, OptimConfig(schedule="constant"), world, run_dir, {}).fit(PretrainUnit(model), loader)
    return args.steps / (loader.asked[-1] - loader.asked[args.warmup])  # the last batch is asked after its step


def bare_rate(model, batch, args, device, precision: str) -> float:
    """Steps/s of zero_grad, forward, backward and step after the warm-up steps."""
    optim = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    g = torch.Generator().manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync(device)
            start = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        with autocast:
            loss = model(batch["fbank"], generator=g)["loss"]
        loss.backward()
        optim.step()
    sync(device)
    return args.steps / (time.perf_counter() - start)


def main() -> None:
    """Time the engine and the bare step in turns and print both rates and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--input-tdim", type=int, default=128)
    parser.add_argument("--mask-size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    world = set_up("auto", args.threads)
    logging.getLogger("ssast").setLevel(logging.WARNING)  # the runs' step lines
    device = world.device
    precision = "bf16" if device.type == "cuda" else "fp32"
    cfg = ModelConfig(size=args.size, depth=args.depth, input_tdim=args.input_tdim)
    ssl = SSLConfig(mask_size=args.mask_size, shared_mask=True, cluster=False)
    torch.manual_seed(0)
    model = SSASTModel(cfg, ssl).to(device)
    batch = {"fbank": torch.randn(args.batch, args.input_tdim, 128).to(device), "path": [""] * args.batch}
    rates = {"engine": [], "bare step": []}
    for _ in range(args.repeats):
        rates["engine"].append(engine_rate(model, batch, args, world, precision))
        rates["bare step"].append(bare_rate(model, batch, args, device, precision))
    engine, bare = (statistics.median(r) for r in rates.values())
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(
        f"device: {name}; {precision}; SSAST-{args.size}, {args.depth} layers, batch {args.batch} of "
        f"{args.input_tdim} x 128; median of {args.repeats} runs of {args.steps} steps\n"
        f"engine {engine:.2f} steps/s, bare step {bare:.2f} steps/s: the engine runs at {engine / bare:.2f}x the bare "
        f"step ({1e3 / engine - 1e3 / bare:+.2f} ms per step)"
    )


if __name__ == "__main__":
    main()
