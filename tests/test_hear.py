"""The HEAR 2021 API on the shapes, dtypes and batch sizes it requires (CPU, and a GPU when there is one)."""

import pytest
import torch

from ssast.eval import hear
from ssast.features import FeatureConfig, fbank_features
from ssast.models import ModelConfig, SSASTModel, model_state

pytestmark = pytest.mark.unit

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hear") / "tiny.pt"
    state = model_state(SSASTModel(ModelConfig(size="tiny", depth=2, input_tdim=128)))
    torch.save({**state, "config": {"features": {"mean": -5.0, "std": 3.5}}}, path)
    return path


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_sounds, seconds", [(1, 0.5), (3, 1.0), (2, 2.7)])
def test_hear_api_shapes_dtypes_and_batches(checkpoint, device, n_sounds, seconds):
    model = hear.load_model(str(checkpoint)).to(device)
    assert model.sample_rate == 16000 and model.scene_embedding_size == model.timestamp_embedding_size == 192
    audio = torch.randn(n_sounds, int(seconds * 16000), device=device) * 0.1
    scene = hear.get_scene_embeddings(audio, model)
    frames, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert scene.shape == (n_sounds, 192) and scene.dtype == torch.float32 and scene.device.type == device
    # 98 frames per second of 16-kHz audio; 16-frame patch columns, the encoder run from frames 0, 4, 8 and 12:
    # columns centred every 40 ms at 10 * (4i + 7.5) + 12.5 ms; columns after the end of the sound are dropped
    centres = [10 * (4 * i + 7.5) + 12.5 for i in range(256) if 10 * (4 * i + 7.5) + 12.5 < seconds * 1000]
    assert frames.shape == (n_sounds, len(centres), 192) and frames.dtype == torch.float32
    assert timestamps.shape == (n_sounds, len(centres)) and timestamps.device.type == device
    assert timestamps[0].tolist() == pytest.approx(centres)
    # the same sound alone or in a batch gives the same embeddings
    alone = hear.get_scene_embeddings(audio[-1:], model)
    assert torch.allclose(alone[0], scene[-1], atol=1e-5)


def test_scene_embedding_of_one_window_is_the_avgtok_of_the_training_front_end(checkpoint):
    model = hear.load_model(str(checkpoint))
    audio = torch.randn(1, 20000) * 0.1  # 123 frames: one window of 128, padded
    expected_input = fbank_features(audio[0] - audio[0].mean(), FeatureConfig(target_length=128, mean=-5.0, std=3.5))
    with torch.no_grad():
        expected = model.encoder.pool(model.encoder(expected_input[None]), "avgtok")
    assert torch.allclose(hear.get_scene_embeddings(audio, model), expected, atol=1e-5)


def test_timestamps_every_40_ms_each_from_the_audio_around_it(checkpoint):
    """A timestamp of a shifted pass is the encoder on the audio shifted: cutting the first 40 ms of a sound moves
    its embeddings 40 ms earlier, exactly (the cut holds whole 10-ms frames, both sounds have zero mean)."""
    model = hear.load_model(str(checkpoint))
    assert model.offsets == [0, 4, 8, 12] and hear.load_model(str(checkpoint), 200).offsets == [0]
    torch.manual_seed(1)
    rest = torch.randn(1, 40000) * 0.1
    full = torch.cat([torch.zeros(1, 640), rest - rest.mean()], 1)  # 640 samples: 4 frames of 160
    cut = full[:, 640:]
    emb_full, ms_full = hear.get_timestamp_embeddings(full, model)
    emb_cut, ms_cut = hear.get_timestamp_embeddings(cut, model)
    assert (ms_full[0].diff() == 40).all()
    at = {round(m): i for i, m in enumerate(ms_full[0].tolist())}
    # the cut's passes from frames 0, 4 and 8 are the full sound's from 4, 8 and 12
    same = [(i, at[round(m) + 40]) for i, m in enumerate(ms_cut[0].tolist()) if (round(m - 87.5) // 40) % 4 != 3]
    assert len(same) > 20
    for i, j in same:
        assert torch.allclose(emb_cut[0, i], emb_full[0, j], atol=1e-5)
    # and a shifted pass is not an interpolation of its neighbours
    mid = (emb_full[0, 1:-1] - (emb_full[0, :-2] + emb_full[0, 2:]) / 2).norm(dim=1)
    assert (mid > 1e-3).all()
