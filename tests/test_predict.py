"""Tagging files with a fine-tuned classifier: `finetune.predict`'s Python API and command line, bad input included."""

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.config import FinetuneRunConfig
from finetune.predict import Predictor
from finetune.predict import main as predict_main
from ssast.config import load_config
from ssast.models import ASTClassifier, model_state
from ssast.models.hf import export_hf


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint as a fine-tuning run writes it: weights, class names and the run's configuration."""
    cfg = load_config(
        FinetuneRunConfig,
        "configs/finetune/demo_speechcommands.yaml",
        ["model.size=tiny", "model.depth=1", "init=scratch"],
    )
    torch.manual_seed(0)
    model = ASTClassifier(cfg.model, 3)
    model.classes = ["yes", "no", "up"]
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save({**model_state(model), "config": dataclasses.asdict(cfg)}, path)
    return path


def run(capsys, *args) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of the command line."""
    with pytest.raises(SystemExit) as e:
        predict_main(list(map(str, args)))
    return e.value.code, capsys.readouterr().err.strip().splitlines()


def test_numpy_and_torch_waveforms_give_the_same_scores_and_top_k_takes_windows(checkpoint):
    predictor = Predictor(checkpoint)
    wave = np.random.default_rng(0).standard_normal(3 * 16000).astype(np.float32) * 0.1
    scores = predictor.scores(wave, 16000)
    assert scores.shape == (3, 3)  # 298 frames: three windows of 128
    assert torch.equal(scores, predictor.scores(torch.from_numpy(wave), 16000))
    assert torch.allclose(predictor.scores(np.repeat(wave[:, None], 2, 1), 16000), scores, atol=1e-6)  # channel 0
    assert predictor.top_k(scores, 2) == predictor.top_k(scores.mean(0), 2)
    assert [name for name, _ in predictor.top_k(scores, 10)] == [
        predictor.classes[i] for i in scores.mean(0).argsort(descending=True)
    ]  # k past the classes: all of them
    with pytest.raises(ValueError, match="NaN or inf samples"):
        predictor.scores(np.full(16000, np.nan, np.float32), 16000)


def test_bad_files_and_options_end_with_one_line(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "short.wav", np.zeros(10, np.float32), 16000)
    sf.write(tmp_path / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    prog = "python -m finetune.predict: error:"
    for name, reason in [
        ("short.wav", "10 samples, shorter than one frame (25 ms)"),
        ("nan.wav", "NaN or inf samples"),
        ("missing.wav", f"'{tmp_path / 'missing.wav'}' does not exist."),
    ]:
        code, err = run(capsys, "--checkpoint", checkpoint, tmp_path / name)
        assert code == 1 and err == [f"{prog} cannot read audio {tmp_path / name}: {reason}"]
    for k in ("-2", "0", "two"):
        code, err = run(capsys, "--checkpoint", checkpoint, tmp_path / "short.wav", "--top-k", k)
        assert code == 2 and err[-1].endswith(f"argument --top-k: must be a whole number >= 1, got '{k}'")


def test_a_hugging_face_directory_tags_and_a_broken_one_is_one_line(checkpoint, tmp_path, capsys):
    model = ASTClassifier(ASTClassifier(Predictor(checkpoint).model.cfg, 3).cfg, 3, "cls")
    model.classes = ["a", "b", "c"]
    export_hf(model, tmp_path / "hf", mean=-5.0, std=3.0)
    predictor = Predictor(tmp_path / "hf")
    assert (predictor.features.mean, predictor.features.std, predictor.classes) == (-5.0, 3.0, ["a", "b", "c"])
    (tmp_path / "hf" / "model.safetensors").unlink()
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    code, err = run(capsys, "--checkpoint", tmp_path / "hf", tmp_path / "a.wav")
    assert code == 1 and err == [
        f"python -m finetune.predict: error: {tmp_path / 'hf'} is not a Hugging Face AST "
        f"directory: model.safetensors not found"
    ]
