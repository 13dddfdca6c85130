"""The filterbank of a batch on the model's device (``features.device: model``) against the loader's, on one CPU
core, and how far apart their outputs are.

    python benchmarks/fbank_device.py [--batch 64] [--repeats 5]

Both turn 10.24-s 16-kHz clips (tones in noise) into the AudioSet recipe's model input (1024 x 128, normalised):
the loader's way clip by clip on one thread (`kaldi_fbank` + `model_input`), the device's way a batch at once
(`collate_windows` + `batch_model_input`) on a GPU when there is one, else on the CPU's threads. Prints the median
clips/s of each, their ratio, and the largest absolute difference (the contract: below 1e-4). Needs torch only.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ssast.features import FeatureConfig, batch_model_input, collate_windows, kaldi_fbank, model_input, window_samples

FEATURES = FeatureConfig(device="model")  # AudioSet front end: 1024 frames, 128 mel bins, hanning


def clips(batch: int) -> torch.Tensor:
    """`batch` de-meaned tones in noise of 10.24 s at 16 kHz."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(163_840) / 16000
    tones = torch.sin(2 * torch.pi * (100 + 1900 * torch.rand(batch, 1, generator=g)) * t)
    wave = 0.3 * tones + 0.05 * torch.randn(batch, t.shape[0], generator=g)
    return wave - wave.mean(1, keepdim=True)


def timed(fn, sync, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls of `fn` after one warm-up, and its last output."""
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    """Time both ways and print clips/s, the ratio and the largest difference."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    waves = clips(args.batch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    loader_s, expected = timed(
        lambda: torch.stack([model_input(kaldi_fbank(w), FEATURES) for w in waves]), lambda: None, args.repeats
    )
    torch.set_num_threads(threads)
    windows = [window_samples(w, FEATURES) for w in waves]
    batch = {k: v.to(device) for k, v in collate_windows(*zip(*windows, strict=True), FEATURES).items()}
    device_s, got = timed(lambda: batch_model_input(batch["wave"], batch["frames"], FEATURES), sync, args.repeats)
    diff = (got.cpu() - expected).abs().max().item()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {threads} threads"
    print(
        f"fbank of {args.batch} 10.24-s clips (1024 x 128): loader, 1 CPU thread {args.batch / loader_s:.1f} clips/s; "
        f"device ({name}) {args.batch / device_s:.1f} clips/s, {loader_s / device_s:.1f}x; largest difference "
        f"{diff:.2e} ({'within' if diff < 1e-4 else 'OVER'} 1e-4)"
    )


if __name__ == "__main__":
    main()
