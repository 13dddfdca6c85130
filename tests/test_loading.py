"""`load_model` on every kind of source the project reads, and every consumer taking the same sources: fine-tuning's
init, the probes, the HEAR module and the predictor."""

import dataclasses

import pytest
import torch

from finetune.predict import Predictor
from ssast.config import load_config
from ssast.eval import hear
from ssast.models import (
    ASTClassifier,
    CheckpointError,
    ModelConfig,
    SSASTModel,
    export_official,
    model_state,
    resized,
)
from ssast.models.formats import weights_hash
from ssast.models.hf import export_hf
from ssast.models.loading import load_encoder, load_model
from ssast.train.finetuning import FinetuneRunConfig, build_model

pytestmark = pytest.mark.unit

GEOMETRY = dict(fstride=16, tstride=16, input_tdim=128)  # what a released fine-tuned file does not store
RECIPE = ["model.size=tiny", "model.depth=1"]


def recipe(*overrides):
    return load_config(FinetuneRunConfig, "configs/finetune/demo_speechcommands.yaml", [*RECIPE, *overrides])


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{kind: (path, the model written there)} of every source kind, tiny one-block models with 128-frame inputs."""
    folder = tmp_path_factory.mktemp("sources")
    torch.manual_seed(0)
    pretrained = SSASTModel(ModelConfig("tiny", 1, input_tdim=128))
    classifier = ASTClassifier(ModelConfig("tiny", 1, input_tdim=128), 4, "cls")
    classifier.classes = ["a", "b", "c", "d"]
    run = dataclasses.asdict(recipe("init=scratch"))
    files = {
        "own pretraining": {**model_state(pretrained), "config": run},
        "own fine-tuned": {**model_state(classifier), "config": run},
        "released pretraining": export_official(pretrained),
        "released fine-tuned": export_official(classifier),
    }
    out = {}
    for kind, state in files.items():
        torch.save(state, folder / f"{kind.replace(' ', '_')}.pt")
        out[kind] = (folder / f"{kind.replace(' ', '_')}.pt", pretrained if "pretraining" in kind else classifier)
    out["hugging face"] = (export_hf(classifier, folder / "hf"), classifier)
    return out


KINDS = ["own pretraining", "own fine-tuned", "released pretraining", "released fine-tuned", "hugging face"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_source_loads_with_its_weights_and_front_end(sources, kind):
    path, model = sources[kind]
    loaded = load_model(path, **GEOMETRY)
    assert loaded.kind == ("pretraining" if "pretraining" in kind else "classifier")
    x = torch.randn(2, 128, 128)
    with torch.no_grad():
        assert (loaded.model.v.eval()(x) - model.v.eval()(x)).abs().max() < 1e-5
    assert loaded.features().target_length == 128 and loaded.features().freqm == 0
    assert bool(loaded.run) == kind.startswith("own")


@pytest.mark.parametrize("kind", KINDS)
def test_every_consumer_takes_every_source(sources, kind):
    path, model = sources[kind]
    x = torch.randn(2, 128, 128)
    encoder = load_encoder(path, **GEOMETRY)  # what the probes load
    assert weights_hash(encoder) == weights_hash(model.v) or kind == "hugging face"  # HF keeps its own norm eps
    assert hear.load_model(str(path), **GEOMETRY).encoder.cfg.input_tdim == 128
    tuned = build_model(recipe(f"init={path}", "new_head=true", "finetune.pooling=cls"), ["x", "y"])
    with torch.no_grad():
        assert (tuned.v.eval()(x) - model.v.eval()(x)).abs().max() < 1e-5
    if kind in ("own fine-tuned", "hugging face"):
        assert Predictor(path).classes == ["a", "b", "c", "d"]
    else:  # no class names or front end stored (a released fine-tuned file not even its geometry): one line
        with pytest.raises(CheckpointError, match="neither a fine-tuning checkpoint|does not store fstride"):
            Predictor(path)


def test_a_pretraining_encoder_resized_to_another_input_length(sources):
    """`resized` adapts the positional embedding the way fine-tuning does (the centred time slice for a shorter
    input), and `load_encoder` applies it to a pretraining checkpoint given another input_tdim (the probes)."""
    torch.manual_seed(0)
    ssl = SSASTModel(ModelConfig("tiny", 1, input_tdim=256))
    short = resized(ssl.v, 128)
    assert resized(ssl.v, 256) is ssl.v and short.cfg.input_tdim == 128 and short.grid == (8, 8)
    p = ssl.v.num_prefix  # cls and dist tokens
    grid = ssl.v.pos_embed[:, p:].reshape(8, 16, -1)
    assert torch.equal(short.pos_embed[:, p:].reshape(8, 8, -1), grid[:, 4:12])
    assert torch.equal(short.pos_embed[:, :p], ssl.v.pos_embed[:, :p])
    x = torch.randn(2, 128, 128)
    with torch.no_grad():
        assert torch.equal(short.eval()(x), ASTClassifier.from_pretrained(ssl, 3, input_tdim=128).v.eval()(x))
    path, model = sources["own pretraining"]
    longer = load_encoder(path, input_tdim=256)
    assert longer.cfg.input_tdim == 256 and longer.num_patches == 8 * 16
    ours, theirs = longer.state_dict(), model.v.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if k != "pos_embed")
    wide, narrow = longer.pos_embed[0, p:].reshape(8, 16, -1), model.v.pos_embed[0, p:].reshape(8, 8, -1)
    assert longer.pos_embed.shape == (1, p + 128, 192)  # bilinear in time: the end columns are the old ones
    assert torch.allclose(wide[:, 0], narrow[:, 0]) and torch.allclose(wide[:, -1], narrow[:, -1])
