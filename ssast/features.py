"""Audio front end of the AST convention: waveform -> normalised log-mel filterbank [T, F].

`kaldi_fbank` is a batched, vectorised re-implementation of ``torchaudio.compliance.kaldi.fbank`` for the
settings AST uses (htk_compat, no energy, no dither, snip_edges, power spectrum, log floor at float32 eps). The
rest follows the reference order for a training clip: pad/crop -> SpecAugment -> normalise -> noise + roll.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import List, Literal, Optional, Tuple

import numpy as np
import torch

from ssast.config import NonNegative, Positive, PositiveFloat, invalid


@dataclass
class FeatureConfig:
    """Front end of one data stream. Defaults are the AudioSet recipe's."""

    sample_rate: Positive = 16000
    channel: Optional[NonNegative] = 0  # channel of multi-channel audio to use; null averages the channels
    num_mel_bins: Positive = 128
    window: Literal["hanning", "povey"] = "hanning"
    target_length: Positive = 1024  # frames after pad/crop
    crop: Literal["start", "random"] = "start"  # where long clips are cut; the reference keeps the start
    mean: float = -4.2677393
    std: PositiveFloat = 4.5689974
    freqm: NonNegative = 0  # SpecAugment: max frequency-mask width (0 = off)
    timem: NonNegative = 0  # SpecAugment: max time-mask width (0 = off)
    noise: bool = False  # add uniform noise and roll along time (training only)
    # Where the filterbank is computed: cpu, in the loader's threads; or model, on the model's device (a GPU), from
    # each clip's window of samples that the loader decodes and crops (frees the loader's cores; no SpecAugment or
    # noise).
    device: Literal["cpu", "model"] = "cpu"

    def __post_init__(self):
        if self.freqm > self.num_mel_bins:
            raise invalid("freqm", self.freqm, f"<= num_mel_bins ({self.num_mel_bins})")
        if self.timem > self.target_length:
            raise invalid("timem", self.timem, f"<= target_length ({self.target_length})")
        if self.device == "model" and (self.freqm or self.timem or self.noise):
            raise invalid(
                "device", self.device, "cpu with SpecAugment (freqm, timem) or noise, which run in the loader"
            )


def check_target_length(features: FeatureConfig, input_tdim: int) -> None:
    """Refuse a stage's front end whose clips are not the model's input length."""
    if features.target_length != input_tdim:
        raise invalid("features.target_length", features.target_length, f"equal to model.input_tdim ({input_tdim})")


def _mel(f):
    return 1127.0 * (math.log1p(f / 700.0) if isinstance(f, float) else torch.log1p(f / 700.0))


@functools.lru_cache(maxsize=16)
def _mel_banks(
    num_bins: int, n_fft: int, sample_rate: float, low: float, high: float, device: torch.device
) -> torch.Tensor:
    """Kaldi's triangular mel filters on the mel axis, [n_fft // 2 + 1, num_bins] (Nyquist column zero)."""
    high = high if high > 0 else high + sample_rate / 2
    mel_low, mel_high = _mel(low), _mel(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    left = mel_low + torch.arange(num_bins).unsqueeze(1) * delta
    center, right = left + delta, left + 2 * delta
    mel = _mel(sample_rate / n_fft * torch.arange(n_fft // 2)).unsqueeze(0)
    banks = torch.clamp(torch.minimum((mel - left) / (center - left), (right - mel) / (right - center)), min=0)
    return torch.nn.functional.pad(banks, (0, 1)).T.contiguous().to(device)


@functools.lru_cache(maxsize=16)
def _mel_bands(
    num_bins: int, n_fft: int, sample_rate: float, low: float, high: float, device: torch.device, groups: int = 8
) -> list[tuple[int, int, torch.Tensor]]:
    """The filters in groups of neighbours, each with the range of FFT bins it covers, so that the product
    skips the zeros of the triangular filters. Each row is doubled to weigh the squared (re, im) pairs of the
    interleaved spectrum; even so, 3.8x fewer multiply-adds than one dense product over |X|^2 for 128
    filters and a 512-point FFT."""
    banks = _mel_banks(num_bins, n_fft, sample_rate, low, high, device)
    bands = []
    for cols in torch.arange(num_bins).chunk(groups):
        rows = (banks[:, cols] != 0).any(1).nonzero().flatten()
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        bands.append((lo, hi, banks[lo:hi, cols.to(device)].repeat_interleave(2, 0)))  # rows per (re, im)
    return bands  # shared by every call: read only


@functools.lru_cache(maxsize=8)
def _window(kind: str, length: int, device: torch.device) -> torch.Tensor:
    hann = torch.hann_window(length, periodic=False, device=device)
    return hann if kind == "hanning" else hann.pow(0.85)


FRAME_LENGTH_MS, FRAME_SHIFT_MS = 25.0, 10.0


def _frame_samples(
    sample_rate: int, length_ms: float = FRAME_LENGTH_MS, shift_ms: float = FRAME_SHIFT_MS
) -> tuple[int, int]:
    """(frame length, frame shift) in samples."""
    return int(sample_rate * length_ms / 1000), int(sample_rate * shift_ms / 1000)


def kaldi_fbank(
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    window: str = "hanning",
    frame_length_ms: float = FRAME_LENGTH_MS,
    frame_shift_ms: float = FRAME_SHIFT_MS,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Log-mel filterbank of [N] -> [T, F] or [B, N] -> [B, T, F], T = 1 + (N - frame_length) // frame_shift.

    Matches ``torchaudio.compliance.kaldi.fbank(w, htk_compat=True, use_energy=False, window_type=window,
    num_mel_bins=..., dither=0.0, frame_shift=10)`` on float32 input.
    """
    if window not in ("hanning", "povey"):
        raise ValueError(f"window must be 'hanning' or 'povey', got {window!r}")
    length, shift = _frame_samples(sample_rate, frame_length_ms, frame_shift_ms)
    if waveform.shape[-1] < length:
        raise ValueError(f"waveform of {waveform.shape[-1]} samples is shorter than one frame ({length})")
    n_fft = 1 << (length - 1).bit_length()
    waveform = waveform.float()
    args = (
        _window(window, length, waveform.device),
        _mel_bands(num_mel_bins, n_fft, float(sample_rate), low_freq, high_freq, waveform.device),
        length,
        shift,
        n_fft,
        preemphasis,
    )
    if waveform.dim() > 1 and waveform.device.type == "cpu":
        # On CPU one clip at a time: its frames stay in cache, which a batched pass over many clips loses.
        clips = [_fbank(w, *args) for w in waveform.reshape(-1, waveform.shape[-1])]
        return torch.stack(clips).reshape(*waveform.shape[:-1], *clips[0].shape)
    return _fbank(waveform, *args)


# Scripted, so that the whole filterbank runs without holding the GIL: the data pipeline's threads overlap
# instead of queueing for it between the ~15 operations of each clip.
@torch.jit.script
def _fbank(
    waveform: torch.Tensor,
    window: torch.Tensor,
    bands: List[Tuple[int, int, torch.Tensor]],
    length: int,
    shift: int,
    n_fft: int,
    preemphasis: float,
) -> torch.Tensor:
    frames = waveform.unfold(-1, length, shift)  # [..., T, length], a view
    padded = frames.new_empty(frames.shape[:-1] + (n_fft,))  # zero-padded to the FFT size, written in place
    padded[..., length:] = 0
    x = torch.sub(frames, frames.mean(-1, keepdim=True), out=padded[..., :length])  # remove the DC offset
    x[..., 1:] -= preemphasis * x[..., :-1]  # the right side is evaluated before the in-place update
    x[..., 0] *= 1 - preemphasis  # the first sample is its own predecessor
    x *= window
    # |X|^2 as the interleaved (re, im) pairs squared in place; the filters' rows are doubled to match.
    power = torch.view_as_real(torch.fft.rfft(padded)).square_().flatten(-2)
    mel = torch.cat([power[..., 2 * lo : 2 * hi] @ weights for lo, hi, weights in bands], -1)
    return mel.clamp_(min=1.1920928955078125e-07).log_()  # float32 eps


def to_mono(waveform: torch.Tensor, channel: Optional[int]) -> torch.Tensor:
    """[samples] or [samples, channels] -> [samples]: one channel (the reference uses 0) or their mean."""
    if waveform.dim() == 1:
        return waveform
    if channel is None:
        return waveform.mean(1)
    return waveform[:, min(channel, waveform.shape[1] - 1)]


def resample(waveform: torch.Tensor, orig: int, target: int) -> torch.Tensor:
    """Polyphase resampling (Kaiser-windowed FIR) from `orig` to `target` Hz."""
    if orig == target:
        return waveform
    from scipy.signal import resample_poly  # here: the model's front end runs without scipy (a GPU node's torch)

    g = math.gcd(orig, target)
    out = resample_poly(waveform.numpy().astype(np.float64), target // g, orig // g)
    return torch.from_numpy(out.astype(np.float32))


def prepare_waveform(waveform: torch.Tensor, sample_rate: int, cfg: FeatureConfig) -> torch.Tensor:
    """Decoded audio [samples(, channels)] -> mono float32 at ``cfg.sample_rate``, mean removed."""
    x = resample(to_mono(waveform.float(), cfg.channel), sample_rate, cfg.sample_rate)
    return x - x.mean()


def check_waveform(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """A prepared (de-meaned) waveform, or ValueError with the reason it cannot be used."""
    if wave.numel() == 0:
        raise ValueError("no samples")
    if not torch.isfinite(wave[0]):  # one NaN or inf sample makes the removed mean, so every sample, non-finite
        raise ValueError("NaN or inf samples")
    if wave.shape[0] < int(sample_rate * 0.025):
        raise ValueError(f"{wave.shape[0]} samples, shorter than one frame (25 ms)")
    return wave


def pad_or_crop(fbank: torch.Tensor, target_length: int, offset: int = 0) -> torch.Tensor:
    """[T, F] -> [target_length, F]: zero rows appended (log domain, before normalisation) or a window cut."""
    t = fbank.shape[0]
    if t < target_length:
        return torch.nn.functional.pad(fbank, (0, 0, 0, target_length - t))
    return fbank[offset : offset + target_length]


def _mask_along_(x: torch.Tensor, dim: int, max_width: int, g: torch.Generator) -> None:
    """One mask of width floor(U * max_width) at a uniform start, filled with 0 (torchaudio's semantics)."""
    value = torch.rand((), generator=g).item() * max_width
    start = torch.rand((), generator=g).item() * (x.shape[dim] - value)
    x.narrow(dim, int(start), int(value)).zero_()


def fbank_features(
    waveform: torch.Tensor, cfg: FeatureConfig, train: bool = False, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Prepared waveform [N] -> model input [target_length, num_mel_bins].

    `train` enables the random steps the config asks for (random crop, SpecAugment, noise + roll); every draw
    comes from `generator`.
    """
    return model_input(kaldi_fbank(waveform, cfg.sample_rate, cfg.num_mel_bins, cfg.window), cfg, train, generator)


def _crop_offset(frames: int, cfg: FeatureConfig, train: bool, generator: Optional[torch.Generator]) -> int:
    """The first frame of the model's window: 0, or in training with ``crop: random`` a uniform draw."""
    if train and cfg.crop == "random" and frames > cfg.target_length:
        return int(torch.randint(frames - cfg.target_length + 1, (), generator=generator))
    return 0


def model_input(
    fbank: torch.Tensor, cfg: FeatureConfig, train: bool = False, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """A clip's whole log-mel filterbank [T, F] (which it may modify) -> model input [target_length, F]: pad or
    crop, then in training the random steps, then normalise."""
    offset = _crop_offset(fbank.shape[0], cfg, train, generator)
    fbank = pad_or_crop(fbank, cfg.target_length, offset)  # from here on in place: the tensor is ours
    if train and cfg.freqm:
        _mask_along_(fbank, 1, cfg.freqm, generator)
    if train and cfg.timem:
        _mask_along_(fbank, 0, cfg.timem, generator)
    fbank.sub_(cfg.mean).div_(2 * cfg.std)
    if train and cfg.noise:
        scale = torch.rand((), generator=generator) / 10
        fbank.add_(torch.rand(fbank.shape, generator=generator) * scale)
        fbank = torch.roll(fbank, int(torch.randint(-10, 10, (), generator=generator)), 0)
    return fbank


def window_samples(
    waveform: torch.Tensor, cfg: FeatureConfig, train: bool = False, generator: Optional[torch.Generator] = None
) -> tuple[torch.Tensor, int]:
    """For ``device: model``: the samples of a prepared waveform [N] that the model's window of frames covers, and
    how many frames they make (fewer than target_length for a short clip). Frames never straddle the window's
    edges, so its filterbank is the same window of the whole clip's; the crop's draw is `model_input`'s."""
    length, shift = _frame_samples(cfg.sample_rate)
    whole = 1 + (waveform.shape[0] - length) // shift  # the whole clip's frames
    offset = _crop_offset(whole, cfg, train, generator)
    frames = min(whole - offset, cfg.target_length)
    return waveform[offset * shift : offset * shift + (frames - 1) * shift + length], frames


def collate_windows(windows: list[torch.Tensor], frames: list[int], cfg: FeatureConfig) -> dict[str, torch.Tensor]:
    """`window_samples` of a batch -> {"wave": [B, samples of target_length frames] zero-padded, "frames": [B]}."""
    length, shift = _frame_samples(cfg.sample_rate)
    wave = torch.zeros(len(windows), (cfg.target_length - 1) * shift + length)
    for row, w in zip(wave, windows, strict=True):
        row[: w.shape[0]] = w
    return {"wave": wave, "frames": torch.tensor(frames)}


def batch_model_input(wave: torch.Tensor, frames: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """`collate_windows`' batch, on any device -> model input [B, target_length, F]: the filterbank, the rows past
    each clip's end zero (`pad_or_crop`'s padding), normalised."""
    fbank = kaldi_fbank(wave, cfg.sample_rate, cfg.num_mel_bins, cfg.window)
    inside = torch.arange(cfg.target_length, device=wave.device) < frames.to(wave.device)[:, None]
    return fbank.where(inside[..., None], 0.0).sub_(cfg.mean).div_(2 * cfg.std)
