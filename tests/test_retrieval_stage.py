"""Stores, indexes and probes from the command line, and the probe that runs while pretraining."""

import pytest
import torch

from probes.__main__ import main as probes_main
from ssast.eval.embeddings import Store
from ssast.eval.retrieval import evaluate
from ssast.models import ModelConfig, SSASTModel, model_state

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enc") / "enc.pt"
    torch.save(model_state(SSASTModel(ModelConfig(size="tiny", depth=1, input_tdim=128))), path)
    return path


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_build_eval_and_query_an_index_of_the_sound_events(demo_root, encoder_checkpoint, tmp_path, capsys, kind):
    common = [
        "--config",
        "configs/probes/extract_demo.yaml",
        f"data.root={demo_root}",
        f"checkpoint={encoder_checkpoint}",
        f"store_dir={tmp_path}/stores",
        f"index_dir={tmp_path}/index",
        f"index.kind={kind}",
    ]
    built = probes_main(["retrieval", "build", *common])
    assert built["n"] == 125 and built["kind"] == kind
    result = probes_main(["retrieval", "eval", *common, "k=5"])
    [store_dir] = list((tmp_path / "stores").iterdir())
    store = Store(store_dir)
    x = store.features("L1_avgtok")  # the first feature of the recipe
    expected = evaluate(x, store.label_array(), k=5)
    for key in ("precision_at_k", "recall_at_k", "map_at_k"):
        assert result[key] == pytest.approx(expected[key], abs=1e-9 if kind == "flat" else 0.05)
    assert f"clips: precision@5 {result['precision_at_k']:.4f}, recall@5 " in capsys.readouterr().out
    # an indexed clip finds itself first, with cosine similarity 1
    clip = store.paths[7]
    hits = probes_main(["retrieval", "query", *common, f"files=[{clip}]", "k=3"])
    assert hits[clip][0][0] == clip and hits[clip][0][1] == pytest.approx(1.0, abs=1e-4) and len(hits[clip]) == 3


def test_query_without_an_index_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        probes_main(
            [
                "retrieval",
                "query",
                "--config",
                "configs/probes/extract_demo.yaml",
                f"index_dir={tmp_path}",
                "files=[a.wav]",
            ]
        )
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and err == (
        f"python -m probes: error: no index in {tmp_path}: build one with python -m probes retrieval build"
    )


def test_an_index_in_the_way_is_refused_queries_show_labels_and_fbank_is_asked_by_name(
    demo_root, encoder_checkpoint, tmp_path, capsys
):
    common = [
        "--config",
        "configs/probes/extract_demo.yaml",
        f"data.root={demo_root}",
        f"store_dir={tmp_path}/stores",
        f"index_dir={tmp_path}/index",
        "index.kind=flat",
    ]
    with pytest.raises(SystemExit) as e:  # without checkpoint=: no silent fbank store
        probes_main(["retrieval", "build", *common])
    assert e.value.code == 1 and capsys.readouterr().err.strip() == (
        "python -m probes: error: config key 'checkpoint' must name a checkpoint or a Hugging Face AST directory, or "
        "be fbank (the fbank's mean and std, no encoder)"
    )
    assert not (tmp_path / "stores").exists()
    probes_main(["retrieval", "build", *common, "checkpoint=fbank"])
    before = (tmp_path / "index" / "index.faiss").read_bytes()
    with pytest.raises(SystemExit) as e:
        probes_main(["retrieval", "build", *common, f"checkpoint={encoder_checkpoint}"])
    assert e.value.code == 1 and capsys.readouterr().err.strip().splitlines()[-1] == (
        f"python -m probes: error: {tmp_path / 'index'} already holds an index (index.faiss, index.json, config.yaml): "
        f"choose another index_dir, or pass overwrite=true to replace it"
    )
    assert (tmp_path / "index" / "index.faiss").read_bytes() == before
    probes_main(["retrieval", "build", *common, f"checkpoint={encoder_checkpoint}", "overwrite=true"])
    assert (tmp_path / "index" / "index.faiss").read_bytes() != before
    store = Store(next(p for p in (tmp_path / "stores").iterdir() if Store(p).meta["weights"] != "fbank"))
    clip = store.paths[7]
    capsys.readouterr()
    hits = probes_main(["retrieval", "query", *common, f"files=[{clip}]", "k=2"])
    label = ",".join(store.classes[c] for c in store.labels[7])
    assert hits[clip][0] == (clip, pytest.approx(1.0, abs=1e-4), label)
    assert f"   1. {hits[clip][0][1]:.4f} {label}  {clip}" in capsys.readouterr().out.splitlines()


def test_each_probe_command_has_its_own_help(capsys):
    texts = {}
    for command in (["linear"], ["extract"], ["retrieval"]):
        with pytest.raises(SystemExit) as e:
            probes_main([*command, "--help"])
        texts[command[0]] = capsys.readouterr().out
        assert e.value.code == 0 and texts[command[0]].startswith(f"usage: python -m probes {command[0]}")
    assert "Fair linear probes" in texts["linear"] and "Embed one data set" in texts["extract"]
    assert "build|query|eval" in texts["retrieval"] and "query-by-example" in texts["retrieval"].lower()
