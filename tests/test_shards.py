"""Tar shards: written from any data set with an exact index, read in place, bad members skipped and counted,
ranks on disjoint shards, and a killed pretraining run on shards resumed bit for bit."""

import json
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from conftest import DEMO_PRETRAIN, QUIET, timeless
from test_engine import wait_for_step

from ssast.data.pipeline import AudioLoader, ClipReader, DataConfig, ShardSampler, training_sampler
from ssast.data.readers import DatasetConfig, read_dataset
from ssast.data.shards import main as shards_main
from ssast.features import FeatureConfig

FEATURES = FeatureConfig(target_length=128, crop="random")


@pytest.fixture(scope="module")
def esc_shards(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "esc50"
    shards_main(
        ["write", "--kind", "esc50", "--path", "esc50", "--root", str(demo_root), "--out", str(out)]
        + ["--shard-mb", "0.5"]
    )
    return out


def test_shards_hold_every_clip_with_its_labels_at_the_indexed_offsets(demo_root, esc_shards):
    source = read_dataset(DatasetConfig(kind="esc50", path="esc50"), demo_root)
    sharded = read_dataset(DatasetConfig(kind="shards", path=str(esc_shards)))
    index = json.loads((esc_shards / "index.json").read_text())
    assert sharded.classes == source.classes and len(index["shards"]) >= 4
    assert sharded.shard_stops[-1] == len(sharded.examples) == len(source.examples)
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
    assert sorted(by_source) == sorted(e.path for e in source.examples)
    for e in list(source.examples)[:5]:  # a member decodes to the very samples of its source file
        assert torch.equal(read(by_source[e.path].path), read(e.path))
    assert sorted(e.labels for e in sharded.examples) == sorted(e.labels for e in source.examples)


def test_two_ranks_read_disjoint_whole_shards_each_epoch_in_a_new_order(esc_shards):
    dataset = read_dataset(DatasetConfig(kind="shards", path=str(esc_shards)))
    data, n = DataConfig(shard_window=2), len(dataset.examples)
    samplers = [training_sampler(dataset, data, 5, rank, 2) for rank in (0, 1)]
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


def test_a_corrupt_member_is_skipped_and_counted(esc_shards, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in esc_shards.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    first = (broken / "index.tsv").read_text().splitlines()[0].split("\t")
    with open(broken / "shard-000000.tar", "r+b") as shard:  # the first member's RIFF header: garbage
        shard.seek(int(first[2]))
        shard.write(b"\0" * 64)
    dataset = read_dataset(DatasetConfig(kind="shards", path=str(broken)))
    data = DataConfig(batch_size=len(dataset.examples), max_bad_fraction=0.5)
    loader = AudioLoader(dataset, FEATURES, data, train=True, seed=0)
    batch = next(iter(loader))
    assert len(batch["path"]) == len(dataset.examples) - 1 and loader.counts()["bad_clips"] == 1


def test_the_writer_skips_and_lists_unreadable_sources(tmp_path, capsys):
    (tmp_path / "a.wav").write_bytes(b"RIFF....")
    (tmp_path / "list.txt").write_text("a.wav\nmissing.wav\n")
    shards_main(["write", "--kind", "list", "--path", str(tmp_path / "list.txt"), "--out", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert out.startswith("1 clips (0.0 MB) in 1 shards") and "1 skipped" in out
    assert f"skipped {tmp_path / 'missing.wav'}: No such file or directory" in out
    with pytest.raises(SystemExit, match="already holds shards"):
        shards_main(["write", "--kind", "list", "--path", str(tmp_path / "list.txt"), "--out", str(tmp_path / "s")])


@pytest.mark.slow
def test_pretraining_on_shards_killed_and_resumed_gives_the_uninterrupted_losses(demo_root, tmp_path):
    shards = tmp_path / "shards"
    shards_main(
        ["write", "--kind", "folder", "--path", "unlabeled", "--root", str(demo_root), "--out", str(shards)]
        + ["--shard-mb", "0.5"]
    )

    def args(run_dir):
        return [sys.executable, "-m", "pretrain", *DEMO_PRETRAIN, *QUIET, f"run_dir={run_dir}", "data.batch_size=8"] + [
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
