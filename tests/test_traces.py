"""The numbers of short demo-recipe runs, and a run folder written by earlier code, against `tests/data/`:
a change that should change no number is held to that (bit for bit on the machine that recorded the traces; 1e-6
elsewhere, where other kernels may round differently)."""

import json
import shutil

import pytest
import torch
from support.traces import DATA, finetune, losses, pretrain

pytestmark = pytest.mark.integration

TRACES = json.loads((DATA / "traces.json").read_text())


def assert_same(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    worst = max(abs(got[k] - want[k]) / max(1.0, abs(want[k])) for k in want)
    print(f"largest difference from the recorded trace: {worst:.3g}")
    assert worst <= 1e-6, {k: (got[k], want[k]) for k in want if got[k] != want[k]}


@pytest.mark.slow
def test_pretraining_and_fine_tuning_reproduce_the_recorded_traces(demo_root, tmp_path):
    assert_same(losses(pretrain(demo_root, tmp_path / "pretrain")), TRACES["pretrain"])
    init = DATA / "trace_run" / "checkpoints" / "last.pt"
    assert_same(losses(finetune(demo_root, tmp_path / "finetune", init)), TRACES["finetune"])


@pytest.mark.slow
def test_a_run_folder_written_by_earlier_code_resumes_to_the_same_numbers(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(DATA / "trace_run", run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    lines = pretrain(demo_root, run_dir, "resume=auto")
    assert [line["step"] for line in lines if "loss" in line] == [1, 2, 3, 4, 5, 6]  # steps 1-3 kept from before
    assert_same(losses(lines), TRACES["pretrain"])
