"""The HEAR 2021 API on the shapes, dtypes and batch sizes it requires (CPU, and a GPU when there is one)."""

import pytest
import torch

from ssast import hear
from ssast.features import FeatureConfig, fbank_features
from ssast.models import ModelConfig, SSASTModel, model_state

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
    # 98 frames per second of 16-kHz audio; 16-frame patch columns every 16 frames, centred at 10 * (16i + 7.5)
    # + 12.5 ms; columns after the end of the sound are dropped
    centres = [10 * (16 * i + 7.5) + 12.5 for i in range(64) if 10 * (16 * i + 7.5) + 12.5 < seconds * 1000]
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
