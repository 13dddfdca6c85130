"""Tar shards: written from any data set with an exact index, read in place, bad members skipped and counted,
ranks on disjoint shards, and a killed pretraining run on shards resumed bit for bit."""

import json
import signal
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from support.stages import DEMO_PRETRAIN, QUIET, command, timeless, wait_for_step

from ssast.data.index import read_dataset
from ssast.data.loader import AudioLoader, ClipReader
from ssast.data.sampling import DataConfig, MixtureSampler, ShardSampler, part_sampler, read_mixture, training_sampler
from ssast.data.shards import main as shards_main
from ssast.data.sources import source
from ssast.features import FeatureConfig

pytestmark = pytest.mark.integration

FEATURES = FeatureConfig(target_length=128, crop="random")


@pytest.fixture(scope="module")
def esc_shards(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "esc50"
    shards_main(["write", "source.kind=esc50", "source.path=esc50", f"root={demo_root}", f"out={out}", "shard_mb=0.5"])
    return out


def test_shards_hold_every_clip_with_its_labels_at_the_indexed_offsets(demo_root, esc_shards):
    original = read_dataset(source(kind="esc50", path="esc50"), demo_root)
    sharded = read_dataset(source(kind="shards", path=str(esc_shards)))
    index = json.loads((esc_shards / "index.json").read_text())
    assert sharded.classes == original.classes and len(index["shards"]) >= 4
    assert sharded.shard_stops[-1] == len(sharded.examples) == len(original.examples)
    members = {}
    for name in index["shards"]:
        with tarfile.open(esc_shards / name) as tar:
            members.update({m.name: (esc_shards / name, m) for m in tar.getmembers()})
    by_source, read = {}, ClipReader(FEATURES)
    for line, example in zip((esc_shards / "index.tsv").read_text().splitlines(), sharded.examples, strict=True):
        key = line.split("\t")[1]
        shard, member = members[key + ".wav"]
        assert example.path == f"{shard}:{member.offset_data}:{member.size}"
        with tarfile.open(shard) as tar:
            meta = json.loads(tar.extractfile(members[key + ".json"][1]).read())
        assert tuple(meta["labels"]) == example.labels
        by_source[meta["source"]] = example
    assert sorted(by_source) == sorted(e.path for e in original.examples)
    for e in list(original.examples)[:5]:  # a member decodes to the very samples of its source file
        assert torch.equal(read(by_source[e.path].path), read(e.path))
    assert sorted(e.labels for e in sharded.examples) == sorted(e.labels for e in original.examples)


def test_two_ranks_read_disjoint_whole_shards_each_epoch_in_a_new_order(esc_shards):
    dataset = read_dataset(source(kind="shards", path=str(esc_shards)))
    data, n = DataConfig(shard_window=2), len(dataset.examples)
    samplers = [part_sampler(dataset, data, (5,), rank, 2) for rank in (0, 1)]
    assert all(isinstance(s, ShardSampler) for s in samplers)
    shard_of = np.searchsorted(dataset.shard_stops, np.arange(n), side="right")
    sizes = [len(s.items) for s in samplers]
    epochs = [
        [[s(e * size + i) for i in range(size)] for e in range(2)] for s, size in zip(samplers, sizes, strict=True)
    ]
    assert sum(sizes) == n and set(epochs[0][0]).isdisjoint(epochs[1][0])
    assert set(shard_of[epochs[0][0]]) == set(range(0, len(dataset.shard_stops), 2))  # whole shards of its own
    for rank in (0, 1):
        first, second = epochs[rank]
        assert sorted(first) == sorted(second) == sorted(set(first)) and first != second
        # a window of two shards is read through before the next one starts
        window = set(shard_of[first[: sum(shard_of[first] == shard_of[first[0]])]])
        assert len(window) <= 2


def test_a_mixture_of_shard_sources_reads_each_source_shard_by_shard(esc_shards, tmp_path):
    """Two shard sources mixed 1:1: each is drawn through its own `ShardSampler`, so a source's draws still walk
    its shards window by window."""
    mixture = read_mixture([source("shards", path=str(esc_shards), weight=1.0)] * 2)
    sampler = training_sampler(mixture, DataConfig(shard_window=2), 3, 0, 1)
    assert isinstance(sampler, MixtureSampler) and all(isinstance(p, ShardSampler) for p in sampler.parts)
    draws = [sampler(n) for n in range(400)]
    shard_of = np.searchsorted(mixture.parts[0].shard_stops, np.arange(len(mixture)), side="right")
    for part in (0, 1):
        mine = [position for s, position in draws if s == part]
        assert 150 < len(mine) < 250
        first_window = sum(shard_of[mine] == shard_of[mine[0]])  # at least the first shard's clips come first
        assert len(set(shard_of[mine[: max(first_window, 1)]])) <= 2


def test_an_interrupted_write_goes_on_to_the_same_shards(demo_root, esc_shards, tmp_path, monkeypatch, capsys):
    args = ["write", "source.kind=esc50", "source.path=esc50", f"root={demo_root}", "shard_mb=0.5"]
    out = tmp_path / "again"
    real_read, reads = Path.read_bytes, []

    def killed_at_the_40th_clip(path):
        reads.append(path)
        if len(reads) == 40:
            raise KeyboardInterrupt
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", killed_at_the_40th_clip)
    with pytest.raises(KeyboardInterrupt):
        shards_main([*args, f"out={out}"])
    monkeypatch.setattr(Path, "read_bytes", real_read)
    done = [n for n in sorted(p.name for p in out.iterdir()) if n.endswith(".tar")]
    assert not (out / "index.json").exists() and len(done) >= 10 and [p.name for p in out.glob("*.tmp")]
    with pytest.raises(SystemExit):
        shards_main([*args[:-1], "shard_mb=0.25", f"out={out}"])
    assert "holds an interrupted write with other settings" in capsys.readouterr().err
    shards_main([*args, f"out={out}"])
    for name in ["index.json", "index.tsv", *json.loads((esc_shards / "index.json").read_text())["shards"]]:
        assert (out / name).read_bytes() == (esc_shards / name).read_bytes(), name
    assert not list(out.glob("*.tmp"))


def test_a_corrupt_member_is_skipped_and_counted(esc_shards, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in esc_shards.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    first = (broken / "index.tsv").read_text().splitlines()[0].split("\t")
    with open(broken / "shard-000000.tar", "r+b") as shard:  # the first member's RIFF header: garbage
        shard.seek(int(first[2]))
        shard.write(b"\0" * 64)
    dataset = read_dataset(source(kind="shards", path=str(broken)))
    data = DataConfig(batch_size=len(dataset.examples), max_bad_fraction=0.5)
    loader = AudioLoader(dataset, FEATURES, data, train=True, seed=0)
    batch = next(iter(loader))
    assert len(batch["path"]) == len(dataset.examples) - 1 and loader.counts()["bad_clips"] == 1


def test_the_writer_skips_and_lists_unreadable_sources(tmp_path, capsys):
    (tmp_path / "a.wav").write_bytes(b"RIFF....")
    (tmp_path / "list.txt").write_text("a.wav\nmissing.wav\n")
    args = ["write", "source.kind=list", f"source.path={tmp_path / 'list.txt'}", f"out={tmp_path / 's'}"]
    shards_main(args)
    out = capsys.readouterr().out
    assert out.startswith("1 clips (0.0 MB) in 1 shards") and "1 skipped" in out
    assert f"skipped {tmp_path / 'missing.wav'}: No such file or directory" in out
    with pytest.raises(SystemExit):
        shards_main(args)
    assert "already holds shards" in capsys.readouterr().err


@pytest.mark.slow
def test_pretraining_on_shards_killed_and_resumed_gives_the_uninterrupted_losses(demo_root, tmp_path):
    shards = tmp_path / "shards"
    shards_main(
        ["write", "source.kind=folder", "source.path=unlabeled", f"root={demo_root}", f"out={shards}", "shard_mb=0.5"]
    )

    def args(run_dir):
        return command("pretrain", *DEMO_PRETRAIN, *QUIET, f"run_dir={run_dir}", "data.batch_size=8") + [
            "data.train.kind=shards",
            f"data.train.path={shards}",
            "train.max_steps=10",
            "train.checkpoint_every=3",
            "data.shard_window=2",
        ]

    subprocess.run(args(tmp_path / "a"), check=True, capture_output=True)
    proc = subprocess.Popen(args(tmp_path / "b"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(tmp_path / "b", 5, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    subprocess.run(args(tmp_path / "b") + ["resume=auto"], check=True, capture_output=True)
    assert timeless(tmp_path / "b") == timeless(tmp_path / "a")
    assert len([line for line in timeless(tmp_path / "a") if "loss" in line]) == 10
