import math

import pytest
import torch
import torchaudio

from ssast.features import FeatureConfig, fbank_features, kaldi_fbank, pad_or_crop, prepare_waveform, resample

pytestmark = pytest.mark.unit


def reference_fbank(wave: torch.Tensor, window: str) -> torch.Tensor:
    return torchaudio.compliance.kaldi.fbank(
        wave[None], htk_compat=True, use_energy=False, window_type=window, num_mel_bins=128, dither=0.0, frame_shift=10
    )


def real_like(n: int, seed: int) -> torch.Tensor:
    """Harmonic tone with vibrato, a noise burst and silence: the dynamic range of real recordings."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    tone = 0.3 * sum(
        torch.sin(2 * math.pi * k * 220 * (t + 0.002 * torch.sin(2 * math.pi * 5 * t))) / k for k in range(1, 8)
    )
    noise = 0.05 * torch.randn(n, generator=g) * (t % 1 < 0.3)
    return (tone * (t % 1 >= 0.3) + noise) * (t % 2 < 1.6)


@pytest.mark.parametrize("window", ["hanning", "povey"])
@pytest.mark.parametrize("seconds, frames", [(1, 98), (5, 498), (10, 998)])
@pytest.mark.parametrize("kind", ["random", "real_like"])
def test_fbank_matches_torchaudio_single_and_batched(window, seconds, frames, kind):
    n = seconds * 16000
    waves = torch.stack(
        [
            torch.randn(n, generator=torch.Generator().manual_seed(s)) * 0.1 if kind == "random" else real_like(n, s)
            for s in range(3)
        ]
    )
    ref = torch.stack([reference_fbank(w, window) for w in waves])
    assert ref.shape == (3, frames, 128)
    single = kaldi_fbank(waves[0], window=window)
    batched = kaldi_fbank(waves, window=window)
    assert single.shape == (frames, 128) and batched.shape == (3, frames, 128)
    assert (single - ref[0]).abs().max() < 1e-3
    assert (batched - ref).abs().max() < 1e-3


def test_fbank_rejects_clips_shorter_than_a_frame():
    with pytest.raises(ValueError, match="shorter than one frame"):
        kaldi_fbank(torch.zeros(399))


def test_pad_is_zero_in_log_domain_and_crop_keeps_the_start():
    fbank = torch.arange(10.0)[:, None].expand(10, 4)
    assert torch.equal(pad_or_crop(fbank, 12)[10:], torch.zeros(2, 4))
    assert torch.equal(pad_or_crop(fbank, 6), fbank[:6])
    assert torch.equal(pad_or_crop(fbank, 6, offset=3), fbank[3:9])


def test_eval_features_are_padded_then_normalised():
    cfg = FeatureConfig(target_length=120, mean=-5.0, std=2.0)
    wave = real_like(16000, 0)
    feats = fbank_features(wave, cfg)
    assert feats.shape == (120, 128)
    expected = (reference_fbank(wave, "hanning") + 5.0) / 4.0
    assert (feats[:98] - expected).abs().max() < 1e-3
    assert torch.allclose(feats[98:], torch.full((22, 128), 5.0 / 4.0))  # zero rows before normalisation


def test_specaugment_masks_one_band_and_one_span_before_normalisation():
    cfg = FeatureConfig(target_length=98, mean=0.0, std=0.5, freqm=24, timem=20)
    wave = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0))
    clean = fbank_features(wave, cfg)
    aug = fbank_features(wave, cfg, train=True, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)  # replay the draws: width floor(U * max), start U * (size - width)
    u = torch.rand(4, generator=g).tolist()
    fw, tw = u[0] * 24, u[2] * 20
    cols = torch.arange(int(u[1] * (128 - fw)), int(u[1] * (128 - fw)) + int(fw))
    rows = torch.arange(int(u[3] * (98 - tw)), int(u[3] * (98 - tw)) + int(tw))
    assert len(cols) > 0 and len(rows) > 0
    assert torch.equal((aug == 0).all(0).nonzero().flatten(), cols)
    assert torch.equal((aug == 0).all(1).nonzero().flatten(), rows)
    keep = torch.ones_like(aug, dtype=torch.bool)
    keep[:, cols], keep[rows] = False, False
    assert torch.equal(aug[keep], clean[keep])
    again = fbank_features(wave, cfg, train=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(aug, again)


def test_noise_adds_at_most_a_tenth_and_rolls_time():
    cfg = FeatureConfig(target_length=98, noise=True)
    wave = real_like(16000, 1)
    clean = fbank_features(wave, cfg)
    noisy = fbank_features(wave, cfg, train=True, generator=torch.Generator().manual_seed(0))
    shifts = [
        s
        for s in range(-10, 10)
        if ((noisy - torch.roll(clean, s, 0)) >= 0).all() and ((noisy - torch.roll(clean, s, 0)) < 0.1).all()
    ]
    assert len(shifts) == 1


def test_prepare_waveform_takes_channel_zero_resamples_and_demeans():
    t = torch.arange(44100) / 44100
    stereo = torch.stack([torch.sin(2 * math.pi * 440 * t) + 0.5, torch.zeros_like(t)], 1)
    out = prepare_waveform(stereo, 44100, FeatureConfig())
    assert out.shape == (16000,) and abs(out.mean()) < 1e-6
    spectrum = torch.fft.rfft(out[1000:-1000]).abs()
    assert abs(spectrum.argmax().item() * 16000 / (16000 - 2000) - 440) < 2
    mean_of_channels = prepare_waveform(stereo, 44100, FeatureConfig(channel=None))
    assert torch.allclose(mean_of_channels, out / 2, atol=1e-5)


def test_resample_matches_torchaudio_on_a_tone():
    t = torch.arange(22050) / 22050
    tone = torch.sin(2 * math.pi * 1000 * t)
    ours, ref = resample(tone, 22050, 16000), torchaudio.functional.resample(tone, 22050, 16000)
    assert ours.shape == ref.shape == (16000,)
    assert (ours - ref)[200:-200].abs().max() < 1e-2


@pytest.mark.parametrize("seed", range(5))
def test_specaugment_equals_torchaudio_masking_for_the_same_draws(seed):
    cfg = FeatureConfig(target_length=200, mean=0.0, std=0.5, freqm=48, timem=96)
    wave = real_like(32000, seed)
    ours = fbank_features(wave, cfg, train=True, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)  # torchaudio draws from the global generator
    image = pad_or_crop(kaldi_fbank(wave), 200).T[None]
    image = torchaudio.transforms.TimeMasking(96)(torchaudio.transforms.FrequencyMasking(48)(image))
    assert torch.equal(ours, image[0].T)


def test_banded_mel_product_equals_the_dense_one_with_fewer_multiply_adds():
    from ssast.features import _mel_bands, _mel_banks

    args = (128, 512, 16000.0, 20.0, 0.0, torch.device("cpu"))
    banks, bands = _mel_banks(*args), _mel_bands(*args)
    spectrum = torch.randn(50, 257, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    interleaved = torch.view_as_real(spectrum).square().flatten(-2)  # re^2, im^2, re^2, ...
    banded = torch.cat([interleaved[:, 2 * lo : 2 * hi] @ w for lo, hi, w in bands], -1)
    assert torch.allclose(banded, spectrum.abs().square() @ banks, rtol=1e-5, atol=1e-6)
    macs = sum(w.shape[0] * w.shape[1] for _, _, w in bands)
    assert 257 * 128 / macs > 3.8
