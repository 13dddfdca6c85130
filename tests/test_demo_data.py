import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf
from support.stages import run_stage

from ssast.demo import builtin as demo

pytestmark = pytest.mark.integration


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".wav", ".csv", ".txt")
    }


def test_speechcommands_layout(demo_root):
    root = demo_root / "speechcommands"
    words = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "_background_noise_")
    assert words == sorted(demo.WORDS) and len(words) == 35
    clips = sorted(root.glob("*/*_nohash_0.wav"))
    assert len(clips) == 35 * demo.SCALES["small"].speakers
    for clip in clips[::37]:
        info = sf.info(clip)
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (16000, 16000, 1, "PCM_16")
    val = (root / "validation_list.txt").read_text().split()
    test = (root / "testing_list.txt").read_text().split()
    assert len(val) == len(test) == 35  # one speaker each at the small scale

    def speakers(names):
        return {Path(n).name.split("_")[0] for n in names}

    train = speakers(str(c.relative_to(root)) for c in clips) - speakers(val) - speakers(test)
    assert len(train) == 8 and not speakers(val) & speakers(test)
    assert all((root / n).is_file() for n in val + test)
    assert len(list((root / "_background_noise_").glob("*.wav"))) == 2


def test_esc50_layout(demo_root):
    root = demo_root / "esc50"
    rows = list(csv.DictReader(open(root / "meta" / "esc50.csv")))
    assert list(rows[0]) == ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    assert len(rows) == 25 * 5
    assert Counter(r["fold"] for r in rows) == {str(f): 25 for f in range(1, 6)}
    assert Counter(r["target"] for r in rows) == {str(t): 5 for t in range(25)}
    assert {r["category"] for r in rows} == set(demo.EVENT_NAMES)
    for r in rows[::11]:
        info = sf.info(root / "audio" / r["filename"])
        assert (info.samplerate, info.frames, info.channels) == (44100, 5 * 44100, 1)
        assert r["filename"].startswith(r["fold"] + "-") and r["filename"].endswith(f"-{r['target']}.wav")


def test_audioset_layout(demo_root):
    root = demo_root / "audioset"
    classes = list(csv.DictReader(open(root / "class_labels_indices.csv")))
    assert list(classes[0]) == ["index", "mid", "display_name"] and len(classes) == 26
    mids = {c["mid"] for c in classes}
    for split, count in (("train", 24), ("eval", 12)):
        data = json.loads((root / f"{split}.json").read_text())["data"]
        assert len(data) == count
        for item in data:
            labels = item["labels"].split(",")
            assert 1 <= len(labels) <= 4 and set(labels) <= mids and len(set(labels)) == len(labels)
            info = sf.info(root / item["wav"])
            assert (info.samplerate, info.frames) == (16000, 160000)


def test_unlabeled_clips(demo_root):
    clips = sorted((demo_root / "unlabeled").glob("*.wav"))
    assert len(clips) == 40
    for clip in clips:
        x, sr = sf.read(clip)
        assert sr == 16000 and 2 * sr <= len(x) < 4 * sr and 0.25 < abs(x).max() <= 1.0


def test_generation_is_deterministic_for_a_seed(tmp_path):
    tiny = demo.Scale(speakers=1, esc_per_class=1, audioset_train=2, audioset_eval=1, unlabeled=2)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        demo.build(tmp_path / name, tiny, seed=seed)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 35 + 2 + 2 + 25 + 1 + 3 + 2 + 1  # clips, noise, lists, esc, esc csv, as, csv

    def clips(d):
        return {v for k, v in d.items() if k.endswith(".wav") and "_background_noise_" not in k}

    assert len(clips(a)) == 35 + 25 + 3 + 2 and not clips(a) & clips(c)  # another seed: other clips


def generate(root, *extra):
    return run_stage("ssast.demo", f"root={root}", *extra, check=False)


@pytest.mark.slow
def test_two_generations_in_separate_processes_are_byte_identical_and_movable(tmp_path):
    for name in "ab":
        assert generate(tmp_path / name, "scale=small").returncode == 0

    def digest(root):
        return {
            str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    a = digest(tmp_path / "a")
    assert len(a) == 350 + 2 + 2 + 125 + 1 + 36 + 3 + 40 + 1  # every file, the manifests and the marker too
    assert a == digest(tmp_path / "b")
    (tmp_path / "a").rename(tmp_path / "moved")  # manifests hold relative paths
    data = json.loads((tmp_path / "moved" / "audioset" / "train.json").read_text())["data"]
    assert all((tmp_path / "moved" / "audioset" / item["wav"]).is_file() for item in data)


@pytest.mark.slow
def test_a_root_of_another_scale_or_seed_is_refused_or_replaced_whole(tmp_path):
    tiny = tmp_path / "d"
    assert generate(tiny, "scale=small").returncode == 0
    again = generate(tiny, "scale=small")
    assert again.returncode == 0 and again.stdout.strip() == f"demo data already in {tiny} (small, seed 0)"
    other = generate(tiny, "scale=small", "seed=1")
    assert other.returncode == 2 and other.stderr.strip() == (
        f"python -m ssast.demo: error: {tiny} holds built-in data of scale small, seed 0: pass overwrite=true to "
        f"replace it, or choose another root"
    )
    before = _digest(tiny)
    assert generate(tiny, "scale=small", "seed=1", "overwrite=true").returncode == 0
    after = _digest(tiny)
    assert len(after) == len(before) and not set(after.values()) & {v for k, v in before.items() if k.endswith(".wav")}
    more = generate(tiny, "scale=small", "seed=1", "unlabeled=45")
    assert more.returncode == 2 and "holds built-in data of scale small, seed 1: pass overwrite=true" in more.stderr
    assert generate(tmp_path / "more", "scale=small", "seed=1", "unlabeled=45").returncode == 0
    grown = _digest(tmp_path / "more")  # the default set's clips, then 5 more; the other sets unchanged
    assert {k: v for k, v in grown.items() if not k.startswith("unlabeled")} == {
        k: v for k, v in after.items() if not k.startswith("unlabeled")
    }
    assert [grown[f"unlabeled/clip_{i:05d}.wav"] for i in range(40)] == [
        after[f"unlabeled/clip_{i:05d}.wav"] for i in range(40)
    ]
    assert len([k for k in grown if k.startswith("unlabeled")]) == 45
    assert json.loads((tmp_path / "more" / ".demo.json").read_text()) == {
        "scale": "small",
        "seed": 1,
        "unlabeled": 45,
        "complete": True,
    }
    again = generate(tmp_path / "more", "scale=small", "seed=1", "unlabeled=45")
    assert again.stdout.strip() == f"demo data already in {tmp_path / 'more'} (small, seed 1, 45 unlabelled clips)"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    foreign = generate(tmp_path / "mine")
    assert foreign.returncode == 2 and "is not empty and holds no built-in data" in foreign.stderr
