"""Training mixtures: sources drawn in the proportions of their weights, each in its own epoch order, resumed
exactly, and their draws logged."""

import itertools

import numpy as np
import pytest

import pretrain.__main__ as pretrain_stage
from ssast.data.index import read_dataset
from ssast.data.loader import AudioLoader
from ssast.data.sampling import DataConfig, DataError, EpochSampler, MixtureSampler, holdout, read_mixture
from ssast.data.sources import source
from ssast.features import FeatureConfig
from ssast.train.logs import read_metrics

pytestmark = pytest.mark.integration


def test_a_3_to_1_mixture_draws_75_percent_and_each_source_in_epoch_order():
    parts = [EpochSampler(range(0, 300), (7, 1)), EpochSampler(range(300, 320), (7, 2))]
    sampler = MixtureSampler(parts, [3.0, 1.0], seed=7)
    sources, draws = map(np.array, zip(*(sampler(n) for n in range(10_000)), strict=True))
    first = sources == 0
    assert first.mean() == 0.75 and ((draws < 300) == first).all()  # exactly k = 7500 per block of 10,000
    assert abs(first[:1000].mean() - 0.75) < 0.05  # well mixed within the block
    # Each source's draws walk its own epochs: the first 300 draws of source 0 are its 300 clips once each.
    assert sorted(draws[first][:300]) == list(range(300))
    assert sorted(draws[~first][:40]) == sorted(list(range(300, 320)) * 2)
    for numbers in (0, 1, 4321, 10_000, 23_456):  # across blocks
        counted = np.bincount([sampler(n)[0] for n in range(numbers)], minlength=2)
        assert sampler.drawn(numbers).tolist() == counted.tolist()
    # A draw is a function of the running number only.
    again = MixtureSampler([EpochSampler(range(0, 300), (7, 1)), EpochSampler(range(300, 320), (7, 2))], [3, 1], 7)
    assert [again(n) for n in range(12_345, 12_345 + 50)] == [sampler(n) for n in range(12_345, 12_345 + 50)]


def test_weights_are_apportioned_exactly_and_a_vanishing_weight_is_refused():
    parts = [EpochSampler(range(5), (0, i)) for i in range(3)]
    assert MixtureSampler(parts, [1, 1, 1], 0).k.tolist() == [3334, 3333, 3333]
    with pytest.raises(DataError, match="mixture weight below 1/10000"):
        MixtureSampler(parts[:2], [1.0, 1e-5], 0)


@pytest.fixture(scope="module")
def mixture(demo_root):
    """The built-in unlabelled clips (weight 3) and the sound-event clips (weight 1)."""
    cfgs = [
        source(kind="folder", path="unlabeled", weight=3.0),
        source(kind="esc50", path="esc50", weight=1.0),
    ]
    return read_mixture(cfgs, demo_root)


def test_a_mixture_of_labelled_and_unlabelled_sets_is_one_unlabelled_set_of_two_indexes(mixture, demo_root):
    alone = [read_dataset(c, demo_root) for c in (source("folder", path="unlabeled"), source("esc50", path="esc50"))]
    assert (mixture.names, mixture.weights) == (["unlabeled", "esc50"], [3.0, 1.0])
    # Each source keeps its own compiled index: the mixture is the list of them, nothing concatenated.
    assert [p.examples.path_offsets.filename for p in mixture.parts] == [
        d.examples.path_offsets.filename for d in alone
    ]
    assert len(mixture) == sum(map(len, alone)) and mixture.classes == [] and not mixture.multi_label
    assert mixture.example(1, len(alone[1]) - 1).labels == () and alone[1].examples[-1].labels != ()
    assert mixture.locate(len(alone[0])) == (1, 0) and mixture.locate(len(alone[0]) - 1) == (0, len(alone[0]) - 1)


def test_a_mixture_holds_out_the_clips_its_concatenation_would(mixture):
    rest, held = holdout(mixture, 9)
    n = len(mixture)
    expected = [mixture.example(*mixture.locate(int(i))).path for i in np.arange(9) * n // 9]
    assert [e.path for e in held.examples] == expected and held.classes == []
    from_each = [sum("/esc50/" not in e for e in expected), sum("/esc50/" in e for e in expected)]
    assert [len(p) for p in rest.parts] == [len(p) - k for p, k in zip(mixture.parts, from_each, strict=True)]
    assert sum(map(len, rest.parts)) == n - 9 and not {e.path for p in rest.parts for e in p.examples} & set(expected)


def test_a_mixture_loader_resumes_exactly_and_counts_each_source(mixture):
    features = FeatureConfig(target_length=128, crop="random")
    data = DataConfig(batch_size=8, num_parallel_calls=2)
    loader = AudioLoader(mixture, features, data, train=True, seed=1)
    batches = list(itertools.islice(iter(loader), 5))
    counts = loader.counts()
    esc50 = sum("/esc50/" in p for b in batches for p in b["path"])
    assert (counts["clips_seen/unlabeled"], counts["clips_seen/esc50"]) == (40 - esc50, esc50)
    resumed = AudioLoader(mixture, features, data, train=True, seed=1)
    resumed.load_state_dict({**loader.state_dict(), "batches": 2})
    got = list(itertools.islice(iter(resumed), 3))
    assert [b["path"] for b in got] == [b["path"] for b in batches[2:]]
    assert all(np.array_equal(a["fbank"], b["fbank"]) for a, b in zip(got, batches[2:], strict=True))


def test_pretraining_on_a_mixture_logs_each_source_s_draws(demo_root, tmp_path, capsys):
    pretrain_stage.main(
        ["--config", "configs/pretrain/demo.yaml", f"data.root={demo_root}", f"run_dir={tmp_path}"]
        + ["data.valid_holdout=8", "data.batch_size=8", "model.depth=1", "train.max_steps=4", "train.log_every=2"]
        + ["train.tensorboard=false", "data.train.weight=3", "data.mix_with=[{kind: esc50, path: esc50, weight: 1}]"]
    )
    last = read_metrics(tmp_path)[-1]
    drawn = last["clips_seen/unlabeled"], last["clips_seen/esc50"]
    assert sum(drawn) == 4 * 8 and 16 <= drawn[0] <= 32  # 75% expected; exact per 10,000 draws
    with pytest.raises(SystemExit):
        pretrain_stage.main(
            ["--config", "configs/pretrain/demo.yaml", f"data.root={demo_root}", f"run_dir={tmp_path}/b"]
            + ["data.balanced=true", "data.mix_with=[{kind: esc50, path: esc50}]"]
        )
    err = capsys.readouterr().err
    assert "data.balanced samples one labelled set; a mixture (data.mix_with) draws by weights" in err
