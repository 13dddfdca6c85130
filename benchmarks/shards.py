"""Reading clips from cold storage: one file per clip against tar shards, in the order training reads them.

    python benchmarks/shards.py [--clips 2000] [--seconds 10] [--shard-mb 64] [--repeats 3] [--work /tmp/ssast-shards]

`clips` random 16-kHz WAVs are written once as files (a ``list`` data set) and as shards
(`ssast.data.shards.write_shards`). Each round drops the page cache (``/proc/sys/vm/drop_caches``; where that is
not allowed the reads are warm and the script says so) and reads every clip's bytes through fairseq2's
FileMapper, the loader's reader, in the first epoch's order of the training sampler: a random permutation of
the files, or shards in a random order with clips shuffled within windows of ``data.shard_window`` shards. The
two take turns; medians and the ratio are printed. Decoding and features are left out: they cost the same.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from fairseq2.data.data_pipeline import FileMapper

from ssast.data.index import read_dataset
from ssast.data.sampling import DataConfig, part_sampler
from ssast.data.shards import write_shards
from ssast.data.sources import ListSource, ShardSource, Source


def write_clips(work: Path, clips: int, seconds: float, shard_mb: float) -> tuple[Source, Source]:
    """The files and their shards (kept between runs)."""
    files, shards = work / "files", work / "shards"
    if not (shards / "index.json").is_file():
        files.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(clips):
            sf.write(files / f"{i:06d}.wav", rng.uniform(-0.5, 0.5, int(seconds * 16000)), 16000, subtype="PCM_16")
        (work / "files.txt").write_text("".join(f"files/{i:06d}.wav\n" for i in range(clips)))
        write_shards(ListSource(path=str(work / "files.txt")), "", shards, shard_mb, seed=0)
    return ListSource(path=str(work / "files.txt")), ShardSource(path=str(shards))


def drop_page_cache() -> bool:
    """Empty the page cache; False where the machine does not allow it."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def read_epoch(cfg: Source) -> tuple[float, float]:
    """(clips/s, MB/s) reading one epoch's bytes in the training sampler's order."""
    dataset = read_dataset(cfg)
    sampler = part_sampler(dataset, DataConfig(), seed=(0,), rank=0, world=1)
    mapper, size = FileMapper(), 0
    start = time.perf_counter()
    for n in range(len(dataset.examples)):
        data = np.frombuffer(memoryview(mapper(dataset.examples[sampler(n)].path)["data"]), np.uint8)
        size += len(data) + int(data[::4096].sum()) * 0  # one byte a page: the mapped pages are read
    seconds = time.perf_counter() - start
    return len(dataset.examples) / seconds, size / 2**20 / seconds


def main() -> None:
    """Write the clips, then time the two layouts in turns."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--shard-mb", type=float, default=64.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ssast-shards"))
    args = parser.parse_args()
    os.environ.setdefault("SSAST_CACHE", str(args.work / "cache"))
    files, shards = write_clips(args.work, args.clips, args.seconds, args.shard_mb)
    layouts = {"file per clip": files, "tar shards": shards}
    rates: dict[str, list[tuple[float, float]]] = {k: [] for k in layouts}
    cold = True
    for _ in range(args.repeats):
        for name, cfg in layouts.items():
            cold = drop_page_cache() and cold
            rates[name].append(read_epoch(cfg))
    cache = "page cache dropped before each pass" if cold else "WARM page cache (drop_caches not allowed)"
    print(f"{args.clips} clips of {args.seconds:g} s, {cache}")
    print("| layout | clips/s | MB/s |\n|---|---|---|")
    medians = {k: [statistics.median(x) for x in zip(*v, strict=True)] for k, v in rates.items()}
    for name, (clips, mb) in medians.items():
        print(f"| {name} | {clips:.0f} | {mb:.0f} |")
    print(f"shards read {medians['tar shards'][0] / medians['file per clip'][0]:.2f}x the clips/s of files")


if __name__ == "__main__":
    main()
