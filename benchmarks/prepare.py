"""Speed of corpus preparation: clips/s per worker of ``python -m ssast.data.prepare`` on AudioSet-like clips.

    python benchmarks/prepare.py [--clips 64] [--workers 1 2] [--repeats 3] [--work /tmp/ssast-prepare]

`clips` 10-s 44.1-kHz stereo FLAC clips of noise (AudioSet as downloaded: YouTube audio, most of it 44.1 or 48
kHz, stereo) are written once into `work`, as a ``folder`` layout. Each pass prepares them into a fresh output
folder (decode, checks, report; no statistics), with and without ``--flac`` (conversion to 16-kHz mono FLAC),
over each number of `workers` processes (their start-up included); the passes take turns, `repeats` times.
Printed per pass: the median clips/s, clips/s per worker, and the hours AudioSet-2M (2,000,000 clips) would take
on a 32-core node at that rate per worker (workers that share a node's memory bandwidth and disks may each go
slower: read it as a lower bound of the time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import soundfile as sf

from ssast.data.prepare import main as prepare

AUDIOSET_CLIPS, NODE_CORES = 2_000_000, 32


def write_clips(folder: Path, clips: int) -> None:
    """`clips` 10-s 44.1-kHz stereo FLACs (kept between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(clips):
        path = folder / f"clip{i:05d}.flac"
        if not path.is_file():
            sf.write(path, rng.uniform(-0.3, 0.3, (441_000, 2)), 44_100, subtype="PCM_16")


def one_pass(corpus: Path, workers: int, flac: bool) -> float:
    """Seconds of one preparation into a fresh folder."""
    with tempfile.TemporaryDirectory() as out:
        args = ["folder", f"root={corpus}", f"out={out}", f"workers={workers}", "stats_clips=0"]
        args += [f"flac={Path(out) / 'flac'}"] * flac
        start = time.perf_counter()
        with open(os.devnull, "w") as quiet, redirect_stdout(quiet):
            prepare(args)
        return time.perf_counter() - start


def main() -> None:
    """Prepare the clips with each worker count, with and without conversion, and print the rates."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ssast-prepare"))
    args = parser.parse_args()
    corpus = args.work / "clips"
    write_clips(corpus, args.clips)
    shutil.rmtree(args.work / "out", ignore_errors=True)
    cases = [(w, flac) for flac in (False, True) for w in args.workers]
    times = {case: [] for case in cases}
    for _ in range(args.repeats):
        for case in cases:
            times[case].append(one_pass(corpus, *case))
    print(f"{args.clips} clips of 10 s, 44.1 kHz stereo FLAC; {os.cpu_count()} cores; medians of {args.repeats}")
    print("| pass | workers | clips/s | clips/s per worker | AudioSet-2M on a 32-core node, h |")
    print("|---|---|---|---|---|")
    for (workers, flac), seconds in times.items():
        rate = args.clips / statistics.median(seconds)
        hours = AUDIOSET_CLIPS / (rate / workers * NODE_CORES) / 3600
        name = "check + 16-kHz FLAC" if flac else "check"
        print(f"| {name} | {workers} | {rate:.1f} | {rate / workers:.1f} | {hours:.1f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
