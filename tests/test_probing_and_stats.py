import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probes.__main__ import linear, table
from probes.config import ProbeConfig
from ssast.config import load_config
from ssast.data.pipeline import AudioLoader
from ssast.data.readers import DatasetConfig, read_dataset
from ssast.data.stats import StatsConfig, dataset_stats
from ssast.features import FeatureConfig, kaldi_fbank, pad_or_crop, prepare_waveform
from ssast.models import ASTEncoder, ModelConfig, SSASTModel, model_state
from ssast.probing import embed, fbank_statistics, fold_accuracy, linear_probe


def test_stats_average_batch_means_and_stds_of_padded_unnormalised_fbank(demo_root):
    cfg = StatsConfig(batch_size=10, features=FeatureConfig(target_length=300))
    cfg.data.root, cfg.data.train = str(demo_root), DatasetConfig(kind="folder", path="unlabeled")
    mean, std = dataset_stats(cfg)
    paths = sorted((demo_root / "unlabeled").glob("*.wav"))
    fbanks = []
    for p in paths:
        wave, sr = sf.read(p, dtype="float32")
        fbanks.append(pad_or_crop(kaldi_fbank(prepare_waveform(torch.from_numpy(wave), sr, cfg.features)), 300))
    batches = [torch.stack(fbanks[i:i + 10]) for i in range(0, len(fbanks), 10)]
    assert mean == pytest.approx(np.mean([b.mean().item() for b in batches]), abs=1e-4)
    assert std == pytest.approx(np.mean([b.std().item() for b in batches]), abs=1e-4)
    assert -12 < mean < 0 and 2 < std < 6


def test_embed_averages_windows_of_the_encoder_input():
    torch.manual_seed(0)
    encoder = ASTEncoder(ModelConfig(size="tiny", depth=1, input_tdim=64))
    fbank = torch.randn(3, 128, 128)
    out = embed(encoder, fbank, batch_size=4)
    with torch.no_grad():
        windows = [encoder.pool(encoder(fbank[:, i * 64:(i + 1) * 64]), "avgtok") for i in range(2)]
    assert out.shape == (3, 192)
    assert np.allclose(out, ((windows[0] + windows[1]) / 2).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="not a multiple"):
        embed(encoder, torch.randn(1, 100, 128))


def test_linear_probe_separates_blobs_and_not_noise():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 16)) * 4
    y = np.repeat(np.arange(5), 40)
    x = centres[y] + rng.standard_normal((200, 16))
    assert linear_probe(x[::2], y[::2], x[1::2], y[1::2]) == 1.0
    noise = rng.standard_normal((200, 16))
    assert linear_probe(noise[::2], y[::2], noise[1::2], y[1::2]) < 0.45
    folds = np.tile(np.arange(1, 6), 40)
    assert fold_accuracy(x, y, folds) == 1.0
    assert fbank_statistics(torch.ones(2, 10, 4)).tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]] * 2


def test_probe_stage_on_the_built_in_data(demo_root, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "seed0.pt"
    torch.save(model_state(SSASTModel(ModelConfig(size="tiny", depth=1, input_tdim=128))), checkpoint)
    cfg = load_config(ProbeConfig, "configs/probes/demo.yaml",
                      [f"data.root={demo_root}", "random_init_seeds=[0]", "model.depth=1", f"checkpoints=[{checkpoint}]",
                       f"output={tmp_path}/r.json"])
    results = linear(cfg)
    assert json.loads((tmp_path / "r.json").read_text()) == results
    assert set(results) == {"fbank mean+std", "random init", "pretrained"}
    for name, by_task in results.items():
        assert set(by_task) == {"keywords", "sound events"} and all(len(v) == 1 for v in by_task.values())
    # The random-init encoder of seed 0 is the pretraining stage's initialisation: the same weights saved as a
    # checkpoint give the same accuracies.
    assert results["random init"] == results["pretrained"]
    # Sound events: 5-fold cross-validation, each fold tested once on a model fitted on the other four.
    features = dataclasses.replace(cfg.features, target_length=512)
    folds = []
    for k in range(1, 6):
        data = read_dataset(DatasetConfig(kind="esc50", path="esc50", split=str(k)), demo_root)
        batches = list(AudioLoader(data, features, cfg.data, train=False, batch_size=64))
        folds.append((fbank_statistics(torch.cat([b["fbank"] for b in batches])),
                      torch.cat([b["target"] for b in batches]).argmax(1).numpy()))
    accuracy = []
    for k in range(5):
        train = [f for i, f in enumerate(folds) if i != k]
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, tol=1e-3))
        clf.fit(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]))
        accuracy.append((clf.predict(folds[k][0]) == folds[k][1]).mean())
    assert sum(len(y) for _, y in folds) == 125
    assert results["fbank mean+std"]["sound events"][0] == pytest.approx(np.mean(accuracy), abs=1e-12)
    assert results["fbank mean+std"]["sound events"][0] > 0.5  # 25 classes: chance is 0.04
    assert table({"x": {"t": [0.5, 0.7]}}, ["t"]).splitlines()[-1] == "| x | 60.0 +- 10.0 (n=2) |"
