"""Fixtures shared by the test modules: the session's manifest cache, the built-in data and one finished small
pretraining run. Helpers live in `support` (tests/support/)."""

import os
from pathlib import Path

import pytest
from support.stages import SMALL_PRETRAIN, run_stage


@pytest.fixture(scope="session", autouse=True)
def manifest_cache(tmp_path_factory) -> Path:
    """Compiled manifests go to the session's temporary folder (subprocesses inherit it), not ~/.cache."""
    os.environ["SSAST_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return Path(os.environ["SSAST_CACHE"]) / "manifests"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The built-in data sets at the small scale, generated once per test session."""
    from ssast.demo import builtin as demo

    root = tmp_path_factory.mktemp("demo")
    demo.build(root, "small", seed=0)
    return root


@pytest.fixture(scope="session")
def pretrained_run(demo_root, tmp_path_factory) -> Path:
    """One finished run of `support.stages.SMALL_PRETRAIN` (6 steps, checkpoints at 2, 4 and 6, validation at 4 and
    6, TensorBoard on), for every test that needs a run or a checkpoint. Tests copy it before they change it."""
    run_dir = tmp_path_factory.mktemp("pretrained") / "run"
    run_stage("pretrain", *SMALL_PRETRAIN, f"data.root={demo_root}", f"run_dir={run_dir}")
    return run_dir


FACTS: list[str] = []


@pytest.fixture
def summary_line():
    """Adds a line to the summary at the end of the test run (where a multi-node job's ranks ran, say)."""
    return FACTS.append


def pytest_terminal_summary(terminalreporter):
    if FACTS:
        terminalreporter.section("what the tests saw")
        for line in FACTS:
            terminalreporter.line(line)
