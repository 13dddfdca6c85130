"""Faults injected into the real stages, and what survives each: the user sees one line (no traceback), and nothing
is lost but the steps since the last checkpoint. Every test adds its row to the fault table (`record`), which
``python benchmarks/faults.py`` prints (docs/reliability.md)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support.stages import SMALL_PRETRAIN, command, run_stage, start, timeless, wait_for_step

from ssast.train.logs import read_metrics

pytestmark = pytest.mark.integration
ROWS: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def table():
    """The rows of this module's tests, written where benchmarks/faults.py asks (SSAST_FAULT_TABLE)."""
    yield
    if os.environ.get("SSAST_FAULT_TABLE"):
        Path(os.environ["SSAST_FAULT_TABLE"]).write_text(json.dumps(ROWS, indent=1))


def record(fault: str, stage: str, seen: str, steps_lost: int | str, data_lost: str) -> None:
    ROWS.append({"fault": fault, "stage": stage, "seen": seen, "steps_lost": steps_lost, "data_lost": data_lost})


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert not any("Traceback" in line for line in lines), text[-2000:]
    return lines[-1]


def pretrain(demo_root, run_dir, *extra) -> list[str]:
    return command(
        "pretrain", *SMALL_PRETRAIN, "train.tensorboard=false", f"data.root={demo_root}", f"run_dir={run_dir}", *extra
    )


def step_of(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=True)["step"]


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory):
    """Mount a small tmpfs (size given): a disk that fills; skipped with the reason where mounting is not allowed."""
    mounted = []

    def mount(size_kb: int) -> Path:
        where = tmp_path_factory.mktemp("tmpfs")
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(where)], capture_output=True
        )
        if out.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {out.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], capture_output=True)


def fill(folder: Path, leave_kb: int) -> Path:
    """A file that takes all of `folder`'s free space but `leave_kb`."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free - leave_kb * 1024
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(free, 0))
    return filler


# -- one writer per folder --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_run_on_a_live_run_folder_is_refused_and_the_live_run_finishes(demo_root, pretrained_run, tmp_path):
    run_dir = tmp_path / "run"
    live = start(pretrain(demo_root, run_dir, "train.max_steps=400"))
    wait_for_step(run_dir, 2, live)
    lines = {}
    for how in (["resume=auto"], ["overwrite=true"], []):
        out = subprocess.run(pretrain(demo_root, run_dir, *how), capture_output=True, text=True)
        assert out.returncode == 1
        lines[" ".join(how) or "fresh"] = last_line(out.stderr)
    for line in lines.values():
        assert line.startswith(f"python -m pretrain: error: {run_dir} is in use by a pretraining run (host ")
        assert f", pid {live.pid}, since " in line and line.endswith("wait for it to end, or choose another run_dir")
    live.send_signal(signal.SIGTERM)
    _, err = live.communicate(timeout=60)
    assert live.returncode == 128 + signal.SIGTERM and "Traceback" not in err  # it ran on, untouched
    assert step_of(run_dir / "checkpoints/last.pt") == max(r["step"] for r in read_metrics(run_dir, None))
    record("a second run on a live run's folder (resume, overwrite or fresh)", "pretrain", lines["resume=auto"], 0,
           "none: the live run goes on")  # fmt: skip
    # killed, the holder leaves no stale lock: the next run resumes at once
    live = subprocess.Popen(
        pretrain(demo_root, run_dir, "train.max_steps=400", "resume=auto"), stderr=subprocess.DEVNULL
    )
    time.sleep(3)
    live.kill()
    live.wait()
    out = subprocess.run(
        pretrain(demo_root, run_dir, "resume=auto", "train.max_steps=2"), capture_output=True, text=True
    )
    assert out.returncode == 0 and "this run finished at step" in out.stderr


def hold(folder: Path, what: str, seconds: float) -> subprocess.Popen:
    """Another process holding `folder`'s lock for `seconds`."""
    code = f"from ssast.files import FolderLock; import time; FolderLock({str(folder)!r}, {what!r}).acquire()"
    proc = subprocess.Popen([sys.executable, "-c", f"{code}; print('held', flush=True); time.sleep({seconds})"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline() == "held\n"
    return proc


def test_a_requeued_job_waits_for_its_previous_allocation_to_let_go(tmp_path, monkeypatch):
    from ssast.distributed import Dist
    from ssast.files import FolderLock
    from ssast.train import run_folder

    held = hold(tmp_path, "a pretraining run", 2)
    monkeypatch.setattr(run_folder, "REQUEUE_WAIT_S", 30)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    start = time.monotonic()
    with run_folder.hold_folder(tmp_path, "a pretraining run", Dist()):
        waited = time.monotonic() - start
        assert str(tmp_path.resolve()) in FolderLock.held
    assert 0.5 < waited < 10 and held.wait() == 0
    record("a requeued job starts while its previous allocation still holds the folder", "slurm",
           f"waits {waited:.1f} s for the lock, then resumes", 0, "none")  # fmt: skip


def test_a_second_preparation_into_the_same_folder_is_refused(demo_root, tmp_path, capsys):
    from ssast.data.prepare import main as prepare

    held = hold(tmp_path / "out", "a preparation of esc50", 30)
    with pytest.raises(SystemExit) as e:
        prepare(["esc50", f"root={demo_root / 'esc50'}", f"out={tmp_path / 'out'}", "stats_clips=0"])
    held.kill()
    line = last_line(capsys.readouterr().err)
    assert e.value.code == 1 and line.startswith(
        f"python -m ssast.data.prepare: error: {tmp_path / 'out'} is in use by a preparation of esc50 (host "
    )
    assert f"pid {held.pid}, since " in line and line.endswith("wait for it to end, or choose another out")
    assert not list((tmp_path / "out").glob("*.json"))  # nothing written
    record("two preparations into one out folder", "prepare", line, "-", "none")


def test_a_second_job_waits_for_the_store_being_written_then_finds_it_complete(demo_root, tmp_path):
    """One writer per store: while another job holds the store folder's lock, extraction waits; then it finds the
    store that job wrote (here: that the test writes) and embeds nothing."""
    import fcntl
    import threading

    import numpy as np

    from ssast.data.index import read_dataset
    from ssast.data.sampling import DataConfig
    from ssast.data.sources import source
    from ssast.eval.embeddings import EmbedConfig, extract, store_key
    from ssast.features import FeatureConfig

    dataset = read_dataset(source(kind="esc50", path="esc50", split="1"), demo_root)
    features, cfg = FeatureConfig(target_length=128), EmbedConfig(poolings=["meanstd"])
    first = extract(None, dataset, features, DataConfig(), cfg, tmp_path / "a")  # the fbank baseline: no encoder
    folder = tmp_path / "b" / store_key(None, dataset, features, cfg)
    folder.mkdir(parents=True)
    done = []
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # "another job" is writing this store
        waiting = threading.Thread(
            target=lambda: done.append(extract(None, dataset, features, DataConfig(), cfg, tmp_path / "b"))
        )
        waiting.start()
        waiting.join(timeout=3)
        assert waiting.is_alive() and not done  # it waits on the lock
        for f in first.folder.iterdir():  # the other job finishes: its store, store.json last
            if f.name != ".lock":
                shutil.copytree(f, folder / f.name) if f.is_dir() else shutil.copy(f, folder / f.name)
    waiting.join(timeout=60)
    (store,) = done
    assert store.meta == first.meta and np.array_equal(store.features("fbank"), first.features("fbank"))
    record("two jobs on one embedding store", "probes", "(the second waits for the first, then reads its store)", "-",
           "none: embedded once")  # fmt: skip


# -- runs tell the truth ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_resume_refuses_result_changing_settings_unless_named_and_records_them(demo_root, pretrained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(pretrained_run, run_dir)
    original = (run_dir / "config.yaml").read_text()
    out = subprocess.run(pretrain(demo_root, run_dir, "resume=auto", "optim.lr=1e-2", "data.batch_size=4"),
                         capture_output=True, text=True)  # fmt: skip
    line = last_line(out.stderr)
    assert out.returncode == 1 and line == (
        "python -m pretrain: error: resuming with settings that change the result: data.batch_size 8 -> 4, optim.lr "
        "0.001 -> 0.01; resume with the run's settings, or say so with resume_changes=[data.batch_size,optim.lr]"
    )
    record("a resume with settings that change the result (a recipe edited between run and resume)", "pretrain",
           line, 0, "none: refused before training")  # fmt: skip
    allowed = pretrain(
        demo_root, run_dir, "resume=auto", "optim.lr=1e-2", "train.max_steps=8", "resume_changes=[optim.lr]"
    )
    out = subprocess.run(allowed, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    # the shared run wrote TensorBoard events, this one does not: a change that needs no leave, recorded all the same
    expected = {"optim.lr": [0.001, 0.01], "train.max_steps": [6, 8], "train.tensorboard": [True, False]}
    assert "resumed with changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in expected.items()) in (
        out.stderr
    )
    changes = [json.loads(line) for line in (run_dir / "config_changes.jsonl").read_text().splitlines()]
    assert changes == [{"step": 6, "changes": expected}]
    assert (run_dir / "config.yaml").read_text() == original  # the settings the run started with
    out = subprocess.run(
        pretrain(demo_root, run_dir, "resume=auto", "train.max_steps=5"), capture_output=True, text=True
    )
    assert out.returncode == 0 and (
        "this run finished at step 8 (train.max_steps=5): nothing to train; raise train.max_steps to train on"
        in out.stderr
    )


@pytest.mark.slow
def test_a_stopped_fine_tuning_run_says_it_is_unfinished_and_resumes(demo_root, tmp_path):
    base = [
        *("--config", "configs/finetune/demo_esc50.yaml", f"data.root={demo_root}/esc50", "init=scratch"),
        *("folds=[1]", "epochs=30", "model.depth=1", "train.threads=1", "train.tensorboard=false", "train.log_every=1"),
        f"run_dir={tmp_path}",
    ]
    proc = start(command("finetune", *base))
    wait_for_step(tmp_path / "fold1", 12, proc)  # past the first epoch (4 steps of 25 clips)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    results = json.loads((tmp_path / "results.json").read_text())
    assert proc.returncode == 128 + signal.SIGTERM and last_line(err).startswith(
        "python -m finetune: stopped by SIGTERM"
    )
    assert results["complete"] is False and results["epochs"] == 30 and results["epochs_done"]["fold1"] >= 3
    record("SIGTERM (a preemption) during fine-tuning", "finetune", last_line(err),
           "since the last epoch", "none: results.json says complete: false")  # fmt: skip


# -- disk full ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_resume_goes_on(demo_root, pretrained_run, tmp_path, tmpfs):
    disk = tmpfs(64 * 1024)
    size = (pretrained_run / "checkpoints" / "last.pt").stat().st_size
    filler = fill(disk, size * 3 // 2 // 1024)  # room for one and a half checkpoints: step 2's, not step 4's
    run_dir = disk / "run"
    out = subprocess.run(pretrain(demo_root, run_dir), capture_output=True, text=True)
    line = last_line(out.stderr)
    ckpts = run_dir / "checkpoints"
    assert out.returncode == 74 and line.startswith(
        f"python -m pretrain: error: could not write {ckpts}/step_00000004.pt: no space left on device ("
    )
    assert line.endswith(f"the last checkpoint: {ckpts}/last.pt (step 2) is intact; free some space, then resume=auto")
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.pt", "step_00000002.pt"]  # no partial file
    filler.unlink()
    out = subprocess.run(pretrain(demo_root, run_dir, "resume=auto"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert timeless(run_dir) == timeless(pretrained_run)
    record("disk full at a checkpoint", "pretrain", line, 2, "none")


@pytest.mark.slow
def test_a_full_disk_at_a_store_a_manifest_and_a_shard_is_one_line_and_no_partial_file(demo_root, tmp_path, tmpfs):
    disk = tmpfs(2048)
    fill(disk, 8)
    out = run_stage("probes", "extract", "--config", "configs/probes/extract_demo.yaml", f"data.root={demo_root}",
                    "checkpoint=fbank", f"store_dir={disk}/stores", check=False)  # fmt: skip
    line = last_line(out.stderr)
    assert (
        out.returncode == 74 and line.startswith("python -m probes: error: could not write ") and " the store " in line
    )
    assert not list((disk / "stores").glob("*/shard*"))
    record("disk full at an embedding store", "probes extract", line, "-", "none: the store is written anew next time")
    disk = tmpfs(1024)  # the journal fits, the first shard does not
    out = run_stage("ssast.data.shards", "write", "source.kind=esc50", "source.path=esc50", f"root={demo_root}",
                    f"out={disk}/shards", check=False)  # fmt: skip
    line = last_line(out.stderr)
    assert out.returncode == 74 and "shard-000000.tar.tmp: no space left on device" in line
    assert not list((disk / "shards").glob("*.tmp"))
    record("disk full at a shard", "shards write", line, "-", "none: the write goes on after its complete shards")
    disk = tmpfs(256)
    (tmp_path / "data.json").write_text(json.dumps({"data": [{"wav": f"{i:06d}.wav" * 40} for i in range(20000)]}))
    env = {**os.environ, "SSAST_CACHE": str(disk / "cache")}
    out = run_stage("ssast.data.stats", "--config", "configs/pretrain/demo.yaml", "data.train.kind=json",
                    f"data.train.path={tmp_path}/data.json", check=False, env=env)  # fmt: skip
    line = last_line(out.stderr)
    assert out.returncode == 74 and "no space left on device" in line and "point SSAST_CACHE elsewhere" in line
    assert not list((disk / "cache").glob("*/*.tmp*"))
    record("disk full at a compiled manifest", "any stage", line, "-", "none")


# -- kills -------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_at_random_points_of_checkpoint_writes_loses_only_the_steps_since(demo_root, pretrained_run, tmp_path):
    run_dir, lost = tmp_path / "run", []
    args = pretrain(demo_root, run_dir, "train.checkpoint_every=1")
    for i, delay in enumerate((0.13, 0.41, 0.29)):
        proc = subprocess.Popen(
            args + (["resume=auto"] if i else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_step(run_dir, 2 * i + 1, proc)
        time.sleep(delay)  # somewhere in the next steps and their checkpoint writes
        proc.kill()
        proc.wait()
        if proc.returncode != 0:
            logged = max(r["step"] for r in read_metrics(run_dir, None))
            lost.append(logged - step_of(run_dir / "checkpoints/last.pt"))
    out = subprocess.run(args + ["resume=auto"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))  # no temporary left behind
    assert timeless(run_dir) == timeless(pretrained_run)
    record("SIGKILL at random points of a checkpoint write", "pretrain", "(killed: no message); resume=auto goes on",
           max(lost, default=0), "none")  # fmt: skip


@pytest.mark.slow
def test_a_probe_store_left_half_written_by_a_kill_is_written_anew(demo_root, tmp_path):
    args = ["extract", "--config", "configs/probes/extract_demo.yaml", f"data.root={demo_root}", "checkpoint=fbank"]
    proc = subprocess.Popen(command("probes", *args, f"store_dir={tmp_path}/a", "data.batch_size=4"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 60
    while not list((tmp_path / "a").glob("*/shard0/*.npy")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    (folder,) = (tmp_path / "a").iterdir()
    assert not (folder / "store.json").exists()
    run_stage("probes", *args, f"store_dir={tmp_path}/a")
    run_stage("probes", *args, f"store_dir={tmp_path}/b")
    from ssast.eval.embeddings import Store

    a, b = Store(folder), Store(tmp_path / "b" / folder.name)
    assert a.paths == b.paths and all((a.features(n) == b.features(n)).all() for n in a.names)
    record("a probe store half-written by a kill", "probes extract", "(killed); the next extraction writes it whole",
           "-", "none")  # fmt: skip


# -- wrong inputs ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_checkpoints_of_another_architecture_or_stage_are_one_line(demo_root, pretrained_run, tmp_path):
    from ssast.models import ASTClassifier, ModelConfig, model_state

    classifier = tmp_path / "classifier.pt"
    torch.save(model_state(ASTClassifier(ModelConfig("tiny", 1, input_tdim=128), 5)), classifier)
    cases = {
        "init": (f"init={classifier}",),
        "resume": (f"resume={pretrained_run}/checkpoints/last.pt", "model.depth=2"),
    }
    for name, extra in cases.items():
        out = subprocess.run(pretrain(demo_root, tmp_path / name, *extra), capture_output=True, text=True)
        line = last_line(out.stderr)
        assert out.returncode == 1 and line.startswith("python -m pretrain: error: ")
        cases[name] = line
    assert (
        cases["init"]
        == f"python -m pretrain: error: {classifier} is a fine-tuned (classifier) checkpoint, not a pretraining one"
    )
    assert "missing: v.blocks.1." in cases["resume"]
    record("a fine-tuning checkpoint passed to pretraining's init", "pretrain", cases["init"], "-", "none")
    record("a checkpoint of another architecture passed to resume", "pretrain", cases["resume"], "-", "none")


def test_a_damaged_compiled_manifest_heals_under_a_stage(demo_root, tmp_path):
    args = ["--config", "configs/pretrain/demo.yaml", f"data.root={demo_root}"]
    env = {**os.environ, "SSAST_CACHE": str(tmp_path)}  # a cache of its own: the session's stays whole
    run_stage("ssast.data.stats", *args, env=env)
    for paths in tmp_path.glob("manifests/*/*/paths.npy"):
        paths.write_bytes(paths.read_bytes()[:-10])  # cut short
    out = run_stage("ssast.data.stats", *args, env=env)
    warning = next(line for line in out.stderr.splitlines() if "is damaged" in line)
    assert "compiling it anew" in warning and "Traceback" not in out.stderr
    record("a damaged compiled manifest (a file cut short)", "any stage", warning.split(" ", 2)[2], 0, "none: rebuilt")


@pytest.mark.slow
def test_a_truncated_shard_mid_run_costs_its_clips_not_the_run(demo_root, tmp_path):
    from ssast.data.shards import main as shards_main

    shards = tmp_path / "shards"
    shards_main(["write", "source.kind=folder", "source.path=unlabeled", f"root={demo_root}", f"out={shards}",
                 "shard_mb=0.5"])  # fmt: skip
    first = sorted(shards.glob("shard-*.tar"))[0]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # cut short while training reads it
    out = subprocess.run(
        pretrain(demo_root, tmp_path / "run", "data.train.kind=shards", f"data.train.path={shards}",
                 "data.valid_holdout=0", "data.max_bad_fraction=0.5"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    bad = sum(r.get("bad_clips", 0) for r in read_metrics(tmp_path / "run") if r["step"] == 6)
    assert bad > 0 and step_of(tmp_path / "run/checkpoints/last.pt") == 6
    record("a shard cut short during a run", "pretrain", f"(a warning per clip; {bad} bad clips counted in the log)",
           0, "the clips past the cut")  # fmt: skip


@pytest.mark.slow
def test_sigkill_of_one_ddp_rank_ends_the_job_in_bounded_time_and_resume_matches(demo_root, tmp_path):
    def job(run_dir, *extra) -> list[str]:  # torchrun's arguments: two processes of the small run
        args = ["--standalone", "--nproc_per_node=2", "-m", "pretrain", *SMALL_PRETRAIN, "train.tensorboard=false"]
        return [*args, f"data.root={demo_root}", f"run_dir={run_dir}", *extra]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_stage("torch.distributed.run", *job(tmp_path / "reference"), env=env)
    run_dir = tmp_path / "run"
    launcher = start(command("torch.distributed.run", *job(run_dir)), env=env)
    wait_for_step(run_dir, 3, launcher)
    workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    rank1 = next(p for p in workers if "RANK=1\0" in Path(f"/proc/{p}/environ").read_text(errors="replace"))
    killed = time.monotonic()
    os.kill(int(rank1), signal.SIGKILL)
    launcher.communicate(timeout=120)
    ended = time.monotonic() - killed
    assert launcher.returncode != 0 and ended < 60
    lost = max(r["step"] for r in read_metrics(run_dir, None)) - step_of(run_dir / "checkpoints/last.pt")
    resumed = run_stage("torch.distributed.run", *job(run_dir, "resume=auto"), env=env)
    assert "resumed from" in resumed.stderr
    assert timeless(run_dir) == timeless(tmp_path / "reference")
    record("SIGKILL of one DDP rank", "pretrain (torchrun)", f"the job ends {ended:.0f} s later (a worker failed)",
           lost, "none")  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_a_rank_that_dies_or_hangs_ends_the_other_in_bounded_time_with_one_line(demo_root, tmp_path, sig):
    """Two processes joined from the environment alone (as srun starts them, no torchrun agent to end the job):
    rank 1 killed (its connections reset) or frozen (open but silent, as a hung node): rank 0 stops within the
    collective timeout with one line naming the last checkpoint."""
    port = 29000 + os.getpid() % 1000 + (sig == signal.SIGSTOP) * 1000
    ranks = [
        start(
            pretrain(demo_root, tmp_path / "run", "train.max_steps=500", "train.checkpoint_every=2",
                     "train.collective_timeout_s=5"),
            env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"},
        )
        for r in range(2)
    ]  # fmt: skip
    try:
        wait_for_step(tmp_path / "run", 4, ranks[0])
        lost = time.monotonic()
        os.kill(ranks[1].pid, sig)
        _, err = ranks[0].communicate(timeout=60)
        ended = time.monotonic() - lost
    finally:
        ranks[1].kill()
        ranks[1].communicate()
    line = last_line(err)
    saved = step_of(tmp_path / "run/checkpoints/last.pt")
    assert ranks[0].returncode == 1 and line.startswith("python -m pretrain: error: lost contact with another process")
    assert ("Timed out waiting 5000ms" if sig == signal.SIGSTOP else "Connection") in line
    assert f"the last checkpoint is step {saved}: a requeued job" in line
    assert ended < (5 + 10 if sig == signal.SIGSTOP else 10)
    assert "rank 0 on " in err and "rank 1 on " in err  # where each rank ran, in the log
    what = "killed" if sig == signal.SIGKILL else "frozen (SIGSTOP)"
    record(f"one of two ranks {what}, no torchrun (train.collective_timeout_s=5)", "pretrain (srun-style)",
           f"{line} (rank 0, {ended:.1f} s later)",
           max(r["step"] for r in read_metrics(tmp_path / "run", None)) - saved, "none")  # fmt: skip


def test_embeddings_use_the_checkpoints_own_front_end_and_say_so(demo_root, tmp_path, caplog):
    from probes.__main__ import main as probes
    from ssast.config import load_config, to_dict
    from ssast.models import SSASTModel, model_state
    from ssast.train.pretraining import PretrainConfig

    cfg = load_config(PretrainConfig, "configs/pretrain/demo.yaml", ["features.mean=-0.81", "features.std=2.49"])
    checkpoint = tmp_path / "own.pt"
    torch.save({**model_state(SSASTModel(cfg.model)), "config": to_dict(cfg)}, checkpoint)
    caplog.set_level("INFO")
    base = [
        "extract",
        "--config",
        "configs/probes/extract_demo.yaml",
        f"data.root={demo_root}",
        f"checkpoint={checkpoint}",
    ]
    base += ["dataset.split=1", "embed.poolings=[avgtok]"]
    own = probes([*base, f"store_dir={tmp_path}/own"])
    assert f"front end of {checkpoint}: mean -0.81, std 2.49, 128 mel bins" in caplog.messages
    assert not [m for m in caplog.messages if "differs from" in m]
    pinned = probes([*base, f"store_dir={tmp_path}/pinned", "features.mean=-0.81", "features.std=2.49"])
    assert own.folder.name == pinned.folder.name  # the same inputs: the recipe's values would make another store
    caplog.clear()
    other = probes([*base, f"store_dir={tmp_path}/other", "features.mean=-5.129227"])
    warning = f"features.mean=-5.12923 differs from {checkpoint}'s own -0.81: embedding with -5.12923 as asked"
    assert [m for m in caplog.messages if "differs from" in m] == [warning]
    assert other.folder.name != own.folder.name
    seen = "front end of <checkpoint>: mean -0.81, std 2.49, 128 mel bins"
    record("probes on a checkpoint pretrained with its own normalisation", "probes", seen, "-", "none")
