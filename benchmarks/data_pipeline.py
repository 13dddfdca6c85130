"""Throughput of the data pipeline against the reference approach, measured in the same run.

    python benchmarks/data_pipeline.py [--clips 352] [--workers 2] [--repeats 3]

- pipeline: clips/s of 10-s 16-kHz WAVs through decode + fbank (hanning, faithful) + pad + normalise, with
  `ssast.data.pipeline.AudioLoader` (`workers` decode threads) against a `torch.utils.data.DataLoader`
  (`workers` worker processes) whose dataset loads with soundfile and computes
  `torchaudio.compliance.kaldi.fbank`, as the reference code does;
- fbank alone: `ssast.features.kaldi_fbank` against torchaudio on one 10-s clip and on a batch of 32.

Prints medians over `repeats` and the ratios. Needs the test extra (torchaudio).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from ssast.data.pipeline import AudioLoader, ClipReader, DataConfig
from ssast.data.readers import Dataset, Example
from ssast.features import FeatureConfig, fbank_features, kaldi_fbank

FEATURES = FeatureConfig()  # AudioSet front end: 1024 frames, 128 mel bins, hanning


def reference_fbank(wave: torch.Tensor) -> torch.Tensor:
    return torchaudio.compliance.kaldi.fbank(wave[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                                             window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)


class ReferenceDataset(torch.utils.data.Dataset):
    """The reference's per-clip loading: read, de-mean, torchaudio fbank, pad to 1024, normalise."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        wave, _ = sf.read(self.paths[i], dtype="float32")
        wave = torch.from_numpy(wave)
        fbank = reference_fbank(wave - wave.mean())
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, FEATURES.target_length - fbank.shape[0]))
        return (fbank - FEATURES.mean) / (2 * FEATURES.std)


def make_clips(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    t = np.arange(160_000) / 16000
    paths = []
    for i in range(count):
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(len(t))
        paths.append(str(folder / f"clip{i:04d}.wav"))
        sf.write(paths[-1], wave, 16000, subtype="PCM_16")
    return paths


def clips_per_second(batches, count: int) -> float:
    """Steady-state rate: the clock starts once the first batch is out (worker start-up excluded)."""
    batches = iter(batches)
    first = len(next(batches))
    start = time.perf_counter()
    rest = sum(len(b) for b in batches)
    assert first + rest == count, (first + rest, count)
    return rest / (time.perf_counter() - start)


def time_call(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=352)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread per worker / decode thread: no oversubscription of the cores

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_clips(Path(tmp), args.clips)
        dataset = Dataset([Example(p) for p in paths])
        data = DataConfig(batch_size=32, num_parallel_calls=args.workers, prefetch=2)

        def ours():
            loader = AudioLoader(dataset, FEATURES, data, train=False)
            return clips_per_second((b["fbank"] for b in loader), len(paths))

        def reference():
            loader = torch.utils.data.DataLoader(ReferenceDataset(paths), batch_size=32, num_workers=args.workers)
            return clips_per_second(loader, len(paths))

        def threads():  # the same per-clip work in plain Python threads: the ceiling of thread parallelism
            read = ClipReader(FEATURES)
            work = lambda part: [fbank_features(read(p), FEATURES) for p in part]
            start = time.perf_counter()
            with ThreadPoolExecutor(args.workers) as pool:
                list(pool.map(work, [paths[i :: args.workers] for i in range(args.workers)]))
            return len(paths) / (time.perf_counter() - start)

        ours(), reference()  # warm the page cache and both code paths
        runs = [(ours(), reference(), threads()) for _ in range(args.repeats)]  # interleaved: same conditions
        rate_ours, rate_ref, rate_threads = (statistics.median(r) for r in zip(*runs))
    print(f"pipeline, 10-s clips, {args.workers} workers: AudioLoader {rate_ours:.1f} clips/s, "
          f"DataLoader + torchaudio {rate_ref:.1f} clips/s, ratio {rate_ours / rate_ref:.2f}x; "
          f"plain threads (no batching) {rate_threads:.1f} clips/s")

    wave = 0.1 * torch.randn(160_000)
    batch = 0.1 * torch.randn(32, 160_000)
    single = (time_call(lambda: kaldi_fbank(wave), 20), time_call(lambda: reference_fbank(wave), 20))
    batched = (time_call(lambda: kaldi_fbank(batch), 5), time_call(lambda: [reference_fbank(w) for w in batch], 5))
    for name, (a, b) in (("one 10-s clip", single), ("batch of 32", batched)):
        print(f"fbank, {name}, 1 thread: ours {a * 1e3:.2f} ms, torchaudio {b * 1e3:.2f} ms, ratio {b / a:.2f}x")


if __name__ == "__main__":
    main()
