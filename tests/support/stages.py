"""Running the stages as a user does, and reading what they leave: one way to start a stage in a subprocess (its
thread settings its own), the presets of a small pretraining run, and helpers over run folders."""

import json
import subprocess
import sys
import time
from pathlib import Path

from ssast.train.logs import TIMINGS, read_metrics

# A small pretraining run of the demo recipe on the small built-in data (1-s crops, 8 clips held out); each test
# adds what it varies. QUIET: no TensorBoard, one thread (tests run side by side on two cores).
DEMO_PRETRAIN = ["--config", "configs/pretrain/demo.yaml", "data.valid_holdout=8", "train.log_every=1"]
QUIET = ["train.tensorboard=false", "train.threads=1"]
# The shared finished run (`pretrained_run` in conftest.py): one layer, 6 steps of 8 clips, validation every 4
# steps, a checkpoint every 2; with TensorBoard.
SMALL_PRETRAIN = [
    *DEMO_PRETRAIN,
    "train.threads=1",
    "model.depth=1",
    "data.batch_size=8",
    "train.eval_every=4",
    "train.checkpoint_every=2",
    "train.max_steps=6",
]


def command(module: str, *args) -> list[str]:
    """``python -m <module> args...`` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]


def run_stage(module: str, *args, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a stage (or tool) to its end in a subprocess; with `check`, its exit code must be 0."""
    out = subprocess.run(command(module, *args), capture_output=True, text=True, **kwargs)
    assert not check or out.returncode == 0, out.stderr[-3000:]
    return out


def start(cmd: list[str], **kwargs) -> subprocess.Popen:
    """A stage's command line started in the background; its stderr is read with `communicate`."""
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until a running stage has logged `step`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run_dir / "metrics.jsonl").exists() and any(m.get("step") == step for m in read_metrics(run_dir, None)):
            return
        assert proc.poll() is None, "training ended early"
        time.sleep(0.05)
    raise TimeoutError(step)


def timeless(run_dir: Path) -> list[dict]:
    """Every metrics.jsonl line of a run but its timings: what two runs of the same steps share bit for bit."""
    return [{k: v for k, v in line.items() if k not in TIMINGS} for line in read_metrics(run_dir, None)]


def write_metrics(run_dir: Path, probed_steps: list[int], logged_steps: list[int]) -> None:
    """A run folder's metrics.jsonl as a pretraining run with periodic probes of a task "kw" writes it."""
    run_dir.mkdir()
    lines = [{"step": s, "loss": 1.0, "train_seconds": 1.5 * s} for s in logged_steps]
    lines += [{"step": s, "probe_kw": s / 100, "probe_kw_held_out": 0.3, "probe_kw_map": 0.1} for s in probed_steps]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
