import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from support.stages import SMALL_PRETRAIN, command, start, timeless, wait_for_step

from ssast.models.formats import weights_hash
from ssast.models.loading import load_model
from ssast.train.logs import read_metrics
from ssast.train.optim import OptimConfig, Schedule

pytestmark = pytest.mark.integration


def pretrain_args(demo_root, run_dir, *extra):
    return command("pretrain", *SMALL_PRETRAIN, f"data.root={demo_root}", f"run_dir={run_dir}", *extra)


def test_metrics_checkpoints_and_tensorboard_of_a_run(pretrained_run):
    rows = read_metrics(pretrained_run, None)
    train = [r for r in rows if "loss" in r]
    valid = [r for r in rows if "valid_mpc_acc" in r]
    assert [r["step"] for r in train] == list(range(1, 7)) and [r["step"] for r in valid] == [4, 6]
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
    assert [r["lr"] for r in train] == pytest.approx([1e-3 * s / 100 for s in range(1, 7)])  # cosine warm-up
    ckpts = sorted(p.name for p in (pretrained_run / "checkpoints").iterdir())
    assert ckpts == ["best.pt", "last.pt", "step_00000004.pt", "step_00000006.pt"]
    assert torch.load(pretrained_run / "checkpoints" / "last.pt", weights_only=True)["step"] == 6
    model = load_model(pretrained_run / "checkpoints" / "last.pt", "pretraining").model
    assert model.cfg.depth == 1 and model.cfg.input_tdim == 128
    assert list((pretrained_run / "tensorboard").glob("events.out.tfevents.*"))
    assert (pretrained_run / "config.yaml").read_text().startswith("run_dir:")


@pytest.mark.slow
def test_run_killed_at_three_steps_resumes_to_the_uninterrupted_curve(demo_root, pretrained_run, tmp_path):
    run_dir = tmp_path / "b"
    args = pretrain_args(demo_root, run_dir)
    for i, kill_at in enumerate((3, 4, 5)):  # a checkpoint every 2 steps: step 2 is written before step 3 is logged
        proc = subprocess.Popen(
            args + (["resume=auto"] if i else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_step(run_dir, kill_at, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] in range(kill_at - 2, 6)
    subprocess.run(args + ["resume=auto"], check=True, capture_output=True)
    assert timeless(run_dir) == timeless(pretrained_run)  # every loss bit for bit, step for step


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_write_a_checkpoint_and_stop(demo_root, tmp_path, signum):
    run_dir = tmp_path / "c"
    proc = start(pretrain_args(demo_root, run_dir, "train.max_steps=1000"))
    wait_for_step(run_dir, 6, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum  # stopped, not finished: a script can tell
    step = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert step == max(m["step"] for m in read_metrics(run_dir, None)) and step >= 6
    assert f"{signal.Signals(signum).name}: checkpoint written at step {step}, stopping" in err
    assert err.strip().splitlines()[-1] == (
        f"python -m pretrain: stopped by {signal.Signals(signum).name} at step {step}, after a checkpoint: "
        "resume=auto continues"
    )
    assert "Traceback" not in err


def ddp_run(demo_root, tmp_path, record_dir, *extra, nproc=2):
    record_dir.mkdir(exist_ok=True)
    env = {**os.environ, "RECORD_DIR": str(record_dir), "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    return subprocess.run(
        [
            sys.executable,
            *launcher,
            "tests/support/ddp_worker.py",
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


def test_a_warm_up_longer_than_the_run_is_warned_with_the_peak_it_reaches(caplog):
    optim = torch.optim.Adam(torch.nn.Linear(2, 2).parameters())
    Schedule(OptimConfig(lr=5e-4, warmup_steps=1000), optim, 1000)
    assert not caplog.records  # as long as the run: no warning
    Schedule(OptimConfig(lr=5e-4, warmup_steps=300), optim, 120)  # staircase: 100 / 300 from step 100
    Schedule(OptimConfig(lr=5e-4, warmup_steps=300, schedule="cosine"), optim, 120)
    assert [r.getMessage() for r in caplog.records] == [
        "optim.warmup_steps=300 is longer than the run's 120 steps: the learning rate never goes past 0.000167 "
        "(33% of optim.lr=0.0005)",
        "optim.warmup_steps=300 is longer than the run's 120 steps: the learning rate never goes past 0.0002 "
        "(40% of optim.lr=0.0005)",
    ]


def test_resuming_into_another_architecture_fails_with_one_line(demo_root, pretrained_run, tmp_path):
    import shutil

    shutil.copytree(pretrained_run / "checkpoints", tmp_path / "d" / "checkpoints")
    out = subprocess.run(
        pretrain_args(demo_root, tmp_path / "d", "resume=auto", "model.depth=2", "train.max_steps=7"),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m pretrain: error: checkpoint ") and "missing: v.blocks.1." in last
