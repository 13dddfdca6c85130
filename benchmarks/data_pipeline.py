"""Throughput of the data pipeline against the reference approach, measured in the same run.

    python benchmarks/data_pipeline.py [--clips 384] [--workers 2] [--repeats 9]

- pipeline: clips/s of 10-s 16-kHz WAVs through decode + fbank (hanning, faithful) + pad + normalise, with
  `ssast.data.loader.AudioLoader` (`workers` threads, a batch each) against a `torch.utils.data.DataLoader`
  (`workers` worker processes) whose dataset loads with soundfile and computes
  `torchaudio.compliance.kaldi.fbank`, as the reference code does; and the same pipeline with a clip
  instead of a batch as the unit of fairseq2's parallel map;
- per core: one worker's work on one thread (`ClipLoader.batch`, training clips), with the filterbank
  (``features.device: cpu``) and without it (``features.device: model``: decode and crop; the GPU computes the
  filterbank), and the cores that feed a step of 1,000 clips/s each way;
- fbank alone: `ssast.features.kaldi_fbank` against torchaudio on one 10-s clip and on a batch of 32.

Each rate is one full pass over the clips with the loaders' workers already running; the loaders take turns,
`repeats` times, and the medians and ratios are printed. Needs the test extra (torchaudio).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from fairseq2.data.data_pipeline import Collater, read_sequence

from ssast.data.index import Dataset, Example
from ssast.data.loader import AudioLoader, ClipLoader
from ssast.data.sampling import DataConfig, Mixture
from ssast.features import FeatureConfig, kaldi_fbank

FEATURES = FeatureConfig()  # AudioSet front end: 1024 frames, 128 mel bins, hanning


def reference_fbank(wave: torch.Tensor) -> torch.Tensor:
    """torchaudio's Kaldi fbank with the reference's settings: the baseline front end."""
    return torchaudio.compliance.kaldi.fbank(
        wave[None],
        htk_compat=True,
        sample_frequency=16000,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    )


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
    """`count` 10-s WAV clips of noise in `folder`, for timing the readers."""
    rng = np.random.default_rng(0)
    t = np.arange(160_000) / 16000
    paths = []
    for i in range(count):
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(len(t))
        paths.append(str(folder / f"clip{i:04d}.wav"))
        sf.write(paths[-1], wave, 16000, subtype="PCM_16")
    return paths


def clips_per_second(batches, count: int) -> float:
    """Clips/s of one full pass; the loaders' workers are already running (start-up is not timed)."""
    start = time.perf_counter()
    seen = sum(len(b) for b in batches)
    assert seen == count, (seen, count)
    return seen / (time.perf_counter() - start)


def time_call(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of `fn`."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_core(dataset: Dataset, repeats: int) -> dict[str, float]:
    """Clips/s of one worker's batches on one thread, with the filterbank in the loader or left to the device."""
    rates = {}
    for device in ("cpu", "model"):
        clips = ClipLoader(Mixture([dataset]), dataclasses.replace(FEATURES, device=device), True, 0, 0, 0.0)
        items = [((0, i), i) for i in range(len(dataset.examples))]
        batches = [items[k : k + 32] for k in range(0, len(items), 32)]
        rates[device] = len(items) / time_call(lambda c=clips, bs=batches: [c.batch(b) for b in bs], repeats)
    return rates


def main() -> None:
    """Time decoding and fbank per clip, baseline against this project's pipeline, and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=384)  # 12 batches: even over 2 workers
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one torch thread per data worker: no oversubscription of the cores

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_clips(Path(tmp), args.clips)
        dataset = Dataset([Example(p) for p in paths])
        data = DataConfig(batch_size=32, num_parallel_calls=args.workers, prefetch=2)
        loader = AudioLoader(dataset, FEATURES, data, train=False)
        # Persistent workers started by a fork server: forking this process once its data threads run can
        # deadlock a worker; the start method does not change the steady-state rate.
        reference_loader = torch.utils.data.DataLoader(
            ReferenceDataset(paths),
            batch_size=32,
            num_workers=args.workers,
            persistent_workers=True,
            multiprocessing_context="forkserver",
        )

        def ours():
            loader.reset()
            return clips_per_second((b["fbank"] for b in loader), len(paths))

        def reference():
            return clips_per_second(reference_loader, len(paths))

        # The same work with the clip rather than the batch as the unit of the parallel map: read, decode and
        # front end per call, then batch and collate in the pipeline thread.
        clip_loader = ClipLoader(Mixture([dataset]), FEATURES, False, 0, 0, 0.0)
        per_clip = (
            read_sequence(list(range(len(paths))))
            .map(lambda i: clip_loader((0, i), None)[0], num_parallel_calls=args.workers)
            .bucket(32)
            .map(Collater())
            .prefetch(2)
            .and_return()
        )

        def clips_as_unit():
            per_clip.reset()
            return clips_per_second((b["fbank"] for b in per_clip), len(paths))

        ours(), reference(), clips_as_unit()  # start the workers, warm the page cache and the code paths
        runs = [(ours(), reference(), clips_as_unit()) for _ in range(args.repeats)]  # interleaved
        rate_ours, rate_ref, rate_clips = (statistics.median(r) for r in zip(*runs, strict=True))
        core = per_core(dataset, args.repeats)
    print(
        f"pipeline, 10-s clips, {args.workers} workers: AudioLoader {rate_ours:.1f} clips/s, "
        f"DataLoader + torchaudio {rate_ref:.1f} clips/s, ratio {rate_ours / rate_ref:.2f}x; "
        f"a clip per parallel call {rate_clips:.1f} clips/s (batch per worker: {rate_ours / rate_clips:.2f}x)"
    )
    print(
        f"per core (one worker, one thread): decode + fbank {core['cpu']:.1f} clips/s; decode + crop only "
        f"(features.device=model) {core['model']:.1f} clips/s, {core['model'] / core['cpu']:.2f}x; cores to feed "
        f"1,000 clips/s: {1000 / core['cpu']:.1f} with the fbank, {1000 / core['model']:.1f} without"
    )

    wave = 0.1 * torch.randn(160_000)
    batch = 0.1 * torch.randn(32, 160_000)
    single = (time_call(lambda: kaldi_fbank(wave), 20), time_call(lambda: reference_fbank(wave), 20))
    batched = (time_call(lambda: kaldi_fbank(batch), 5), time_call(lambda: [reference_fbank(w) for w in batch], 5))
    for name, (a, b) in (("one 10-s clip", single), ("batch of 32", batched)):
        print(f"fbank, {name}, 1 thread: ours {a * 1e3:.2f} ms, torchaudio {b * 1e3:.2f} ms, ratio {b / a:.2f}x")


if __name__ == "__main__":  # the guard keeps the fork server's workers from running the benchmark
    main()
