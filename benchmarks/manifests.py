"""Start-up time and memory of a training loader on a 2M-clip manifest: text parsed in every process against the
compiled manifest, mapped.

    python benchmarks/manifests.py [--clips 2000000] [--procs 1 8] [--repeats 3] [--balanced] [--work DIR]

A synthetic AST data json of `clips` entries (AudioSet-like paths, 1-3 of 527 labels each) is written once into
`work`. Each measured process imports the library, then counts from the manifest read to its loader's first
batch (a new order of the clips each epoch, as pretraining draws them; `--balanced`: class-balanced sampling, as
AST fine-tuning on AudioSet-2M does; audio decoding excluded: the clip reader returns a fixed 10-s waveform) and
reports the resident and the private memory it added over that span and its proportional set size (PSS:
shared pages divided among the processes that map them). `procs` processes start together. Rows:
- text: the AST json parsed in the process (`ssast.data.sources.JsonSource.read`), as every rank did before;
- compiled, cold: an empty cache; the first process builds the compiled manifest, the others wait and map it;
- compiled, warm: the cache built; every process maps it.
Medians over `repeats` rounds; Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_manifest(work: Path, clips: int) -> Path:
    """A synthetic AST json of `clips` AudioSet-like entries and its 527-class label csv (kept between runs)."""
    path = work / f"audioset_{clips}.json"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        rows = ["index,mid,display_name"] + [f"{i},/m/{i:05d},class {i}" for i in range(527)]
        (work / "labels.csv").write_text("\n".join(rows) + "\n")
        ids = rng.integers(0, 2**62, clips)
        data = [
            {"wav": f"audio/unbal_train/{i:016x}.flac", "labels": ",".join(f"/m/{c:05d}" for c in set(cs))}
            for i, cs in zip(
                ids, rng.integers(0, 527, (clips, 3)) * (rng.random((clips, 3)) < [1, 0.5, 0.2]), strict=True
            )
        ]
        path.with_suffix(".tmp").write_text(json.dumps({"data": data}))
        path.with_suffix(".tmp").rename(path)
    return path


def memory_mb() -> tuple[float, float, float]:
    """(resident, proportional, private) set size of this process in MB. Resident counts every mapped page of the
    page cache too (this kernel maps whole large folios of a memory-mapped file on a fault); private counts what
    no other process shares."""
    rollup = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    kb = {k: int(v.split()[0]) for k, v in rollup.items()}
    return kb["Rss"] / 1024, kb["Pss"] / 1024, (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024


def child(mode: str, manifest: str, balanced: bool) -> None:
    """One process: manifest read -> the loader's first batch; prints its seconds and memory as json."""
    import torch

    from ssast.data import loader
    from ssast.data.index import Dataset, Examples, read_dataset
    from ssast.data.sampling import DataConfig
    from ssast.data.sources import JsonSource
    from ssast.features import FeatureConfig

    wave = torch.randn(160_000) * 0.1
    loader.ClipReader.__call__ = lambda self, path: wave  # decoding excluded
    cfg = JsonSource(path=manifest, labels=str(Path(manifest).parent / "labels.csv"))
    data = DataConfig(batch_size=24, num_parallel_calls=1, prefetch=1, balanced=balanced)
    rss0, _, private0 = memory_mb()
    start = time.perf_counter()
    if mode == "text":
        listing = cfg.read()
        dataset = Dataset(Examples.from_lists(listing.paths, listing.labels), listing.classes, True)
    else:
        dataset = read_dataset(cfg)
    batch = next(iter(loader.AudioLoader(dataset, FeatureConfig(), data, train=True)))
    seconds = time.perf_counter() - start
    rss, pss, private = memory_mb()
    extra = {"extra_rss": rss - rss0, "extra_private": private - private0, "pss": pss}
    print(json.dumps({"seconds": seconds, **extra, "rows": len(batch["fbank"])}))
    sys.stdout.flush()
    os._exit(0)  # the loader's prefetch threads hold nothing worth a clean shutdown


def measure(mode: str, manifest: Path, procs: int, env: dict, balanced: bool) -> list[dict]:
    """Start `procs` processes together; their reports."""
    cmd = [sys.executable, __file__, "--child", mode, "--manifest", str(manifest)] + ["--balanced"] * balanced
    running = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(procs)]
    reports = [json.loads(p.communicate()[0]) for p in running]
    if any(p.returncode for p in running):
        raise SystemExit(f"a {mode} process failed")
    return reports


def main() -> None:
    """Write the manifest, then measure the rows of the docstring for each process count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2_000_000)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--balanced", action="store_true", help="class-balanced sampling")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ssast-manifests"))
    parser.add_argument("--child", choices=["text", "compiled"], help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.manifest, args.balanced)

    manifest = write_manifest(args.work, args.clips)
    cache = args.work / "cache"
    env = {**os.environ, "SSAST_CACHE": str(cache)}
    sampling = "class-balanced" if args.balanced else "epoch order"
    print(f"{args.clips} entries, {manifest.stat().st_size / 1e6:.0f} MB of json; {sampling}; {os.cpu_count()} cores")
    print(
        "| manifest | processes | start-up to first batch, s (median of the slowest) | extra RSS per process, MB "
        "| extra private memory per process, MB | PSS per process, MB |"
    )
    print("|---|---|---|---|---|---|")
    for procs in args.procs:
        rows = {"text": [], "compiled, cold": [], "compiled, warm": []}
        for _ in range(args.repeats):  # the kinds take turns: the machine's drift hits them alike
            rows["text"].append(measure("text", manifest, procs, env, args.balanced))
            shutil.rmtree(cache, ignore_errors=True)
            rows["compiled, cold"].append(measure("compiled", manifest, procs, env, args.balanced))
            rows["compiled, warm"].append(measure("compiled", manifest, procs, env, args.balanced))
        for kind, rounds in rows.items():
            slowest = statistics.median(max(r["seconds"] for r in reports) for reports in rounds)
            rss, private, pss = (
                statistics.median(statistics.mean(r[key] for r in reports) for reports in rounds)
                for key in ("extra_rss", "extra_private", "pss")
            )
            print(f"| {kind} | {procs} | {slowest:.2f} | {rss:.0f} | {private:.0f} | {pss:.0f} |")
        text = statistics.median(max(r["seconds"] for r in reports) for reports in rows["text"])
        warm = statistics.median(max(r["seconds"] for r in reports) for reports in rows["compiled, warm"])
        print(f"{procs} process(es): compiled (warm) starts {text / warm:.0f}x faster than text")


if __name__ == "__main__":
    main()
