"""Fixtures and presets shared by the test files."""

import os
from pathlib import Path

import pytest

from ssast.runlog import TIMINGS, read_metrics

# A small pretraining run of the demo recipe on the small built-in data (1-s crops, 8 clips held out); each file
# adds what it varies. QUIET: no TensorBoard, one thread (tests run side by side on two cores).
DEMO_PRETRAIN = ["--config", "configs/pretrain/demo.yaml", "data.valid_holdout=8", "train.log_every=1"]
QUIET = ["train.tensorboard=false", "train.threads=1"]


def timeless(run_dir: Path) -> list[dict]:
    """Every metrics.jsonl line of a run but its timings: what two runs of the same steps share bit for bit."""
    return [{k: v for k, v in line.items() if k not in TIMINGS} for line in read_metrics(run_dir, None)]


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
