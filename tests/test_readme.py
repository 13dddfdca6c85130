"""Every page of the documentation (README.md, CONTRIBUTING.md, docs/) holds: each example command runs (a stage checks
its recipe and keys with ``--print-config``, the SLURM launcher prints its script with ``--dry-run``, a tool knows its
flags), each Python example runs, each relative link resolves. A renamed key, recipe, flag or page fails here instead
of in a reader's terminal."""

import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").rglob("*.md"))]


def text() -> str:
    return "\n".join(page.read_text() for page in PAGES)


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250
    assert {"make demo", "make test"} <= {line.split("#")[0].strip() for line in lines}
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md|CONTRIBUTING\.md)\)", README.read_text()))
    assert linked == {str(p.relative_to(ROOT)) for p in PAGES[1:]}  # every page is one link away


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert [t for t in local if not (page.parent / t).exists()] == []


def commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text(), re.S)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in "\n".join(blocks).replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith(("python -m ", "torchrun "))]


def test_the_readme_has_examples_of_every_entry_point():
    modules = {re.search(r"-m (\S+)", c).group(1) for c in commands()}
    assert modules >= {
        *("pretrain", "finetune", "finetune.predict", "probes", "slurm"),
        *("ssast.demo", "ssast.demo.report", "ssast.data.prepare", "ssast.data.shards", "ssast.data.stats"),
    }


@pytest.mark.parametrize("command", commands())
def test_readme_command_runs(command, demo_root, monkeypatch, capsys):
    """In process, as ``python -m`` runs it: the stage or tool checks its arguments and prints its configuration (the
    launcher: its script) without running."""
    args = shlex.split(command.replace("data/demo", str(demo_root)))
    module, args = args[args.index("-m") + 1], args[args.index("-m") + 2 :]
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [module, *args, *([] if "--dry-run" in args else ["--print-config"])])
    with pytest.raises(SystemExit) as e:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        raise SystemExit(0)  # the launcher's dry run returns
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    assert out.out.strip()


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", text(), re.S)


@pytest.fixture
def readme_files(tmp_path, monkeypatch):
    """The files the README's Python examples name, as small models of the right kinds, in the working folder."""
    import dataclasses

    import torch

    from ssast.config import load_config
    from ssast.models import ASTClassifier, ModelConfig, SSASTModel, export_official, model_state
    from ssast.train.finetuning import FinetuneRunConfig

    torch.manual_seed(0)
    torch.save(export_official(SSASTModel(ModelConfig("tiny", 2))), tmp_path / "SSAST-Base-Patch-400.pth")
    audioset = ASTClassifier(ModelConfig("tiny", 2, 16, 16, 10, 10, 128, 1024), 527)
    torch.save(export_official(audioset), tmp_path / "audioset_10_10_0.4593.pth")
    (tmp_path / "runs/demo/seed0/checkpoints").mkdir(parents=True)
    torch.save(
        model_state(SSASTModel(ModelConfig("tiny", 1, input_tdim=128))),
        tmp_path / "runs/demo/seed0/checkpoints/last.pt",
    )
    cfg = load_config(
        FinetuneRunConfig,
        ROOT / "configs/finetune/demo_speechcommands.yaml",
        ["model.size=tiny", "model.depth=1", "init=scratch"],
    )
    (tmp_path / "runs/sc/checkpoints").mkdir(parents=True)
    torch.save(
        {**model_state(ASTClassifier(cfg.model, 35)), "config": dataclasses.asdict(cfg)},
        tmp_path / "runs/sc/checkpoints/best.pt",
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_pages_have_python_examples():
    assert len(snippets()) >= 3


@pytest.mark.parametrize("snippet", snippets(), ids=lambda s: s.strip().splitlines()[-1][:40])
def test_readme_python_example_runs(snippet, readme_files):
    names: dict = {}
    exec(compile(snippet, "README.md", "exec"), names)  # as written, in a folder holding the files it names
    if "logits" in names:
        assert names["logits"].shape == (2, 50) and names["emb"].shape == (2, 192)
        assert names["ast"].mlp_head[1].out_features == 527 and names["ast"].v.grid == (12, 101)
        assert (readme_files / "released_format.pth").is_file() and names["encoder"].cfg.depth == 1
    if "scene" in names:
        assert names["scene"].shape == (2, names["model"].scene_embedding_size)
    if "scores" in names:
        assert names["scores"].shape == (1, 35) and len(names["predictor"].top_k(names["scores"], 5)) == 5
