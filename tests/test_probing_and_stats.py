import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from support.stages import run_stage

from probes.commands import linear
from probes.config import ProbeConfig
from ssast.config import load_config
from ssast.data.index import read_dataset
from ssast.data.loader import AudioLoader
from ssast.data.sources import source
from ssast.data.stats import StatsConfig, dataset_stats
from ssast.eval.embeddings import EmbedConfig, Store, embed_batch, extract, feature_names
from ssast.eval.linear_probe import fair_probe, mean_std_ci, probe_scores
from ssast.eval.probe_suite import evaluations
from ssast.eval.tables import table
from ssast.features import FeatureConfig, kaldi_fbank, pad_or_crop, prepare_waveform
from ssast.models import ASTEncoder, ModelConfig, SSASTModel, model_state
from ssast.models.loading import encoder_and_front_end

pytestmark = pytest.mark.integration


def test_stats_average_batch_means_and_stds_of_padded_unnormalised_fbank(demo_root):
    cfg = StatsConfig(batch_size=10, features=FeatureConfig(target_length=300))
    cfg.data.root, cfg.data.train = str(demo_root), source(kind="folder", path="unlabeled")
    mean, std = dataset_stats(cfg)
    paths = sorted((demo_root / "unlabeled").glob("*.wav"))
    fbanks = []
    for p in paths:
        wave, sr = sf.read(p, dtype="float32")
        fbanks.append(pad_or_crop(kaldi_fbank(prepare_waveform(torch.from_numpy(wave), sr, cfg.features)), 300))
    batches = [torch.stack(fbanks[i : i + 10]) for i in range(0, len(fbanks), 10)]
    assert mean == pytest.approx(np.mean([b.mean().item() for b in batches]), abs=1e-4)
    assert std == pytest.approx(np.mean([b.std().item() for b in batches]), abs=1e-4)
    assert -12 < mean < 0 and 2 < std < 6


def test_poolings_and_layers_of_the_encoder_with_windows_averaged():
    torch.manual_seed(0)
    encoder = ASTEncoder(ModelConfig(size="tiny", depth=2, input_tdim=64)).eval()
    fbank = torch.randn(3, 128, 128)
    cfg = EmbedConfig(
        layers=[1, -1], poolings=["avgtok", "cls", "meanstd", "freq"], layer_mix=["mean", "concat"], batch_size=4
    )
    out = embed_batch(encoder, fbank, cfg)
    shapes = {"avgtok": 192, "cls": 192, "meanstd": 384, "freq": 8 * 192}
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        **{f"{layer}_{p}": (3, d) for layer in ("L1", "L2", "Lmean") for p, d in shapes.items()},
        **{f"Lcat_{p}": (3, 2 * d) for p, d in shapes.items()},
    }
    assert torch.allclose(out["Lmean_cls"], (out["L1_cls"] + out["L2_cls"]) / 2, atol=1e-6)
    assert torch.equal(out["Lcat_freq"], torch.cat([out["L1_freq"], out["L2_freq"]], 1))
    assert list(out) == feature_names(encoder, cfg)
    with torch.no_grad():
        windows = [encoder.forward_layers(fbank[:, i * 64 : (i + 1) * 64]) for i in range(2)]
    final = [w[-1] for w in windows]
    first = [w[0] for w in windows]
    assert torch.allclose(out["L2_avgtok"], sum(t[:, 2:].mean(1) for t in final) / 2, atol=1e-6)
    assert torch.allclose(out["L1_cls"], sum(t[:, :2].mean(1) for t in first) / 2, atol=1e-6)
    freq = sum(t[:, 2:].reshape(3, 8, 4, 192).mean(2).flatten(1) for t in final) / 2  # grid 8 x 4
    assert torch.allclose(out["L2_freq"], freq, atol=1e-6)
    assert torch.allclose(out["L1_meanstd"][:, 192:], sum(t[:, 2:].std(1) for t in first) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="not a multiple"):
        embed_batch(encoder, torch.randn(1, 100, 128), EmbedConfig())


def blobs(seed=0, n=300, classes=5, d=16, spread=4.0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n // classes)
    return rng.standard_normal((classes, d))[y] * spread + rng.standard_normal((n, d)), y


def test_fair_probe_separates_blobs_and_is_at_chance_on_shuffled_labels():
    x, y = blobs()
    folds = np.tile(np.arange(5), 60)

    def cv(labels):
        scores = []
        for k in range(5):
            train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            inner = [(train[folds[train] != j], train[folds[train] == j]) for j in range(5) if j != k]
            scores.append(fair_probe({"x": x}, labels, train, test, inner, [0.01, 1.0]).score)
        return np.mean(scores)

    assert cv(y) == 1.0
    assert cv(np.random.default_rng(1).permutation(y)) < 0.3  # 5 classes: chance 0.2


def test_the_feature_and_c_are_chosen_without_the_test_part():
    """The choice must not move when only the test labels change; a probe that chose on the test part would
    (checked here on the same data, so that this test can fail)."""
    rng = np.random.default_rng(0)
    x, y = blobs(spread=0.6)
    features = {"signal": x, "noise": rng.standard_normal(x.shape)}
    order = rng.permutation(len(y))
    train, test = order[:200], order[200:]
    inner = [(train[:150], train[150:])]
    cs = [0.001, 0.1, 10.0]
    choices = set()
    for trial in range(4):
        labels = y.copy()
        if trial:
            labels[test] = rng.permutation(labels[test]) if trial < 3 else (labels[test] + 1) % 5
        r = fair_probe(features, labels, train, test, inner, cs)
        choices.add((r.feature, r.c))
        leaky = max(
            ((f, c) for f in features for c in cs),
            key=lambda fc: (
                probe_scores(features[fc[0]][train], labels[train], features[fc[0]][test], fc[1]).argmax(1)
                == labels[test]
            ).mean(),
        )
        choices_if_leaky = locals().setdefault("leaky_choices", set())
        choices_if_leaky.add(leaky)
    assert choices == {("signal", r.c)}
    assert len(locals()["leaky_choices"]) > 1


def test_torch_and_sklearn_probes_agree(demo_root, tmp_path):
    """Both solvers minimise the same objective: on the demo keyword set's fbank statistics (and on blobs) they
    predict the same classes."""
    cfg = load_config(ProbeConfig, "configs/probes/demo.yaml", [f"data.root={demo_root}"])
    stores = {
        p: extract(
            None,
            read_dataset(source(kind="speechcommands", path="speechcommands", split=s), demo_root),
            cfg.features.resolved(None, "the fbank statistics"),
            cfg.data,
            cfg.embed,
            tmp_path,
        )
        for p, s in (("train", "training"), ("test", "testing"))
    }
    x = {p: s.features("fbank") for p, s in stores.items()}
    y = {p: s.label_array() for p, s in stores.items()}
    for c in (0.1, 1.0):
        a = probe_scores(x["train"], y["train"], x["test"], c, solver="sklearn", n_classes=35).argmax(1)
        b = probe_scores(x["train"], y["train"], x["test"], c, solver="torch", n_classes=35).argmax(1)
        assert abs((a == y["test"]).mean() - (b == y["test"]).mean()) <= 0.005 and (a == b).mean() >= 0.95
    bx, by = blobs(spread=0.5)
    a = probe_scores(bx[:200], by[:200], bx[200:], 1.0, solver="sklearn")
    b = probe_scores(bx[:200], by[:200], bx[200:], 1.0, solver="torch")
    assert np.abs(a - b).max() < 2e-3


def test_mean_std_and_confidence_interval():
    mean, std, ci = mean_std_ci([0.5, 0.7, 0.6])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    assert ci == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-6)  # t(0.975, 2)
    assert mean_std_ci([0.4]) == (0.4, 0.0, 0.0)


@pytest.mark.slow
def test_store_is_reused_and_the_same_with_one_or_two_processes(demo_root, tmp_path):
    common = [
        "extract",
        "--config",
        "configs/probes/extract_demo.yaml",
        f"data.root={demo_root}",
        "dataset.path=esc50",
        "embed.poolings=[avgtok,freq]",
        "data.batch_size=16",
    ]
    torch.manual_seed(0)
    torch.save(model_state(SSASTModel(ModelConfig(size="tiny", depth=1, input_tdim=128))), tmp_path / "enc.pt")
    run_stage("probes", *common, f"checkpoint={tmp_path}/enc.pt", f"store_dir={tmp_path}/one")
    run_stage(
        "torch.distributed.run", "--nproc_per_node", "2", "-m", "probes", *common, f"checkpoint={tmp_path}/enc.pt",
        f"store_dir={tmp_path}/two",
    )  # fmt: skip
    [a], [b] = [list((tmp_path / d).iterdir()) for d in ("one", "two")]
    assert a.name == b.name  # the same key: weights, recipe and clips
    sa, sb = Store(a), Store(b)
    assert (sa.meta["shards"], sb.meta["shards"], sb.meta["rows"]) == (1, 2, [63, 62])
    assert sa.paths == sb.paths and sa.labels == sb.labels and len(sa.paths) == 125
    for name in ("L1_avgtok", "L1_freq"):
        assert np.allclose(sa.features(name), sb.features(name), atol=1e-5)
    # the same inputs again: the store is found, nothing is computed
    before = (a / "shard0" / "L1_avgtok.npy").stat().st_mtime_ns
    run_stage("probes", *common, f"checkpoint={tmp_path}/enc.pt", f"store_dir={tmp_path}/one")
    assert (a / "shard0" / "L1_avgtok.npy").stat().st_mtime_ns == before


@pytest.mark.slow
def test_extracting_20k_clips_keeps_memory_flat(demo_root, tmp_path):
    """Peak RSS of a process extracting 20,000 clips (the demo keywords listed over and over) against 2,000."""
    clips = sorted(str(p) for p in (demo_root / "speechcommands").glob("*/*.wav") if "_background" not in str(p))
    script = (
        "import sys, torch\n"
        "from ssast.data.sampling import DataConfig\nfrom ssast.data.index import Dataset, Example\n"
        "from ssast.eval.embeddings import EmbedConfig, extract\nfrom ssast.features import FeatureConfig\n"
        "from ssast.models import ASTEncoder, ModelConfig\n"
        "paths = open(sys.argv[1]).read().split()\nn = int(sys.argv[2])\n"
        "hwm = lambda: next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024\n"
        "torch.manual_seed(0)\nencoder = ASTEncoder(ModelConfig(size='tiny', depth=4, input_tdim=128))\n"
        "base = hwm()\n"
        "store = extract(encoder, Dataset([Example(paths[i % len(paths)], (0,)) for i in range(n)], ['x']),"
        " FeatureConfig(target_length=128), DataConfig(num_parallel_calls=2), EmbedConfig(poolings=['avgtok', 'freq']),"
        " sys.argv[3])\n"
        "assert len(store.index) == n\n"
        # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the forked parent (pytest) into exec.
        # The baseline (imports and the model, about 750 MB) depends on the machine; what extraction adds does not.
        "print(base, hwm())\n"
    )
    (tmp_path / "paths.txt").write_text("\n".join(clips))
    peak, added = {}, {}
    for n in (2000, 20000):
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "paths.txt"), str(n), str(tmp_path / str(n))],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        base, peak[n] = map(int, out.stdout.split()[-2:])
        added[n] = peak[n] - base
    print(f"peak RSS: {peak} MB, added by extraction: {added} MB")
    assert added[20000] < 300 and added[20000] - added[2000] < 100


@pytest.mark.slow
def test_probe_stage_on_the_built_in_data(demo_root, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "seed0.pt"
    torch.save(model_state(SSASTModel(ModelConfig(size="tiny", depth=1, input_tdim=128))), checkpoint)
    cfg = load_config(
        ProbeConfig,
        "configs/probes/demo.yaml",
        [
            f"data.root={demo_root}",
            "random_init_seeds=[0]",
            "model.depth=1",
            f"checkpoints=[{checkpoint}]",
            f"output={tmp_path}/r.json",
            f"store_dir={tmp_path}/stores",
            "embed.layers=[1]",
            "knn.k=5",
        ],
    )
    results = linear(cfg)
    assert json.loads((tmp_path / "r.json").read_text()) == results
    assert (tmp_path / "r.sweep.png").stat().st_size > 1000
    assert set(results) == {"fbank mean+std", "random init", "pretrained"}
    for by_task in results.values():
        assert set(by_task) == {"keywords", "sound events"} and all(len(v) == 1 for v in by_task.values())
    # The random-init encoder of seed 0 is the pretraining stage's initialisation: the same weights saved as a
    # checkpoint give the same numbers.
    assert results["random init"] == results["pretrained"]
    # Sound events: 5 folds, each tested once after choosing C on the other four in turn; fbank statistics
    # computed here independently of the store, with the checkpoint's front end (it stores none: AudioSet's).
    trained = encoder_and_front_end(checkpoint)[1]
    assert (trained.mean, trained.std) == (FeatureConfig().mean, FeatureConfig().std)
    features = dataclasses.replace(cfg.features.resolved(trained, "the fbank statistics"), target_length=512)
    x, y, fold = [], [], []
    for k in range(1, 6):
        data = read_dataset(source(kind="esc50", path="esc50", split=str(k)), demo_root)
        for batch in AudioLoader(data, features, cfg.data, train=False, batch_size=64):
            x.append(torch.cat([batch["fbank"].mean(1), batch["fbank"].std(1)], 1).numpy())
            y.append(batch["target"].argmax(1).numpy())
            fold += [k] * len(batch["path"])
    x, y, fold = np.concatenate(x), np.concatenate(y), np.array(fold)
    scores = []
    for k in range(1, 6):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        inner = [(np.flatnonzero((fold != k) & (fold != j)), np.flatnonzero(fold == j)) for j in range(1, 6) if j != k]
        scores.append(fair_probe({"fbank": x}, y, train, test, inner, cfg.cs, tol=cfg.tol).score)
    assert len(y) == 125 and results["fbank mean+std"]["sound events"][0]["score"] == pytest.approx(
        np.mean(scores), abs=1e-9
    )
    assert results["fbank mean+std"]["sound events"][0]["score"] > 0.5  # 25 classes: chance is 0.04
    assert results["pretrained"]["keywords"][0]["choice"][0].split()[0] in ("L1_avgtok", "L1_freq")
    assert 0 <= results["pretrained"]["keywords"][0]["knn"] <= 1
    line = table({"x": {"t": [{"score": 0.5}, {"score": 0.7}]}}, ["t"]).splitlines()[-1]
    assert line == "| x | 60.0 +- 14.1 [+-127.1] (n=2) |"


def test_tables_name_the_k_of_retrieval_and_a_one_layer_sweep_has_whole_layer_ticks(tmp_path, monkeypatch):
    import matplotlib.figure

    from ssast.eval.tables import plot_sweep

    result = {"score": 0.5, "retrieval": 0.25, "retrieval_k": 10, "by_feature": {"L4_avgtok": 0.5, "L4_freq": 0.6}}
    assert table({"x": {"t": [result]}}, ["t"]).splitlines()[-1] == "| x, retrieval mAP@10 | 25.0 |"
    drawn = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    plot_sweep({"x": {"t": [result]}}, ["t"], tmp_path / "sweep.png")
    assert list(drawn[0].axes[0].get_xticks()) == [4]


def test_protocol_splits_never_put_a_test_row_in_training():
    from probes.config import ProbeTaskConfig

    class Fake:
        def __init__(self, n):
            self.index = np.arange(n)

    folds = evaluations(ProbeTaskConfig(protocol="folds", folds=[1, 2, 3]), {"1": Fake(4), "2": Fake(5), "3": Fake(6)})
    for train, test, inner in folds:
        assert not set(train) & set(test) and all(set(a) | set(b) == set(train) for a, b in inner)
    assert [len(t) for _, t, _ in folds] == [4, 5, 6]
    split = evaluations(ProbeTaskConfig(valid_fraction=0.25), {"train": Fake(8), "test": Fake(3)})
    ((train, test, [(fit, held)]),) = split
    assert (
        list(test) == [8, 9, 10] and len(held) == 2 and not set(fit) & set(held) and set(fit) | set(held) == set(train)
    )


def test_a_multi_label_task_reports_map_on_its_eval_manifest(demo_root, tmp_path):
    labels = "audioset/class_labels_indices.csv"
    cfg = load_config(
        ProbeConfig,
        "configs/probes/demo.yaml",
        [
            f"data.root={demo_root}",
            f"store_dir={tmp_path}",
            "cs=[1.0]",
            "retrieval_k=5",
            f"tasks=[{{name: tags, dataset: {{kind: json, path: audioset/train.json, labels: {labels}}}, "
            f"test: {{kind: json, path: audioset/eval.json, labels: {labels}}}, valid_fraction: 0.25, "
            "target_length: 128}]",
        ],
    )
    result = linear(cfg)["fbank mean+std"]["tags"][0]
    stores = {
        p: Store(next(d for d in tmp_path.iterdir() if len(Store(d).index) == n))
        for p, n in (("train", 24), ("test", 12))
    }
    x, y = ({p: s.features("fbank") for p, s in stores.items()}, {p: s.label_array() for p, s in stores.items()})
    assert y["train"].shape == (24, 26)  # multi-hot
    scores = probe_scores(x["train"], y["train"], x["test"], 1.0, multi_label=True, tol=cfg.tol)
    from ssast.eval.metrics import mean_average_precision

    assert result["score"] == pytest.approx(mean_average_precision(y["test"], scores), abs=1e-9)
    assert 0 < result["retrieval"] <= 1
