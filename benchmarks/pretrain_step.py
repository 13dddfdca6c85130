"""Pretraining step throughput: the reference's approach against the project's modes, measured in one run.

    python benchmarks/pretrain_step.py [--sizes tiny base] [--batch 4] [--repeats 5] [--threads 2] [--compile]
    python benchmarks/pretrain_step.py --sizes tiny --depth 4 --input-tdim 128 --mask-size 48 --random --batch 32
        (the demo recipes' geometry)
    python benchmarks/pretrain_step.py --sizes base --batch max --compile   (on a GPU: the largest batch that fits)

Variants, each a full training step (forward, backward, Adam), by default on 1024 x 128 input, 400 masked patches:
  (a) reference: `reference_step.py` (per-clip Python masking loops, explicit attention, per-clip InfoNCE loop,
      two encoder passes, fp32);
  (b) faithful: the project's model (vectorised masks, fused attention, batched InfoNCE, two passes);
  (c) shared: faithful with ``ssl.shared_mask`` (one pass, one mask for both heads);
  (d) fast: encoder on the visible patches only, 2-block decoder, one mask (``configs/pretrain/*_fast.yaml``);
  with --compile, (b) to (d) again through ``torch.compile`` (``train.compile``; compile time not counted; with
  --batch max at the batch found for the eager variant).
The variants take turns, `--repeats` rounds of `--steps` steps each; prints the median clips/s of each and its
ratio against (a), the model FLOP per clip (forward and backward, `torch.utils.flop_counter`) and the achieved
TFLOP/s, with the fraction of the card's dense bf16 peak and the peak memory per step on a GPU (bf16 autocast
there by default, fp32 on CPU). Adam is fused on a GPU, as the engine runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # the reference, as tests use it
from reference_step import ReferenceStep  # noqa: E402

from ssast.models import ModelConfig, SSASTModel  # noqa: E402
from ssast.models.ast import SSLConfig  # noqa: E402
from ssast.train.pretraining import PretrainUnit  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1}  # dense, the vendors' sheets


def variants(cfg: ModelConfig, mask_size: int, cluster: bool, compiled: bool) -> dict:
    """{name: (model, step function)} of the pretraining steps compared, with the same initial weights."""
    torch.manual_seed(0)
    reference = ReferenceStep(SSASTModel(dataclasses.replace(cfg, fused_attn=False)))
    ssl = SSLConfig(mask_size=mask_size, cluster=cluster)
    faithful = SSASTModel(cfg, ssl)
    shared = SSASTModel(cfg, dataclasses.replace(ssl, shared_mask=True))
    shared.load_state_dict(faithful.state_dict())
    dim = faithful.v.embed_dim
    fast = SSASTModel(dataclasses.replace(cfg, decoder_depth=2, decoder_dim=dim, decoder_heads=dim // 64), ssl)
    models = {"(b) faithful": faithful, "(c) faithful, shared mask": shared, "(d) fast": fast}
    for name, model in list(models.items()) if compiled else []:
        twin = SSASTModel(model.cfg, model.ssl)
        twin.load_state_dict(model.state_dict())
        PretrainUnit(twin).compile()  # as train.compile does
        models[f"{name}, compiled"] = twin
    return {
        "(a) reference": (reference.model, lambda x, g: reference(x, mask_size, cluster)),
        **{name: (model, _step(model)) for name, model in models.items()},
    }


def _step(model: SSASTModel):
    return lambda x, g: model(x, generator=g)


def train_step(model, step, optim, x, g, autocast) -> None:
    """One optimiser step of a variant."""
    optim.zero_grad(set_to_none=True)
    with autocast:
        loss = step(x, g)["loss"]
    loss.backward()
    optim.step()


def flop_per_clip(model, step, x, autocast) -> float:
    """FLOP of one forward and backward pass, per clip, with attention computed explicitly: the arithmetic a fused
    kernel does too, which the counter does not see in every device's kernel."""
    attention = [m for m in model.modules() if hasattr(m, "fused_attn")]
    fused = [m.fused_attn for m in attention]
    for m in attention:
        m.fused_attn = False
    with FlopCounterMode(display=False) as counter:
        with autocast:
            loss = step(x, torch.Generator().manual_seed(0))["loss"]
        loss.backward()
    for m, f in zip(attention, fused, strict=True):
        m.fused_attn = f
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


def largest_batch(model, step, optim, start: int, shape: tuple[int, int], device, autocast) -> int:
    """The largest batch of `start` * 2^k that a training step fits in the GPU's memory."""
    fits, batch = 0, start
    while True:
        try:
            train_step(model, step, optim, torch.randn(batch, *shape, device=device), torch.Generator(), autocast)
            torch.cuda.synchronize()
            fits, batch = batch, batch * 2
        except torch.OutOfMemoryError:
            break
        finally:
            optim.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    if not fits:
        raise SystemExit(f"a batch of {start} does not fit")
    return fits


def main() -> None:
    """Time each variant's training step at the given geometry and print clips/s, the ratio to the reference, FLOP
    per clip and TFLOP/s."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batch", default="4", help="clips per step, or max: the largest 2^k x 24 that fits a GPU")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mask-size", type=int, default=400)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--input-tdim", type=int, default=1024)
    parser.add_argument("--random", action="store_true", help="uniform masks instead of cluster masks")
    parser.add_argument("--compile", action="store_true", help="add (b) to (d) through torch.compile")
    parser.add_argument("--precision", choices=["bf16", "fp32"], help="default: bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: known cards)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.batch == "max" and device.type != "cuda":
        parser.error("--batch max needs a GPU")
    torch.set_num_threads(args.threads)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    peak = args.peak_tflops or next((p for card, p in PEAK_BF16_TFLOPS.items() if card in name), None)
    print(
        f"device: {name}; {precision}; batch {args.batch}, {args.input_tdim} x 128 input, {args.depth} layers, "
        f"{args.mask_size} {'random' if args.random else 'cluster'}-masked patches, median of {args.repeats} "
        f"rounds of {args.steps} steps"
    )
    for size in args.sizes:
        cfg = ModelConfig(size=size, depth=args.depth, input_tdim=args.input_tdim)
        runs = variants(cfg, args.mask_size, not args.random, args.compile)
        fused = device.type == "cuda"
        optims = {k: torch.optim.Adam(m.to(device).parameters(), lr=1e-4, fused=fused) for k, (m, _) in runs.items()}
        shape = (args.input_tdim, 128)
        batches: dict[str, int] = {}
        for k, (m, step) in runs.items():  # a compiled variant takes its eager twin's batch: no compile per try
            twin = k.removesuffix(", compiled")
            if twin in batches:
                batches[k] = batches[twin]
            elif args.batch == "max":
                batches[k] = largest_batch(m, step, optims[k], 24, shape, device, autocast)
            else:
                batches[k] = int(args.batch)
        inputs = {
            k: torch.randn(b, *shape, generator=torch.Generator().manual_seed(0)).to(device) for k, b in batches.items()
        }
        flops = {k: flop_per_clip(m, step, inputs[k], autocast) for k, (m, step) in runs.items() if "compiled" not in k}
        g = torch.Generator().manual_seed(0)
        speeds: dict[str, list[float]] = {k: [] for k in runs}
        memory: dict[str, int] = {}
        for r in range(args.repeats + 1):  # round 0 warms up (and compiles)
            for k, (_, step) in runs.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                for _ in range(args.steps):
                    train_step(runs[k][0], step, optims[k], inputs[k], g, autocast)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    memory[k] = torch.cuda.max_memory_allocated()
                if r:
                    speeds[k].append(batches[k] * args.steps / (time.perf_counter() - start))
        base = statistics.median(speeds["(a) reference"])
        print(
            f"\n{size}:\n| variant | batch | clips/s | ratio to (a) | GFLOP/clip | TFLOP/s | of bf16 peak "
            "| peak memory |\n|---|---|---|---|---|---|---|---|"
        )
        for k, s in speeds.items():
            rate = statistics.median(s)
            flop = flops[k.removesuffix(", compiled")]
            tflops = flop * rate / 1e12
            share = f"{100 * tflops / peak:.1f}%" if peak else "n/a"
            mem = f"{memory[k] / 2**30:.2f} GiB" if k in memory else "n/a on CPU"
            print(
                f"| {k} | {batches[k]} | {rate:.2f} | {rate / base:.2f}x | {flop / 1e9:.2f} | {tflops:.3f} | {share} "
                f"| {mem} |"
            )


if __name__ == "__main__":
    main()
