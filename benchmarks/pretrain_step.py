"""Pretraining step throughput: the reference's approach against the project's modes, measured in one run.

    python benchmarks/pretrain_step.py [--sizes tiny base] [--batch 4] [--repeats 5] [--threads 2]
    python benchmarks/pretrain_step.py --sizes tiny --depth 4 --input-tdim 128 --mask-size 48 --random --batch 32
        (the demo recipes' geometry)

Variants, each a full training step (forward, backward, Adam), by default on 1024 x 128 input, 400 masked patches:
  (a) reference: `reference_step.py` (per-clip Python masking loops, explicit attention, per-clip InfoNCE loop,
      two encoder passes, fp32);
  (b) faithful: the project's model (vectorised masks, fused attention, batched InfoNCE, two passes);
  (c) shared: faithful with ``ssl.shared_mask`` (one pass, one mask for both heads);
  (d) fast: encoder on the visible patches only, 2-block decoder, one mask (``configs/pretrain/*_fast.yaml``).
The variants take turns, `--repeats` rounds of `--steps` steps each; prints the median clips/s of each and its
ratio against (a), with peak memory per step on a GPU (bf16 autocast there, fp32 on CPU) and the device.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # the reference, as tests use it
from reference_step import ReferenceStep  # noqa: E402

from ssast.models import ModelConfig, SSASTModel  # noqa: E402
from ssast.models.ast import SSLConfig  # noqa: E402


def variants(cfg: ModelConfig, mask_size: int, cluster: bool) -> dict:
    """{name: (model, step function)} of the pretraining steps compared, with the same initial weights."""
    torch.manual_seed(0)
    reference = ReferenceStep(SSASTModel(dataclasses.replace(cfg, fused_attn=False)))
    ssl = SSLConfig(mask_size=mask_size, cluster=cluster)
    faithful = SSASTModel(cfg, ssl)
    shared = SSASTModel(cfg, dataclasses.replace(ssl, shared_mask=True))
    shared.load_state_dict(faithful.state_dict())
    dim = faithful.v.embed_dim
    fast = SSASTModel(dataclasses.replace(cfg, decoder_depth=2, decoder_dim=dim, decoder_heads=dim // 64), ssl)
    return {
        "(a) reference": (reference.model, lambda x, g: reference(x, mask_size, cluster)),
        "(b) faithful": (faithful, lambda x, g: faithful(x, generator=g)),
        "(c) faithful, shared mask": (shared, lambda x, g: shared(x, generator=g)),
        "(d) fast": (fast, lambda x, g: fast(x, generator=g)),
    }


def main() -> None:
    """Time each variant's training step at the given geometry and print clips/s and the ratio to the reference."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mask-size", type=int, default=400)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--input-tdim", type=int, default=1024)
    parser.add_argument("--random", action="store_true", help="uniform masks instead of cluster masks")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(
        f"device: {name}; batch {args.batch}, {args.input_tdim} x 128 input, {args.depth} layers, "
        f"{args.mask_size} {'random' if args.random else 'cluster'}-masked patches, median of {args.repeats} "
        f"rounds of {args.steps} steps"
    )
    for size in args.sizes:
        cfg = ModelConfig(size=size, depth=args.depth, input_tdim=args.input_tdim)
        runs = variants(cfg, args.mask_size, not args.random)
        optims = {k: torch.optim.Adam(m.to(device).parameters(), lr=1e-4) for k, (m, _) in runs.items()}
        x = torch.randn(args.batch, args.input_tdim, 128, generator=torch.Generator().manual_seed(0)).to(device)
        g = torch.Generator().manual_seed(0)
        speeds: dict[str, list[float]] = {k: [] for k in runs}
        memory: dict[str, int] = {}
        for r in range(args.repeats + 1):  # round 0 warms up
            for k, (_, step) in runs.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                for _ in range(args.steps):
                    optims[k].zero_grad(set_to_none=True)
                    with autocast:
                        loss = step(x, g)["loss"]
                    loss.backward()
                    optims[k].step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    memory[k] = torch.cuda.max_memory_allocated()
                if r:
                    speeds[k].append(args.batch * args.steps / (time.perf_counter() - start))
        base = statistics.median(speeds["(a) reference"])
        print(f"\n{size}:\n| variant | clips/s | ratio to (a) | peak memory |\n|---|---|---|---|")
        for k, s in speeds.items():
            mem = f"{memory[k] / 2**30:.2f} GiB" if k in memory else "n/a on CPU"
            print(f"| {k} | {statistics.median(s):.2f} | {statistics.median(s) / base:.2f}x | {mem} |")


if __name__ == "__main__":
    main()
