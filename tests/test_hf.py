"""Hugging Face AST format against the `transformers` implementation itself (small random models, nothing
downloaded)."""

import json

import pytest
import torch
from transformers import ASTConfig, ASTForAudioClassification

from finetune.__main__ import main as finetune_main
from probes.__main__ import main as probes_main
from ssast.eval import hear
from ssast.models import ASTClassifier, CheckpointError, ModelConfig, load_model
from ssast.models.formats import weights_hash
from ssast.models.hf import export_hf, load_hf

pytestmark = pytest.mark.integration


def logits(model, x):
    with torch.no_grad():
        out = model.eval()(x)
    return getattr(out, "logits", out)


@pytest.mark.parametrize("size, depth, stride, length", [("tiny", 2, 10, 100), ("small", 1, 16, 64)])
def test_a_transformers_directory_loads_with_the_same_logits_and_exports_back(tmp_path, size, depth, stride, length):
    dim, heads = {"tiny": (192, 3), "small": (384, 6)}[size]
    torch.manual_seed(0)
    config = ASTConfig(
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=4 * dim,
        patch_size=16,
        frequency_stride=stride,
        time_stride=stride + 2,
        max_length=length,
        num_mel_bins=128,
        num_labels=6,
        id2label={i: f"tag{i}" for i in range(6)},
    )
    theirs = ASTForAudioClassification(config)
    for p in theirs.parameters():  # away from the initialisation: LayerNorms and biases not at 1 and 0
        p.data.add_(torch.randn_like(p) * 0.05)
    theirs.save_pretrained(tmp_path / "hf")
    ours = load_hf(tmp_path / "hf")
    x = torch.randn(3, length, 128)
    assert ours.pooling == "cls" and ours.classes == [f"tag{i}" for i in range(6)]
    assert ours.v.grid == ((128 - 16) // stride + 1, (length - 16) // (stride + 2) + 1)
    assert (logits(ours, x) - logits(theirs, x)).abs().max() < 1e-5
    # ... and back: transformers reads the export with the same logits
    export_hf(ours, tmp_path / "back")
    again = ASTForAudioClassification.from_pretrained(tmp_path / "back")
    assert (logits(again, x) - logits(theirs, x)).abs().max() < 1e-5
    assert again.config.id2label[5] == "tag5"


def test_a_model_of_this_project_exports_to_transformers(tmp_path):
    torch.manual_seed(0)
    ours = ASTClassifier(ModelConfig("tiny", 2, 16, 16, 10, 10, 128, 100), 7, "cls")
    ours.classes = [f"c{i}" for i in range(7)]
    export_hf(ours, tmp_path, mean=-5.0, std=3.0)
    theirs = ASTForAudioClassification.from_pretrained(tmp_path)
    x = torch.randn(3, 100, 128)
    a, b = logits(ours, x), logits(theirs, x)
    # the head's LayerNorm eps is 1e-5 here and the format's single eps 1e-6 (see ssast.models.hf)
    assert (a - b).abs().max() < 2e-5 * a.abs().max()
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["mean"] == -5.0
    assert (logits(load_hf(tmp_path), x) - b).abs().max() < 1e-5


@pytest.mark.parametrize(
    "cfg, pooling, message",
    [
        (ModelConfig("tiny", 1, input_tdim=64), "avgtok", "pooling is avgtok"),
        (ModelConfig("tiny", 1, 128, 2, 128, 1, input_tdim=64), "cls", "patches are 128x2"),
        (ModelConfig("base_nokd", 1, input_tdim=64), "cls", "one prefix token"),
    ],
)
def test_models_the_format_cannot_hold_are_refused(tmp_path, cfg, pooling, message):
    with pytest.raises(CheckpointError, match=message):
        export_hf(ASTClassifier(cfg, 3, pooling), tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_a_folder_that_is_not_an_ast_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="not a Hugging Face AST directory: config.json not found"):
        load_hf(tmp_path)


@pytest.fixture
def hf_directory(tmp_path):
    torch.manual_seed(0)
    model = ASTClassifier(ModelConfig("tiny", 1, 16, 16, 16, 16, 128, 128), 3, "cls")
    return export_hf(model, tmp_path / "hf", mean=-5.0, std=3.0), model


def test_every_stage_reads_a_hugging_face_directory(demo_root, hf_directory, tmp_path):
    directory, model = hf_directory
    loaded = load_model(directory)
    assert loaded.kind == "classifier" and loaded.features().mean == -5.0 and loaded.features().target_length == 128
    assert hear.load_model(str(directory)).features.std == 3.0
    store = probes_main(
        [
            "extract",
            "--config",
            "configs/probes/extract_demo.yaml",
            f"data.root={demo_root}",
            f"checkpoint={directory}",
            f"store_dir={tmp_path}/stores",
            "features.target_length=128",
        ]
    )
    assert store.meta["weights"] == weights_hash(model.v) and store.features("L1_avgtok").shape == (125, 192)


def test_a_broken_hugging_face_directory_is_one_line_everywhere(demo_root, hf_directory, capsys):
    directory, _ = hf_directory
    (directory / "model.safetensors").unlink()
    message = f"{directory} is not a Hugging Face AST directory: model.safetensors not found"
    with pytest.raises(CheckpointError, match=message):
        hear.load_model(str(directory))
    for main, prog, args in [
        (
            finetune_main,
            "python -m finetune",
            [
                "--config",
                "configs/finetune/demo_speechcommands.yaml",
                f"init={directory}",
                f"data.root={demo_root}/speechcommands",
            ],
        ),
        (
            probes_main,
            "python -m probes",
            [
                "extract",
                "--config",
                "configs/probes/extract_demo.yaml",
                f"checkpoint={directory}",
                f"data.root={demo_root}",
            ],
        ),
    ]:
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 1 and capsys.readouterr().err.strip().splitlines() == [f"{prog}: error: {message}"]
