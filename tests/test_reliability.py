"""Fault injection in-process: non-finite steps, bad clips, torn checkpoints, run folders, unsafe pickles."""

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from support.stages import SMALL_PRETRAIN, timeless

import pretrain.__main__ as stage
from ssast.data.index import Dataset, Example, split_holdout
from ssast.data.sources import ManifestError
from ssast.models import CheckpointError
from ssast.models.loading import load_model
from ssast.train.logs import read_metrics
from ssast.train.pretraining import PretrainUnit

pytestmark = pytest.mark.integration


def pretrain(root, run_dir, *extra):
    """The shared small run's settings (`pretrained_run`), in this process, without TensorBoard."""
    return stage.main([*SMALL_PRETRAIN, "train.tensorboard=false", f"data.root={root}", f"run_dir={run_dir}", *extra])


def fail(capsys, *args) -> str:
    """The one line a failing run prints (its exit code must be 1)."""
    with pytest.raises(SystemExit) as e:
        pretrain(*args)
    assert e.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def weights_hash(model) -> str:
    return hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()


@pytest.fixture
def nan_batches(monkeypatch):
    """Turn the fbank of chosen steps (1-based) to NaN; record the weights each step starts from."""
    steps, seen = set(), []
    original = PretrainUnit.step

    def step(self, model, batch, generator):
        seen.append(weights_hash(model))
        if len(seen) in steps:
            batch = {**batch, "fbank": batch["fbank"] * float("nan")}
        return original(self, model, batch, generator)

    monkeypatch.setattr(PretrainUnit, "step", step)
    return steps, seen


def test_a_nan_batch_is_skipped_and_counted(demo_root, tmp_path, nan_batches, caplog):
    steps, seen = nan_batches
    steps.add(3)
    pretrain(demo_root, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["skipped_steps"] for r in rows] == [0, 0, 1, 1, 1, 1]
    assert np.isnan(rows[2]["loss"]) and all(np.isfinite(r["loss"]) for r in rows if r["step"] != 3)
    assert seen[2] == seen[3] and len(set(seen)) == 5  # step 3 left the weights as they were
    warning = [r.getMessage() for r in caplog.records if "optimiser not stepped" in r.getMessage()]
    assert len(warning) == 1 and warning[0].startswith("step 3: non-finite loss nan")
    assert len(re.findall(r"\.wav", warning[0])) == 8  # the batch's clips are named
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 6 and last["skipped_steps"] == 1


def test_too_many_non_finite_steps_in_a_row_stop_with_one_line_and_finite_weights(
    demo_root, tmp_path, nan_batches, capsys
):
    steps, seen = nan_batches
    steps.update(range(3, 10))
    line = fail(capsys, demo_root, tmp_path / "run", "train.max_skipped_steps=2")
    assert line == (
        "python -m pretrain: error: 3 steps in a row had a non-finite loss or gradient (the last at step 5;"
        " limit train.max_skipped_steps=2); checkpoint written: lower optim.lr, set train.clip_grad or "
        "check the data"
    )
    model = load_model(tmp_path / "run" / "checkpoints" / "last.pt", "pretraining").model
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert weights_hash(model) == seen[2]  # the weights after step 2, the last finite one
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["step"] == 5


def write_bad_clips(folder: Path) -> tuple[list[Path], list[Path]]:
    """180 readable clips, some in unusual but valid formats, and 20 unreadable ones, as a path list."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    good, bad = [], []
    for i in range(180):
        path = folder / f"good{i:03d}.{'flac' if i % 9 == 1 else 'wav'}"
        sr, channels, subtype = [
            (16000, 1, "PCM_16"),
            (8000, 1, "PCM_16"),
            (44100, 1, "PCM_U8"),
            (16000, 6, "PCM_16"),
            (22050, 2, "FLOAT"),
        ][i % 5]
        if path.suffix == ".flac":
            subtype = "PCM_16"
        sf.write(path, rng.uniform(-0.5, 0.5, (int(sr * 1.2), channels)), sr, subtype=subtype)
        good.append(path)
    full = (folder / "good000.wav").read_bytes()
    for i in range(20):
        path = folder / f"bad{i:02d}.wav"
        kind = i % 7
        if kind == 1:
            path.write_bytes(b"")  # empty file
        elif kind == 2:
            path.write_bytes(full[:30])  # header cut short
        elif kind == 3:
            sf.write(path, np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")  # NaN samples
        elif kind == 4:
            sf.write(path, np.zeros(0, np.float32), 16000)  # zero length
        elif kind == 5:
            path.write_bytes(rng.bytes(5000))  # not audio
        elif kind == 6:
            sf.write(path, np.zeros(100, np.float32), 16000)  # shorter than one frame
        # kind 0: listed but missing
        bad.append(path)
    paths = good + bad
    order = rng.permutation(len(paths))
    (folder / "list.txt").write_text("".join(f"{paths[i].name}\n" for i in order))
    return good, bad


def test_two_hundred_clips_with_twenty_bad_ones_train_to_the_end(tmp_path, caplog):
    good, bad = write_bad_clips(tmp_path / "clips")
    pretrain(
        "",
        tmp_path / "run",
        "data.train.kind=list",
        f"data.train.path={tmp_path}/clips/list.txt",
        "data.valid_holdout=0",
        "data.batch_size=20",
        "train.max_steps=10",
        "data.max_bad_fraction=0.15",
    )
    rows = read_metrics(tmp_path / "run")
    assert rows[-1]["step"] == 10 and rows[-1]["bad_clips"] == 20  # one epoch: every clip read once
    skipped = {m.split("skipping bad clip ")[1].split(":")[0] for m in caplog.messages if "skipping bad clip" in m}
    assert skipped == {str(p) for p in bad}


def test_mpg_objective_validates_and_keeps_best_on_the_mpg_loss(demo_root, tmp_path):
    pretrain(
        demo_root,
        tmp_path / "run",
        "ssl.objective=mpg",
        "ssl.shared_mask=false",
        "optim.schedule=reference",
        "optim.warmup_steps=2",
        "optim.plateau_patience=0",
    )
    valid = [r for r in read_metrics(tmp_path / "run", None) if "valid_loss" in r]
    assert [sorted(r) for r in valid] == [["step", "valid_loss", "valid_mpg_loss"]] * 2
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    losses = {r["step"]: r["valid_mpg_loss"] for r in valid}
    assert best["step"] == min(losses, key=losses.get) and best["best"] == min(losses.values())


def test_without_validation_data_the_run_trains_and_keeps_last_only(demo_root, tmp_path, caplog):
    caplog.set_level("INFO")
    pretrain(demo_root, tmp_path / "run", "data.valid_holdout=0")
    assert not [r for r in read_metrics(tmp_path / "run", None) if "valid_loss" in r]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "last.pt",
        "step_00000004.pt",
        "step_00000006.pt",
    ]
    assert sum("no validation data" in m for m in caplog.messages) == 1


@pytest.mark.parametrize("n, count", [(10, 8), (10, 1), (40, 8), (7, 6)])
def test_split_holdout_holds_out_exactly_count(n, count):
    data = Dataset([Example(f"{i}.wav") for i in range(n)])
    rest, held = split_holdout(data, count)
    assert len(held.examples) == count and len(rest.examples) == n - count
    assert {e.path for e in rest.examples} | {e.path for e in held.examples} == {f"{i}.wav" for i in range(n)}
    with pytest.raises(ManifestError, match=f"cannot hold out {n} of the {n} examples"):
        split_holdout(data, n)


def test_an_existing_run_folder_is_refused_untouched_or_replaced_with_overwrite(
    demo_root, pretrained_run, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    shutil.copytree(pretrained_run, run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    line = fail(capsys, demo_root, run_dir)
    assert line == (
        f"python -m pretrain: error: {run_dir} already holds a run (metrics.jsonl, checkpoints, tensorboard):"
        f" continue it with resume=auto, choose another run_dir, or pass overwrite=true to replace it"
    )
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"} == before
    pretrain(demo_root, run_dir, "overwrite=true", "train.max_steps=2")
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt", "step_00000002.pt"]


def test_a_torn_last_checkpoint_falls_back_to_the_newest_readable_one(demo_root, pretrained_run, tmp_path, caplog):
    caplog.set_level("INFO")
    run_dir = tmp_path / "run"
    shutil.copytree(pretrained_run, run_dir)
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.pt", "last.pt", "step_00000004.pt", "step_00000006.pt"]
    for name in ("last.pt", "step_00000006.pt"):  # a torn write of the newest checkpoint
        data = (ckpts / name).read_bytes()
        (ckpts / name).write_bytes(data[: len(data) // 2])
    pretrain(demo_root, run_dir, "resume=auto")
    assert any("last.pt" in m and "trying an older checkpoint" in m for m in caplog.messages)
    assert any("resumed from" in m and "step_00000004.pt at step 4" in m for m in caplog.messages)

    assert timeless(run_dir) == timeless(pretrained_run)


def test_a_folder_of_unreadable_checkpoints_is_never_restarted_silently(demo_root, pretrained_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(pretrained_run, run_dir)
    for p in (run_dir / "checkpoints").iterdir():
        p.write_bytes(b"torn")
    line = fail(capsys, demo_root, run_dir, "resume=auto")
    assert line == f"python -m pretrain: error: no readable checkpoint in {run_dir}/checkpoints: start a fresh run_dir"


def test_a_pickle_that_would_run_code_is_refused_with_one_line(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "evil.pt", "pretraining")
    assert str(e.value) == (
        f"refusing to load {tmp_path}/evil.pt: it holds Python objects other than tensors and "
        f"plain containers, and unpickling them could run code"
    )
    assert not marker.exists()


def test_every_torch_load_in_the_project_is_weights_only():
    root = Path(__file__).resolve().parents[1]
    calls = [
        (f, call)
        for f in root.glob("[!.]*/**/*.py")
        if ".venv" not in f.parts
        for call in re.findall(r"torch\.load\((.*)", f.read_text())
    ]
    assert calls and all("weights_only=True" in call for _, call in calls), calls


def test_bf16_autocast_trains_close_to_fp32(demo_root, pretrained_run, tmp_path):
    pretrain(demo_root, tmp_path / "run", "train.precision=bf16", "train.max_steps=3")
    fp32, bf16 = read_metrics(pretrained_run)[:3], read_metrics(tmp_path / "run")
    assert [r["step"] for r in bf16] == [1, 2, 3]
    for a, b in zip(fp32, bf16, strict=True):
        assert a["loss"] != b["loss"]  # autocast is on (its dtypes are checked in test_models)
        for k in ("loss", "mpc_loss", "mpg_loss"):
            assert b[k] == pytest.approx(a[k], rel=0.05)


def test_an_atomic_write_that_fails_leaves_the_old_file_whole_and_no_temporary(tmp_path):
    from ssast.files import WriteError, atomic_write, atomic_write_text

    target = tmp_path / "manifest.json"
    atomic_write_text(target, "old")

    def torn(f):
        f.write(b"half of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(
        WriteError, match=rf"could not write {target}: no space left on device \(15 bytes of it written"
    ):
        atomic_write(target, torn)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
