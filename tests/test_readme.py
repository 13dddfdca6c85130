"""Every example command of the README runs: a stage checks its recipe and keys (``--print-config``), the SLURM
launcher prints its script (``--dry-run``), the data generator and the tagger know their flags. A renamed key,
recipe or flag fails here instead of in a reader's terminal."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in "\n".join(blocks).replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith(("python -m ", "torchrun "))]


def test_the_readme_has_examples_of_every_entry_point():
    modules = {re.search(r"-m (\S+)", c).group(1) for c in commands()}
    assert modules >= {"pretrain", "finetune", "finetune.predict", "probes", "slurm", "ssast.demo", "ssast.data.stats"}


@pytest.mark.parametrize("command", commands())
def test_readme_command_runs(command, demo_root, tmp_path):
    args = shlex.split(command.replace("data/demo", str(demo_root)))
    module = args[args.index("-m") + 1]
    args = [sys.executable, "-m", module, *args[args.index("-m") + 2 :]]
    if module in ("ssast.demo", "finetune.predict", "ssast.data.shards", "ssast.data.prepare"):
        # argparse tools: their flags are in the help of their (sub)command
        flags = {a.split("=")[0] for a in args if a.startswith("--")}
        command = next(i for i, a in enumerate(args) if a.startswith("--"))
        help_text = subprocess.run(args[:command] + ["--help"], capture_output=True, text=True).stdout
        assert flags and all(f in help_text for f in flags)
        return
    if "--dry-run" not in args:
        args.append("--print-config")
    out = subprocess.run(args, capture_output=True, text=True, cwd=README.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.fixture
def readme_files(tmp_path, monkeypatch):
    """The files the README's Python examples name, as small models of the right kinds, in the working folder."""
    import dataclasses

    import torch

    from finetune.config import FinetuneRunConfig
    from ssast.config import load_config
    from ssast.models import ASTClassifier, ModelConfig, SSASTModel, export_official, model_state

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
        README.parent / "configs/finetune/demo_speechcommands.yaml",
        ["model.size=tiny", "model.depth=1", "init=scratch"],
    )
    (tmp_path / "runs/sc/checkpoints").mkdir(parents=True)
    torch.save(
        {**model_state(ASTClassifier(cfg.model, 35)), "config": dataclasses.asdict(cfg)},
        tmp_path / "runs/sc/checkpoints/best.pt",
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_python_examples():
    assert len(snippets()) >= 2


@pytest.mark.parametrize("snippet", snippets(), ids=lambda s: s.strip().splitlines()[-1][:40])
def test_readme_python_example_runs(snippet, readme_files):
    names: dict = {}
    exec(compile(snippet, "README.md", "exec"), names)  # as written, in a folder holding the files it names
    if "logits" in names:
        assert names["logits"].shape == (2, 50) and names["emb"].shape == (2, 192)
        assert names["ast"].mlp_head[1].out_features == 527 and names["ast"].v.grid == (12, 101)
        assert (readme_files / "released_format.pth").is_file() and names["encoder"].cfg.depth == 1
    if "scores" in names:
        assert names["scores"].shape == (1, 35) and len(names["predictor"].top_k(names["scores"], 5)) == 5
