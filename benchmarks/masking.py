"""Cluster masking: the reference's per-clip Python loop against `ssast.models.masking.cluster_patch_mask`.

    python benchmarks/masking.py [--batch 120] [--repeats 5]

Both draw masks of 400 patches on the 8 x 64 patch grid of a 1024-frame input; prints the median time per clip
of each and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))  # the reference, as tests use it
from reference_step import reference_mask  # noqa: E402

from ssast.models.masking import cluster_patch_mask  # noqa: E402


def main() -> None:
    """Time the reference's cluster masking loop against `cluster_patch_mask` and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) / args.batch

    def loop():
        return torch.stack([reference_mask(512, 400, 64, cluster=True) for _ in range(args.batch)])

    def vectorised():
        return cluster_patch_mask(args.batch, 512, 400, 64, generator)

    runs = [(timed(loop), timed(vectorised)) for _ in range(args.repeats)]
    ref, ours = (statistics.median(r) for r in zip(*runs, strict=True))
    print(
        f"cluster mask 400/512, batch {args.batch}, 1 thread: reference loop {ref * 1e3:.3f} ms/clip, "
        f"vectorised {ours * 1e3:.3f} ms/clip, ratio {ref / ours:.1f}x"
    )


if __name__ == "__main__":
    main()
