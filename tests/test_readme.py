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
    if module in ("ssast.demo", "finetune.predict"):  # argparse tools: their flags are in their help
        flags = {a.split("=")[0] for a in args if a.startswith("--")}
        help_text = subprocess.run(args[:3] + ["--help"], capture_output=True, text=True).stdout
        assert flags and all(f in help_text for f in flags)
        return
    if "--dry-run" not in args:
        args.append("--print-config")
    out = subprocess.run(args, capture_output=True, text=True, cwd=README.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
