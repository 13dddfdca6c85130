"""Tagging files with a fine-tuned classifier: `finetune.predict`'s Python API and command line, bad input included."""

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.predict import Predictor
from finetune.predict import main as predict_main
from ssast.config import load_config
from ssast.models import ASTClassifier, model_state
from ssast.models.hf import export_hf
from ssast.train.finetuning import FinetuneRunConfig

pytestmark = pytest.mark.integration


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


def test_bad_files_are_one_line_each_and_the_others_are_tagged(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "good.wav", np.zeros(16000, np.float32), 16000)
    sf.write(tmp_path / "short.wav", np.zeros(10, np.float32), 16000)
    sf.write(tmp_path / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    (tmp_path / "clip.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))  # AAC: not a libsndfile format
    (tmp_path / "folder").mkdir()
    reasons = {
        "short.wav": "10 samples, shorter than one frame (25 ms)",
        "nan.wav": "NaN or inf samples",
        "missing.wav": f"'{tmp_path / 'missing.wav'}' does not exist.",
        "folder": "is a folder, not an audio file",
        "clip.m4a": "The input audio cannot be decoded. Format not recognised. (libsndfile reads wav, flac, ogg and "
        "mp3: convert other formats, e.g. with prepare's flac=)",
    }
    files = [tmp_path / name for name in ["short.wav", "nan.wav", "good.wav", "missing.wav", "folder", "clip.m4a"]]
    code, err = run(capsys, f"checkpoint={checkpoint}", *files)
    prog = "python -m finetune.predict"
    assert code == 1 and err == [
        *[f"{prog}: cannot read audio {p}: {reasons[p.name]}" for p in files if p.name != "good.wav"],
        f"{prog}: error: 5 of 6 files could not be read",
    ]
    assert capsys.readouterr().out == ""  # run() read it: the good file's line came first
    for k, message in [("-2", "must be >= 1, got -2"), ("0", "must be >= 1, got 0"), ("two", "must be int, got 'two'")]:
        code, err = run(capsys, f"checkpoint={checkpoint}", tmp_path / "good.wav", f"top_k={k}")
        assert code == 2 and err == [f"{prog}: error: config key 'top_k' {message}"]
    code, err = run(capsys, f"checkpoint={checkpoint}", tmp_path / "good.wav", "--top-k", "3")
    assert code == 2 and err == [f"{prog}: error: '--top-k' is not an option: keys go without dashes, as top_k=VALUE"]


def test_windows_are_labelled_by_their_span_in_the_file(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "long.wav", np.zeros(int(3.5 * 16000), np.float32), 16000)  # 348 frames: 3 windows of 128
    predict_main([f"checkpoint={checkpoint}", str(tmp_path / "long.wav"), "windows=true", "top_k=1"])
    spans = [line.split(" s:")[0].strip() for line in capsys.readouterr().out.splitlines()[1:]]
    assert spans == ["0.00-1.28", "1.28-2.56", "2.56-3.50"]


def test_a_hugging_face_directory_tags_and_a_broken_one_is_one_line(checkpoint, tmp_path, capsys):
    model = ASTClassifier(ASTClassifier(Predictor(checkpoint).model.cfg, 3).cfg, 3, "cls")
    model.classes = ["a", "b", "c"]
    export_hf(model, tmp_path / "hf", mean=-5.0, std=3.0)
    predictor = Predictor(tmp_path / "hf")
    assert (predictor.features.mean, predictor.features.std, predictor.classes) == (-5.0, 3.0, ["a", "b", "c"])
    (tmp_path / "hf" / "model.safetensors").unlink()
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    code, err = run(capsys, f"checkpoint={tmp_path / 'hf'}", tmp_path / "a.wav")
    assert code == 1 and err == [
        f"python -m finetune.predict: error: {tmp_path / 'hf'} is not a Hugging Face AST "
        f"directory: model.safetensors not found"
    ]
