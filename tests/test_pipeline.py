import itertools
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from ssast.config import ConfigError
from ssast.data.index import Dataset, Example, read_dataset
from ssast.data.loader import AudioLoader
from ssast.data.sampling import DataConfig, DataError, class_balanced_weights
from ssast.data.sources import source
from ssast.features import FeatureConfig

pytestmark = pytest.mark.integration

ESC_FEATURES = FeatureConfig(target_length=512, freqm=24, timem=96, noise=True, mean=-6.6268077, std=5.358466)


@pytest.fixture(scope="module")
def esc(demo_root):
    return read_dataset(source(kind="esc50", path="esc50", split="1,2,3,4"), demo_root)


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


def test_batches_have_exact_shapes_and_targets(esc):
    loader = AudioLoader(esc, ESC_FEATURES, DataConfig(batch_size=8), train=True, seed=0)
    batch = take(loader, 1)[0]
    assert batch["fbank"].shape == (8, 512, 128) and batch["fbank"].dtype == torch.float32
    assert batch["target"].shape == (8, 25) and torch.equal(batch["target"].sum(1), torch.ones(8))
    assert len(batch["path"]) == 8


@pytest.mark.parametrize("consumed", [3, 12])  # 12 batches of 8 = a little under one epoch of 100 clips
def test_resume_from_state_dict_gives_identical_batches(esc, consumed):
    data = DataConfig(batch_size=8, mixup=0.5, num_parallel_calls=2)
    first = AudioLoader(esc, ESC_FEATURES, data, train=True, seed=3)
    stream = iter(first)
    for _ in range(consumed):
        next(stream)
    state = first.state_dict()
    assert state == {"batches": consumed, "bad": {"seen": 8 * consumed, "bad": 0}}  # no buffered data in it
    expected = [next(stream) for _ in range(4)]  # crosses the epoch boundary for consumed=12
    resumed = AudioLoader(esc, ESC_FEATURES, data, train=True, seed=3)
    resumed.load_state_dict(state)
    for a, b in zip(expected, take(resumed, 4), strict=True):
        assert a["path"] == b["path"]
        assert torch.equal(a["fbank"], b["fbank"]) and torch.equal(a["target"], b["target"])


@pytest.mark.parametrize("train", [True, False])
def test_the_number_of_workers_does_not_change_the_batches(esc, train):
    def batches(workers):
        data = DataConfig(batch_size=8, mixup=0.5, num_parallel_calls=workers)
        return take(AudioLoader(esc, ESC_FEATURES, data, train=train, seed=1), 13)  # eval: 100 clips in 13 batches

    one, three = batches(1), batches(3)
    assert [len(b["path"]) for b in three] == ([8] * 13 if train else [8] * 12 + [4])
    for a, b in zip(one, three, strict=True):
        assert a["path"] == b["path"] and torch.equal(a["fbank"], b["fbank"]) and torch.equal(a["target"], b["target"])


def test_views_crop_each_decoded_clip_several_times_and_resume_exactly(esc):
    features = FeatureConfig(target_length=128, crop="random", freqm=24, timem=24, mean=-6.6, std=5.4)
    plain = take(AudioLoader(esc, features, DataConfig(batch_size=8), train=True, seed=2), 1)[0]
    data = DataConfig(batch_size=8, views=4, num_parallel_calls=2)
    loader = AudioLoader(esc, features, data, train=True, seed=2)
    stream = iter(loader)
    batch = next(stream)
    assert batch["fbank"].shape == (8, 128, 128) and batch["path"] == [plain["path"][0]] * 4 + [plain["path"][1]] * 4
    # a clip's first view takes the draws its single view would; the others are other crops and masks
    assert torch.equal(batch["fbank"][0], plain["fbank"][0]) and torch.equal(batch["fbank"][4], plain["fbank"][1])
    assert all(not torch.equal(batch["fbank"][0], batch["fbank"][v]) for v in (1, 2, 3))
    assert torch.equal(batch["target"][:4], plain["target"][:1].expand(4, -1))
    next(stream)
    assert loader.counts() == {"clips_seen": 4, "bad_clips": 0}  # decoded clips, not views
    state, expected = loader.state_dict(), [next(stream) for _ in range(3)]
    resumed = AudioLoader(esc, features, data, train=True, seed=2)
    resumed.load_state_dict(state)
    for a, b in zip(expected, take(resumed, 3), strict=True):
        assert a["path"] == b["path"] and torch.equal(a["fbank"], b["fbank"])


def test_views_must_divide_the_batch():
    with pytest.raises(ConfigError, match="config key 'views' must be a divisor of batch_size \\(24\\), got 5"):
        DataConfig(views=5)


def test_a_data_state_of_another_format_is_refused_in_one_line(esc):
    loader = AudioLoader(esc, ESC_FEATURES, DataConfig(batch_size=8), train=True)
    with pytest.raises(DataError, match="start a fresh run directory"):
        loader.load_state_dict({"pipeline": {}, "bad": {"seen": 0, "bad": 0}})


def test_epochs_are_reshuffled_and_cover_the_data(esc):
    loader = AudioLoader(esc, FeatureConfig(target_length=16), DataConfig(batch_size=10), train=True, seed=0)
    batches = take(loader, 20)
    epochs = [sum((b["path"] for b in batches[i : i + 10]), []) for i in (0, 10)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(e.path for e in esc.examples)
    assert epochs[0] != epochs[1]


def test_ranks_read_disjoint_shards(esc):
    data = DataConfig(batch_size=10)
    features = FeatureConfig(target_length=16)
    train = [
        set(sum((b["path"] for b in take(AudioLoader(esc, features, data, True, 0, r, 2), 5)), [])) for r in range(2)
    ]
    assert len(train[0]) == len(train[1]) == 50 and not train[0] & train[1]
    evals = [sum((b["path"] for b in AudioLoader(esc, features, data, False, 0, r, 2)), []) for r in range(2)]
    assert sorted(evals[0] + evals[1]) == sorted(e.path for e in esc.examples)


def test_mixup_mixes_labels_with_beta_weights(esc):
    loader = AudioLoader(esc, ESC_FEATURES, DataConfig(batch_size=50, mixup=1.0), train=True, seed=0)
    target = take(loader, 1)[0]["target"]
    assert torch.allclose(target.sum(1), torch.ones(50))
    top = target.max(1).values
    assert (top >= 0.5 - 1e-6).all() and (top < 1).float().mean() > 0.9  # a partner of the same class sums
    assert 0.25 < top.min() and top.mean() < 0.75


def test_class_balanced_weights_follow_the_reference_formula():
    ds = Dataset([Example("a", (0,)), Example("b", (0, 1)), Example("c", (1,)), Example("d", (0,))], ["x", "y"])
    w = class_balanced_weights(ds)
    assert np.allclose(w, [1000 / 3.01, 1000 / 3.01 + 1000 / 2.01, 1000 / 2.01, 1000 / 3.01])


def test_balanced_sampling_draws_in_proportion_to_weights(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.random.default_rng(0).standard_normal(800) * 0.1, 16000)
    ds = Dataset([Example(str(path), (0,))] * 9 + [Example(str(path).replace("a.wav", "b.wav"), (1,))], ["x", "y"])
    sf.write(tmp_path / "b.wav", np.random.default_rng(1).standard_normal(800) * 0.1, 16000)
    loader = AudioLoader(ds, FeatureConfig(target_length=4), DataConfig(batch_size=100, balanced=True), True, 0)
    rare = sum(b["target"][:, 1].sum().item() for b in take(loader, 10))
    assert 420 < rare < 580  # both classes have the same total weight: 1000 clips, half of them the rare one


@pytest.fixture()
def bad_dataset(tmp_path):
    good = []
    for i in range(20):
        path = tmp_path / f"good{i}.wav"
        sf.write(path, np.random.default_rng(i).standard_normal(8000) * 0.1, 16000)
        good.append(Example(str(path)))
    (tmp_path / "garbage.wav").write_bytes(b"this is not audio at all" * 10)
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "silent0.wav", np.zeros(0), 16000)
    sf.write(tmp_path / "short.wav", np.zeros(100), 16000)
    sf.write(tmp_path / "nan.wav", np.full(8000, np.nan), 16000, subtype="FLOAT")
    bad = ["missing.wav", "garbage.wav", "empty.wav", "silent0.wav", "short.wav", "nan.wav"]
    return good, [Example(str(tmp_path / b)) for b in bad]


def test_bad_clips_are_skipped_counted_and_logged(bad_dataset, caplog):
    good, bad = bad_dataset
    ds = Dataset(good[:10] + bad + good[10:])
    loader = AudioLoader(ds, FeatureConfig(target_length=16), DataConfig(batch_size=4, max_bad_fraction=0.5), False)
    with caplog.at_level(logging.WARNING):
        paths = sum((b["path"] for b in loader), [])
    assert sorted(paths) == sorted(e.path for e in good)
    assert loader.counts() == {"clips_seen": 26, "bad_clips": 6}
    skipped = [r.getMessage() for r in caplog.records if "skipping bad clip" in r.getMessage()]
    assert len(skipped) == 6
    for name, reason in [("missing.wav", ""), ("nan.wav", "NaN or inf"), ("short.wav", "shorter than one frame")]:
        assert any(name in m and reason in m for m in skipped), (name, skipped)


def test_too_many_bad_clips_stop_with_a_clear_error(bad_dataset):
    good, bad = bad_dataset
    loader = AudioLoader(Dataset(bad + good), FeatureConfig(target_length=16), DataConfig(batch_size=4), False)
    with pytest.raises(DataError, match=r"of \d+ clips read were unreadable \(limit data.max_bad_fraction=0.01\)"):
        list(loader)


def test_wav_flac_ogg_and_other_rates_give_the_same_features(tmp_path):
    t = np.arange(32000) / 16000
    wave = 0.4 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    pcm = np.round(wave * 32767).astype(np.int16)  # the same samples in both lossless files
    files = {"a.wav": (pcm, 16000, "PCM_16"), "b.flac": (pcm, 16000, "PCM_16"), "c.ogg": (wave, 16000, "VORBIS")}
    for sr in (8000, 44100):
        files[f"d{sr}.wav"] = (np.interp(np.arange(2 * sr) / sr, t, wave), sr, "FLOAT")
    for name, (x, sr, subtype) in files.items():
        sf.write(tmp_path / name, x, sr, subtype=subtype)
    ds = Dataset([Example(str(tmp_path / n)) for n in files])
    fbank = next(iter(AudioLoader(ds, FeatureConfig(target_length=198), DataConfig(batch_size=5), False)))["fbank"]
    assert fbank.shape == (5, 198, 128)
    assert torch.equal(fbank[0], fbank[1])  # FLAC is lossless
    assert (fbank[2] - fbank[0]).abs()[:, :40].mean() < 0.05  # Vorbis is close below 1.6 kHz
    assert (fbank[4] - fbank[0]).abs()[:, :100].mean() < 0.05  # 44.1 kHz resampled to 16 kHz
    assert (fbank[3] - fbank[0]).abs()[:, :60].mean() < 0.1  # 8 kHz has nothing above 4 kHz
