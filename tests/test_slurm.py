"""The SLURM launcher, on a real two-node SLURM cluster that the tests install and start on this machine
(support/slurm_cluster.py: each node a slurmd in its own network namespace, with its own hostname and address).

Where SLURM cannot be installed or started the cluster tests are skipped with the reason, except under CI
(CI=true), where they must run."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from support.slurm_cluster import Cluster, address, install
from support.stages import DEMO_PRETRAIN, QUIET, run_stage, timeless

import slurm.__main__ as launcher
from ssast.models.formats import weights_hash
from ssast.models.loading import load_model
from ssast.train.logs import read_metrics

pytestmark = pytest.mark.integration

# 2-s runs of the demo recipe on the small built-in data, one thread per task.
PRETRAIN = [*DEMO_PRETRAIN, *QUIET, "model.depth=2", "data.batch_size=4", "train.eval_every=100"]


def test_dry_run_prints_a_script_a_person_can_submit(capsys):
    launcher.main(
        [
            "pretrain",
            "--config",
            "configs/pretrain/ssast_base_patch400.yaml",
            "run_dir=runs/base",
            "data.batch_size=3",
            "slurm.nodes=2",
            "slurm.gpus_per_node=8",
            "slurm.partition=gpu",
            "slurm.time_min=4320",
            "slurm.account=audio",
            "--dry-run",
        ]
    )
    script = capsys.readouterr().out
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for option in (
        "--nodes=2",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--partition=gpu",
        "--time=4320",
        "--account=audio",
        "--signal=USR2@120",
        "--job-name=ssast-pretrain",
        "--cpus-per-task=8",
    ):
        assert f"#SBATCH {option}" in lines
    assert any(
        line.startswith("srun ")
        and line.endswith(f"-u -m submitit.core._submit {Path('runs/base/slurm/%j').absolute()}")
        for line in lines
    )
    assert not Path("runs/base").exists()  # nothing submitted, nothing written


def test_a_sweep_is_an_array_and_bad_keys_stop_before_submitting(capsys):
    launcher.main(
        [
            "probes",
            "--config",
            "configs/probes/demo.yaml",
            "--sweep",
            "tol=0.01,0.001,0.0001",
            "--sweep",
            "model.depth=1,2",
            "--dry-run",
        ]
    )
    assert "#SBATCH --array=0-5%6" in capsys.readouterr().out.splitlines()
    for args, message in [
        (["slurm.nodez=2"], "unknown config key 'slurm.nodez' (did you mean 'slurm.nodes'?)"),
        (["slurm.nodes=0"], "config key 'slurm.nodes' must be >= 1, got 0"),
        (["--sweep", "data.batch_size=4,0"], "config key 'data.batch_size' must be >= 1, got 0"),
    ]:
        with pytest.raises(SystemExit) as e:
            launcher.main(["pretrain", *PRETRAIN, *args, "--dry-run"])
        assert e.value.code == 2 and capsys.readouterr().err.strip().endswith(message)


@pytest.mark.slow
def test_help_and_the_local_cluster_run_the_same_job(demo_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        launcher.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: python -m slurm {pretrain,finetune,probes} --config FILE")
    assert "  slurm.gpus_per_node: 0  # int, >= 0" in out.splitlines()
    results = launcher.main(
        [
            "probes",
            "--config",
            "configs/probes/demo.yaml",
            f"data.root={demo_root}",
            "random_init_seeds=[0]",
            "model.depth=1",
            "tasks=[{name: events, dataset: {kind: esc50, path: esc50}, protocol: folds, target_length: 128}]",
            "slurm.cluster=local",
            f"slurm.run_dir={tmp_path}/local",
            f"store_dir={tmp_path}/stores",
        ]
    )
    assert len(results) == 1 and sorted(results[0]) == ["fbank mean+std", "random init"]
    assert json.loads((tmp_path / "local" / "result.json").read_text()) == results[0]
    assert len((tmp_path / "local" / "jobs.jsonl").read_text().splitlines()) == 1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = install() or None
    if reason is None:
        cluster = Cluster(tmp_path_factory.mktemp("slurm"))
        reason = cluster.start() or None
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SLURM must run in CI: {reason}")
        pytest.skip(f"no SLURM cluster: {reason}")
    saved = dict(os.environ)
    os.environ.update(cluster.env)  # sbatch, squeue and the sacct stand-in for submitit, here and in the jobs
    yield cluster
    cluster.stop()
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.slow
def test_a_two_task_job_trains_with_identical_weights_on_both_ranks(cluster, demo_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    results = launcher.main(
        [
            "pretrain",
            *PRETRAIN,
            f"data.root={demo_root}",
            f"run_dir={run_dir}",
            "train.max_steps=4",
            "train.checkpoint_every=2",
            "slurm.tasks_per_node=2",
            "slurm.cpus_per_task=1",
            "slurm.time_min=10",
            "--wait",
        ]
    )
    assert len(results) == 1 and set(results[0]) == {"mpc_acc", "mpc_loss", "mpg_loss", "loss"}
    assert "submitted job " in capsys.readouterr().out
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 4 and len(state["ranks"]) == 2
    assert (
        state["ranks"][0]["weights"]
        == state["ranks"][1]["weights"]
        == weights_hash(load_model(state, "pretraining").model)
    )
    started = [json.loads(line) for line in (run_dir / "jobs.jsonl").read_text().splitlines()]
    assert len(started) == 1 and started[0]["tasks"] == 2
    assert list((run_dir / "slurm").glob("*/*_0_log.out")) and list((run_dir / "slurm").glob("*/*_1_log.out"))


@pytest.mark.slow
def test_an_interrupted_job_requeues_and_resumes_to_the_uninterrupted_losses(cluster, demo_root, tmp_path):
    args = [*PRETRAIN, f"data.root={demo_root}", "train.max_steps=30", "train.checkpoint_every=5"]
    reference = tmp_path / "reference"
    run_stage("pretrain", *args, f"run_dir={reference}")
    run_dir = tmp_path / "run"
    (job,) = launcher.main(["pretrain", *args, f"run_dir={run_dir}", "slurm.cpus_per_task=1", "slurm.time_min=10"])
    deadline = time.time() + 300
    while not (
        (run_dir / "metrics.jsonl").exists() and any(m.get("step", 0) >= 8 for m in read_metrics(run_dir, None))
    ):
        assert time.time() < deadline and not job.done(), "the job did not reach step 8"
        time.sleep(0.5)
    job._interrupt()  # a preemption: SIGTERM, then SIGUSR2
    job.result()
    started = [json.loads(line) for line in (run_dir / "jobs.jsonl").read_text().splitlines()]
    assert len(started) == 2 and started[0]["job_id"] == started[1]["job_id"] == job.job_id  # requeued once
    log = "".join(p.read_text() for p in (run_dir / "slurm").glob("*/*_0_log.err"))
    assert "checkpoint written at step" in log and "resumed from" in log

    assert timeless(run_dir) == timeless(reference)  # the losses of an uninterrupted run


@pytest.mark.slow
def test_an_array_of_two_probe_runs_writes_each_result_and_a_summary(cluster, demo_root, tmp_path):
    base = tmp_path / "sweep"
    results = launcher.main(
        [
            "probes",
            "--config",
            "configs/probes/demo.yaml",
            f"data.root={demo_root}",
            "random_init_seeds=[0]",
            "model.depth=1",
            "fbank_baseline=false",
            f"slurm.run_dir={base}",
            f"store_dir={tmp_path}/stores",
            "--sweep",
            "tol=0.01,0.001",
            "slurm.cpus_per_task=1",
            "slurm.time_min=10",
            "--wait",
        ]
    )
    assert len(results) == 2
    summary = json.loads((base / "summary.json").read_text())
    assert sorted(summary) == ["tol=0.001", "tol=0.01"] and [summary["tol=0.01"], summary["tol=0.001"]] == results
    for name, result in summary.items():
        assert result == json.loads((base / name / "result.json").read_text())
        assert list(result) == ["random init"] and sorted(result["random init"]) == ["keywords", "sound events"]
    logs = sorted(p.name.rsplit("_", 1)[1] for p in (base / "slurm").glob("*_*") if p.is_dir())
    assert logs == ["0", "1"]  # one log folder per array element


# Jobs of 30 steps, checkpointed every 5 (all kept), on two nodes with one task each or one node with two tasks.
NODES_RUN = [*PRETRAIN, "train.max_steps=30", "train.checkpoint_every=5", "train.keep_last=10",
             "train.collective_timeout_s=10", "slurm.cpus_per_task=1", "slurm.time_min=10"]  # fmt: skip
TWO_NODES, ONE_NODE = ["slurm.nodes=2", "slurm.tasks_per_node=1"], ["slurm.nodes=1", "slurm.tasks_per_node=2"]


def final_weights(run_dir: Path) -> str:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["ranks"][0]["weights"]


def places(run_dir: Path) -> str:
    """The main task's log line saying where each rank ran."""
    log = "".join(p.read_text() for p in (run_dir / "slurm").glob("*/*_0_log.err"))
    return re.findall(r"process group of 2 .*", log)[0]


@pytest.fixture(scope="module")
def two_node_run(cluster, demo_root, tmp_path_factory) -> Path:
    """An uninterrupted two-node job: the reference of the lost-node tests."""
    run_dir = tmp_path_factory.mktemp("nodes") / "two"
    launcher.main(["pretrain", *NODES_RUN, *TWO_NODES, f"data.root={demo_root}", f"run_dir={run_dir}", "--wait"])
    return run_dir


@pytest.mark.slow
def test_two_nodes_train_as_one_node_with_two_tasks(cluster, two_node_run, demo_root, tmp_path, summary_line):
    one_node = tmp_path / "one"
    launcher.main(["pretrain", *NODES_RUN, *ONE_NODE, f"data.root={demo_root}", f"run_dir={one_node}", "--wait"])
    (job,) = [json.loads(line) for line in (two_node_run / "jobs.jsonl").read_text().splitlines()]
    assert job["nodes"] == ["node1", "node2"] and job["tasks"] == 2
    where = places(two_node_run)
    assert "master node1:" in where, where  # the first host of the node list, from SLURM's environment alone
    assert f"rank 0 on node1 ({address('node1')}), rank 1 on node2 ({address('node2')})" in where
    summary_line(f"two-node SLURM job: {where}")
    # the same global batch and seed: the same losses and weights, bit for bit
    assert timeless(two_node_run) == timeless(one_node)
    assert final_weights(two_node_run) == final_weights(one_node)
    for checkpoint in sorted((two_node_run / "checkpoints").glob("step_*.pt")):
        ranks = torch.load(checkpoint, weights_only=True)["ranks"]
        assert len(ranks) == 2 and ranks[0]["weights"] == ranks[1]["weights"], checkpoint.name
    assert len(list((two_node_run / "checkpoints").glob("step_*.pt"))) == 6


def main_task_error(run_dir: Path) -> str:
    log = "".join(p.read_text() for p in (run_dir / "slurm").glob("*/*_0_log.err"))
    return next((line for line in log.splitlines() if "lost contact with another process" in line), "")


def lose_node_two(cluster, demo_root, run_dir: Path, lose) -> tuple[subprocess.Popen, float]:
    """Start a two-node job, call `lose` at step 8 or later; the job and the seconds until the main task said it
    lost its peer (in one line)."""
    (job,) = launcher.main(["pretrain", *NODES_RUN, *TWO_NODES, f"data.root={demo_root}", f"run_dir={run_dir}"])
    deadline = time.time() + 300
    while not ((run_dir / "metrics.jsonl").exists() and any(m["step"] >= 8 for m in read_metrics(run_dir, None))):
        assert time.time() < deadline and not job.done(), "the job did not reach step 8"
        time.sleep(0.5)
    lost = time.monotonic()
    lose()
    while not main_task_error(run_dir):
        assert time.monotonic() - lost < 120, "the main task did not end"
        time.sleep(0.5)
    return job, time.monotonic() - lost


def wait_until_done(cluster, job, run_dir: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while subprocess.run(["squeue", "-h", "-j", job.job_id], capture_output=True, text=True, env=cluster.env).stdout:
        assert time.time() < deadline, f"job {job.job_id} did not end"
        time.sleep(1)


@pytest.mark.slow
def test_a_killed_task_on_the_second_node_ends_the_job_and_a_requeue_resumes_it(
    cluster, two_node_run, demo_root, tmp_path, summary_line
):
    run_dir = tmp_path / "run"

    def kill_task():
        task = [p for p in cluster.node_pids("node2") if "submitit" in Path(f"/proc/{p}/cmdline").read_text()]
        assert task, "no task on node2"
        for pid in task:
            os.kill(pid, signal.SIGKILL)

    job, ended = lose_node_two(cluster, demo_root, run_dir, kill_task)
    line = main_task_error(run_dir)
    assert ended < 30 and "Connection" in line and "a requeued job (scontrol requeue)" in line, line
    wait_until_done(cluster, job, run_dir)
    assert step_of(run_dir) < 30
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, env=cluster.env)
    wait_until_done(cluster, job, run_dir)
    log = "".join(p.read_text() for p in (run_dir / "slurm").glob("*/*_0_log.err"))
    assert "resumed from" in log and step_of(run_dir) == 30
    assert final_weights(run_dir) == final_weights(two_node_run)  # the uninterrupted run's weights
    assert timeless(run_dir) == timeless(two_node_run)
    summary_line(f"task on node2 killed: the main task ended {ended:.1f} s later: {line.split(': error: ')[-1]}")


@pytest.mark.slow
def test_a_node_that_hangs_ends_the_job_in_bounded_time_and_slurm_requeues_it(
    cluster, two_node_run, demo_root, tmp_path, summary_line
):
    run_dir = tmp_path / "run"
    job, ended = lose_node_two(cluster, demo_root, run_dir, lambda: cluster.stop_node("node2", signal.SIGSTOP))
    line = main_task_error(run_dir)
    assert ended < 10 + 20 and "Timed out" in line, line  # train.collective_timeout_s=10
    deadline = time.time() + 120  # slurmctld gives up on the node (SlurmdTimeout=20) and requeues the job
    while "down" not in cluster.node_state("node2"):
        assert time.time() < deadline, cluster.node_state("node2")
        time.sleep(1)
    cluster.stop_node("node2")  # the hung node is restarted
    cluster.start_node("node2")
    wait_until_done(cluster, job, run_dir)
    started = [json.loads(line) for line in (run_dir / "jobs.jsonl").read_text().splitlines()]
    assert len(started) == 2 and step_of(run_dir) == 30  # requeued by SLURM itself
    assert final_weights(run_dir) == final_weights(two_node_run)
    assert timeless(run_dir) == timeless(two_node_run)
    summary_line(f"node2 frozen: the main task ended {ended:.1f} s later: {line.split(': error: ')[-1]}")


def step_of(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
