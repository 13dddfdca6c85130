"""Proportions and speed of a training mixture's draws.

    python benchmarks/mixture.py [--sizes 2000000 280000] [--weights 3 1] [--draws 10000]

Draws `draws` running numbers from `ssast.data.sampling.MixtureSampler` over sources of `sizes` clips, with
`weights` (0: a source's size, the reference's concatenation), and prints each source's share (overall and
over each tenth of the draws), how many distinct clips each drew, and draws per second.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ssast.data.sampling import EpochSampler, MixtureSampler


def main() -> None:
    """Draw, then print the shares and the rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000_000, 280_000])
    parser.add_argument("--weights", type=float, nargs="+", default=[3.0, 1.0])
    parser.add_argument("--draws", type=int, default=10_000)
    args = parser.parse_args()
    starts = np.cumsum([0, *args.sizes])
    parts = [
        EpochSampler(range(a, b), (0, i + 1)) for i, (a, b) in enumerate(zip(starts[:-1], starts[1:], strict=True))
    ]
    weights = [w or n for w, n in zip(args.weights, args.sizes, strict=True)]
    sampler = MixtureSampler(parts, weights, seed=0)
    start = time.perf_counter()
    source, drawn = map(np.array, zip(*(sampler(n) for n in range(args.draws)), strict=True))
    rate = args.draws / (time.perf_counter() - start)
    expected = np.asarray(weights) / np.sum(weights)
    print(f"{args.draws} draws, {rate:.0f} draws/s")
    print(
        "| source | clips | weight | expected share | drawn share | share per tenth of the draws (min-max) | distinct |"
    )
    print("|---|---|---|---|---|---|---|")
    for i, n in enumerate(args.sizes):
        tenths = [np.mean(t == i) for t in np.array_split(source, 10)]
        print(
            f"| {i} | {n} | {weights[i]:g} | {expected[i]:.2%} | {np.mean(source == i):.2%} "
            f"| {min(tenths):.1%}-{max(tenths):.1%} | {len(set(drawn[source == i].tolist()))} |"
        )


if __name__ == "__main__":
    main()
