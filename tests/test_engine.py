import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import DEMO_PRETRAIN, timeless

from ssast.models.checkpoint import weights_hash
from ssast.models.loading import load_model
from ssast.optim import OptimConfig, Schedule
from ssast.runlog import read_metrics


def pretrain_args(demo_root, run_dir, *extra):
    return [
        sys.executable,
        "-m",
        "pretrain",
        *DEMO_PRETRAIN,
        f"data.root={demo_root}",
        f"run_dir={run_dir}",
        "train.eval_every=5",
        "train.checkpoint_every=4",
        "train.max_steps=12",
        "ssl.shared_mask=false",
        *extra,
    ]


def wait_for_step(run_dir, step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run_dir / "metrics.jsonl").exists() and any(m.get("step") == step for m in read_metrics(run_dir, None)):
            return
        assert proc.poll() is None, "training ended early"
        time.sleep(0.05)
    raise TimeoutError(step)


@pytest.fixture(scope="module")
def uninterrupted(demo_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "a"
    subprocess.run(pretrain_args(demo_root, run_dir), check=True, capture_output=True)
    return run_dir


def test_metrics_checkpoints_and_tensorboard_of_a_run(uninterrupted):
    rows = read_metrics(uninterrupted, None)
    train = [r for r in rows if "loss" in r]
    valid = [r for r in rows if "valid_mpc_acc" in r]
    assert [r["step"] for r in train] == list(range(1, 13)) and [r["step"] for r in valid] == [5, 10, 12]
    assert set(train[0]) == {
        "step",
        "loss",
        "mpc_loss",
        "mpc_acc",
        "mpg_loss",
        "lr",
        "grad_norm",
        "clips_per_s",
        "train_seconds",
        "bad_clips",
        "skipped_steps",
    }
    assert all(r["skipped_steps"] == 0 and r["bad_clips"] == 0 for r in train)
    # the clock of training steps only: it runs on across validations and resumes
    assert all(0 < a["train_seconds"] < b["train_seconds"] for a, b in zip(train[:-1], train[1:], strict=True))
    for r in train:
        assert r["loss"] == pytest.approx(r["mpc_loss"] + 10 * r["mpg_loss"], rel=1e-5)
    assert train[-1]["loss"] < train[0]["loss"]
    ckpts = sorted(p.name for p in (uninterrupted / "checkpoints").iterdir())
    assert ckpts == ["best.pt", "last.pt", "step_00000010.pt", "step_00000012.pt"]
    assert torch.load(uninterrupted / "checkpoints" / "last.pt", weights_only=True)["step"] == 12
    model = load_model(uninterrupted / "checkpoints" / "last.pt", "pretraining").model
    assert model.cfg.depth == 4 and model.cfg.input_tdim == 128
    assert list((uninterrupted / "tensorboard").glob("events.out.tfevents.*"))
    assert (uninterrupted / "config.yaml").read_text().startswith("run_dir:")


@pytest.mark.slow
def test_run_killed_at_three_steps_resumes_to_the_uninterrupted_curve(demo_root, uninterrupted, tmp_path):
    run_dir = tmp_path / "b"
    args = pretrain_args(demo_root, run_dir, "train.checkpoint_every=3")
    for i, kill_at in enumerate((4, 8, 11)):
        proc = subprocess.Popen(
            args + (["resume=auto"] if i else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_step(run_dir, kill_at, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] in range(kill_at - 3, 12)
    subprocess.run(args + ["resume=auto"], check=True, capture_output=True)
    assert timeless(run_dir) == timeless(uninterrupted)  # every loss bit for bit, step for step


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_write_a_checkpoint_and_stop(demo_root, tmp_path, signum):
    run_dir = tmp_path / "c"
    proc = subprocess.Popen(
        pretrain_args(demo_root, run_dir, "train.max_steps=1000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_step(run_dir, 6, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    step = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert step == max(m["step"] for m in read_metrics(run_dir, None)) and step >= 6
    assert f"{signal.Signals(signum).name}: checkpoint written at step {step}, stopping" in err
    assert "Traceback" not in err


def ddp_run(demo_root, tmp_path, record_dir, *extra, nproc=2):
    record_dir.mkdir(exist_ok=True)
    env = {**os.environ, "RECORD_DIR": str(record_dir), "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    return subprocess.run(
        [
            sys.executable,
            *launcher,
            "tests/ddp_worker.py",
            "configs/pretrain/demo.yaml",
            f"data.root={demo_root}",
            "data.valid_holdout=8",
            "data.batch_size=4",
            f"run_dir={tmp_path / 'run'}",
            "train.max_steps=6",
            "train.eval_every=3",
            "train.checkpoint_every=3",
            "train.threads=1",
            "train.tensorboard=false",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_two_process_ddp_keeps_weights_identical_data_disjoint_and_resumes_from_any_checkpoint(demo_root, tmp_path):
    out = ddp_run(demo_root, tmp_path, tmp_path / "a")
    assert out.returncode == 0, out.stderr
    assert "Grad strides do not match bucket view strides" not in out.stderr  # gradients in DDP's bucket layout
    ranks = [json.loads((tmp_path / "a" / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    weights = [[s["weights"] for s in r] for r in ranks]
    assert weights[0] == weights[1] and len(set(weights[0])) == 6  # identical on both ranks, changing every step
    seen = [set(p for s in r for p in s["paths"]) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 16 and not seen[0] & seen[1]  # 32 training clips, 16 per rank
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.pt", "last.pt", "step_00000003.pt", "step_00000006.pt"]
    state = torch.load(ckpts / "step_00000003.pt", weights_only=True)
    assert len(state["ranks"]) == 2  # each rank's own state, and the checksum of the weights it held
    model = load_model(state, "pretraining").model
    assert state["ranks"][0]["weights"] == state["ranks"][1]["weights"] == weights_hash(model)

    # An older checkpoint, not the last one, resumes both ranks where they were.
    out = ddp_run(demo_root, tmp_path, tmp_path / "b", f"resume={ckpts / 'step_00000003.pt'}")
    assert out.returncode == 0, out.stderr
    resumed = [json.loads((tmp_path / "b" / f"rank{r}.json").read_text()) for r in range(2)]
    for r in range(2):
        assert resumed[r] == ranks[r][3:]  # the same weights and the same clips at steps 4-6
    out = ddp_run(demo_root, tmp_path, tmp_path / "c", f"resume={ckpts / 'step_00000003.pt'}", nproc=1)
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .endswith("step_00000003.pt was written by 2 process(es); resume it with that many (this run has 1)")
    )


def test_reference_schedule_is_a_staircase_warmup_then_plateau_halving():
    model = torch.nn.Linear(2, 2)
    optim = torch.optim.Adam(model.parameters(), lr=5e-4)
    schedule = Schedule(OptimConfig(lr=5e-4), optim, 10_000)
    lrs = []
    for step in range(1100):
        schedule.before_step(step)
        lrs.append(optim.param_groups[0]["lr"])
    assert lrs[0] == 0.0 and lrs[49] == 0.0 and lrs[50] == pytest.approx(2.5e-5) and lrs[99] == pytest.approx(2.5e-5)
    assert lrs[999] == pytest.approx(4.75e-4) and lrs[1000] == lrs[1099] == pytest.approx(5e-4)
    for metric in [0.5, 0.6, 0.6, 0.6, 0.6]:  # patience 2: the third evaluation without improvement halves
        schedule.after_eval(metric)
    assert optim.param_groups[0]["lr"] == pytest.approx(2.5e-4)


def test_resuming_into_another_architecture_fails_with_one_line(demo_root, uninterrupted, tmp_path):
    import shutil

    shutil.copytree(uninterrupted / "checkpoints", tmp_path / "d" / "checkpoints")
    out = subprocess.run(
        pretrain_args(demo_root, tmp_path / "d", "resume=auto", "model.depth=2", "train.max_steps=13"),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m pretrain: error: checkpoint ") and "unexpected: v.blocks.2." in last
