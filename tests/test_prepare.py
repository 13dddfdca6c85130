"""Corpus preparation on every layout: the kept clips in the manifests, the dropped ones counted by reason,
AudioSet's missing clips listed, FLAC conversion, statistics, and a resumed run that checks nothing twice."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import pretrain.__main__ as pretrain_stage
from ssast.config import load_config
from ssast.data.index import read_dataset
from ssast.data.prepare import main as prepare
from ssast.data.sampling import train_valid, training_sampler
from ssast.data.sources import source
from ssast.train.logs import read_metrics
from ssast.train.pretraining import PretrainConfig

pytestmark = pytest.mark.integration

RNG = np.random.default_rng(0)


def tone(path, seconds=1.0, rate=16000, channels=1, silent=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = (
        np.zeros((int(seconds * rate), channels)) if silent else RNG.uniform(-0.5, 0.5, (int(seconds * rate), channels))
    )
    sf.write(path, audio, rate)
    return path


@pytest.fixture
def audioset(tmp_path):
    """A small AudioSet download: three good clips, one corrupt, one silent, one m4a, one listed but missing."""
    root = tmp_path / "audioset"
    root.mkdir()
    (root / "class_labels_indices.csv").write_text(
        'index,mid,display_name\n0,/m/a,"Speech"\n1,/m/b,"Dog"\n2,/m/c,"Music"\n'
    )
    tone(root / "audio/bal/Yaaaaaaaaaaa.wav")
    tone(root / "audio/bal/bbbbbbbbbbb_10.000.flac", rate=44100, channels=2)
    tone(root / "audio/eval/ccccccccccc.wav")
    (root / "audio/bal/ddddddddddd.wav").write_bytes(b"RIFF\x00\x00\x00\x00garbage")
    tone(root / "audio/bal/eeeeeeeeeee.wav", silent=True)
    (root / "audio/bal/fffffffffff.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    rows = ["# header", 'aaaaaaaaaaa, 0.0, 10.0, "/m/a,/m/b"', 'bbbbbbbbbbb, 10.0, 20.0, "/m/c"']
    rows += ['ddddddddddd, 0, 10, "/m/a"', 'eeeeeeeeeee, 0, 10, "/m/a"', 'fffffffffff, 0, 10, "/m/b"']
    (root / "balanced_train_segments.csv").write_text("\n".join(rows + ['ggggggggggg, 0, 10, "/m/a"']) + "\n")
    (root / "eval_segments.csv").write_text('ccccccccccc, 0, 10, "/m/c"\nhhhhhhhhhhh, 0, 10, "/m/c"\n')
    return root


def test_audioset_keeps_good_clips_counts_the_rest_and_lists_the_missing(audioset, tmp_path, capsys):
    out = tmp_path / "prepared"
    prepare(["audioset", f"root={audioset}", f"out={out}", "workers=2", "stats_clips=0"])
    printed = capsys.readouterr().out
    m4a = "ffmpeg" if shutil.which("ffmpeg") else "m4a"  # the fake m4a fails in ffmpeg, or is not tried
    report = json.loads((out / "report_audioset.json").read_text())
    assert report["clips_kept"] == 3 and report["hours_kept"] == pytest.approx(3 / 3600, abs=1e-3)
    assert {k.split(":")[0]: v for k, v in report["dropped"].items()} == {"unreadable": 1, "silent": 1, m4a: 1}
    assert m4a == "ffmpeg" or "m4a: needs ffmpeg, not installed" in report["dropped"]
    assert report["missing"] == {"balanced_train_segments": 1, "eval_segments": 1}
    assert report["sample_rates"] == {"16000": 2, "44100": 1} and report["channels"] == {"1": 2, "2": 1}
    assert (out / "missing_balanced_train_segments.txt").read_text() == "ggggggggggg\n"
    assert "audioset: 3 clips kept (0.00 h), 3 dropped" in printed
    labels = str(out / "class_labels_indices.csv")
    train = read_dataset(source(kind="json", path=str(out / "audioset_balanced_train_segments.json"), labels=labels))
    assert [(e.path.rsplit("/", 1)[1], e.labels) for e in train.examples] == [
        ("Yaaaaaaaaaaa.wav", (0, 1)),
        ("bbbbbbbbbbb_10.000.flac", (2,)),
    ]
    assert train.classes == ["Speech", "Dog", "Music"]
    evaluation = read_dataset(source(kind="json", path=str(out / "audioset_eval_segments.json"), labels=labels))
    assert [e.labels for e in evaluation.examples] == [(2,)]


def test_an_interrupted_preparation_resumes_without_checking_a_clip_twice(audioset, tmp_path):
    out = tmp_path / "prepared"
    args = ["audioset", f"root={audioset}", f"out={out}", "workers=1", "stats_clips=0"]
    prepare(args)
    state = out / ".prepare" / "audioset.jsonl"
    lines = state.read_text().splitlines()
    manifest = (out / "audioset_balanced_train_segments.json").read_text()
    state.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:10])  # killed while writing the second last line
    prepare(args)
    again = state.read_text().splitlines()
    assert len(again) == len(lines) + 1  # the torn line stays; the two clips it lost are checked once more
    assert sorted(json.loads(line)["path"] for line in again[len(lines) - 1 :]) == sorted(
        json.loads(line)["path"] for line in lines[-2:]
    )
    assert (out / "audioset_balanced_train_segments.json").read_text() == manifest


# One download as the common downloaders name it: (file, the segment it is of, or why it is left out).
AUDIOSET_NAMES = [
    ("aaaaaaaaaaa.wav", "aaaaaaaaaaa 0"),  # <ytid>
    ("Ybbbbbbbbbbb.flac", "bbbbbbbbbbb 10"),  # Y<ytid> (the AudioSet release's naming)
    ("Yccccccccc-.wav", "Yccccccccc- 0"),  # a YTID that itself starts with Y
    ("YYdddddddddd.wav", "Ydddddddddd 0"),  # ... and Y<that YTID>
    ("-_e_e-ee_ee_30.000.wav", "-_e_e-ee_ee 30"),  # <ytid>_<start>, decimal seconds, a YTID of - and _
    ("fffffffffff_20.flac", "fffffffffff 20"),  # <ytid>_<start>, integer seconds
    ("ggggggggggg_12.5.wav", "ggggggggggg 12.5"),
    ("hhhhhhhhhhh_30000.flac", "hhhhhhhhhhh 30"),  # <ytid>_<start_ms>
    ("iiiiiiiiiii_0_10000.flac", "iiiiiiiiiii 0"),  # <ytid>_<start_ms>_<end_ms> (audiosetdl) ...
    ("iiiiiiiiiii_30000_40000.flac", "iiiiiiiiiii 30"),  # ... picking one of the YTID's two segments
    ("iiiiiiiiiii.wav", "matches several segments (0 s, 30 s)"),
    ("aaaaaaaaaaa_0.wav", "a second file of segment aaaaaaaaaaa at 0 s (aaaaaaaaaaa.wav)"),
    ("fffffffffff_99.wav", "matches no segment (no segment of its YTID starts at the time in its name)"),
    ("kkkkkkkkkkk.wav", "matches no segment (its name holds no YTID of the csv)"),
]
AUDIOSET_CSV = [  # YTID, start, end; jjjjjjjjjjj has no file
    ("aaaaaaaaaaa", 0, 10),
    ("bbbbbbbbbbb", 10, 20),
    ("Yccccccccc-", 0, 10),
    ("Ydddddddddd", 0, 10),
    ("-_e_e-ee_ee", 30, 40),
    ("fffffffffff", 20, 30),
    ("ggggggggggg", 12.5, 22.5),
    ("hhhhhhhhhhh", 30, 40),
    ("iiiiiiiiiii", 0, 10),
    ("iiiiiiiiiii", 30, 40),
    ("jjjjjjjjjjj", 0, 10),
]


@pytest.fixture
def downloaded(tmp_path):
    root = tmp_path / "downloaded"
    root.mkdir()
    (root / "class_labels_indices.csv").write_text('index,mid,display_name\n0,/m/a,"Speech"\n')
    rows = [f'{y}, {a:.3f}, {b:.3f}, "/m/a"' for y, a, b in AUDIOSET_CSV]
    (root / "balanced_train_segments.csv").write_text(
        "# YTID, start_seconds, end_seconds, positive_labels\n" + "\n".join(rows)
    )
    for name, _ in AUDIOSET_NAMES:
        tone(root / ("audio/nested" if name[0] in "h-" else "audio") / name, seconds=0.5)
    return root


def left_out(why: str) -> bool:
    return why.startswith(("matches", "a second"))


def test_audioset_clips_are_found_under_every_downloader_s_naming(downloaded, tmp_path):
    out = tmp_path / "prepared"
    prepare(["audioset", f"root={downloaded}", f"out={out}", "workers=1", "stats_clips=0"])
    kept = json.loads((out / "audioset_balanced_train_segments.json").read_text())["data"]
    found = {Path(e["wav"]).name for e in kept}
    segment_of = {name: what for name, what in AUDIOSET_NAMES if not left_out(what)}
    assert found == set(segment_of) and len(kept) == len(AUDIOSET_CSV) - 1
    # in the csv's order: each file in the place of its segment
    segments = [f"{y} {a:g}" for y, a, _ in AUDIOSET_CSV if y != "jjjjjjjjjjj"]
    assert [segment_of[Path(e["wav"]).name] for e in kept] == segments
    assert (out / "missing_balanced_train_segments.txt").read_text() == "jjjjjjjjjjj\n"
    listed = dict(line.split(": ", 1) for line in (out / "unmatched_audioset.txt").read_text().splitlines())
    expected = {name: why for name, why in AUDIOSET_NAMES if left_out(why)}
    assert {Path(p).name: why.split(";")[0] for p, why in listed.items()} == expected
    assert json.loads((out / "report_audioset.json").read_text())["unmatched"] == 4
    # the audioset source kind reads the same download the same way
    listing = source(
        "audioset", path="balanced_train_segments.csv", labels="class_labels_indices.csv", audio_dir="audio"
    ).read(downloaded)
    assert [Path(p).name for p in listing.paths] == [Path(e["wav"]).name for e in kept]
    assert listing.missing == ["jjjjjjjjjjj"] and len(listing.skipped) == 4


def test_librispeech_is_one_manifest_per_subset_and_train960_holds_only_the_training_ones(tmp_path, capsys):
    root = tmp_path / "LibriSpeech"
    for subset in ("train-clean-100", "train-other-500", "dev-clean", "test-clean", "test-other"):
        tone(root / f"{subset}/19/198/19-198-0000.flac")
    tone(root / "README/1-1-0000.flac")
    out = tmp_path / "prepared"
    prepare(["librispeech", f"root={root}", f"out={out}", "stats_clips=1"])
    report = json.loads((out / "report_librispeech.json").read_text())
    assert report["manifests"] == {
        "librispeech_dev-clean.json": 1,
        "librispeech_test-clean.json": 1,
        "librispeech_test-other.json": 1,
        "librispeech_train-clean-100.json": 1,
        "librispeech_train-other-500.json": 1,
        "librispeech_train960.json": 2,
    }
    assert report["selections"] == {"librispeech_train960.json": ["train-clean-100", "train-other-500"]}
    for name in report["manifests"]:  # no manifest mixes training and evaluation subsets
        subsets = {Path(e["wav"]).relative_to(root).parts[0] for e in json.loads((out / name).read_text())["data"]}
        assert all(s.startswith("train") for s in subsets) or len(subsets) == 1, name
    assert json.loads((out / "stats.json").read_text())["manifest"] == report["train_manifest"]
    assert report["train_manifest"] == "librispeech_train960.json"
    capsys.readouterr()
    prepare(["librispeech", f"root={root}", f"out={tmp_path / 'nostats'}", "stats_clips=0"])
    last = capsys.readouterr().out.splitlines()[-1]  # without statistics too, the training subsets to train on
    assert (
        last == f"to train on it: data.train.kind=json data.train.path={tmp_path / 'nostats/librispeech_train960.json'}"
    )
    assert (
        report["unmatched"] == 1
        and "README/1-1-0000.flac: not in a LibriSpeech subset folder"
        in (out / "unmatched_librispeech.txt").read_text()
    )
    # a subset's own folder as the root
    prepare(["librispeech", f"root={root / 'dev-clean'}", f"out={tmp_path / 'dev'}", "stats_clips=0"])
    assert sorted(p.name for p in (tmp_path / "dev").glob("*.json")) == [
        "librispeech_dev-clean.json",
        "report_librispeech.json",
    ]


def test_librispeech_and_folders_convert_to_16k_mono_flac_and_write_stats(tmp_path, capsys):
    root = tmp_path / "LibriSpeech"
    for name in ("train-clean-100/19/198/19-198-0000.flac", "train-clean-100/19/198/19-198-0001.flac"):
        tone(root / name, seconds=2.0)
    tone(root / "train-other-500/20/1/20-1-0000.wav", rate=22050, channels=2)
    out, flac = tmp_path / "prepared", tmp_path / "flac"
    prepare(["librispeech", f"root={root}", f"out={out}", f"flac={flac}", "stats_clips=3"])
    data = read_dataset(source(kind="json", path=str(out / "librispeech_train960.json")))
    assert len(data.examples) == 3 and data.classes == []
    for e in data.examples:
        info = sf.info(e.path)
        assert e.path.startswith(str(flac)) and (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    assert sf.info(str(flac / "train-other-500/20/1/20-1-0000.flac")).duration == pytest.approx(1.0, abs=1e-3)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["clips"] == 3 and stats["manifest"] == "librispeech_train960.json"
    assert -20 < stats["features.mean"] < 5 and 0 < stats["features.std"] < 10
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == (
        f"to train on it: data.train.kind=json data.train.path={out.resolve() / 'librispeech_train960.json'} "
        f"features.mean={stats['features.mean']:.7g} features.std={stats['features.std']:.7g}"
    )
    cfg = load_config(PretrainConfig, "configs/pretrain/demo.yaml", last.split()[4:])  # the overrides as printed
    assert cfg.data.train == source("json", path=str(out.resolve() / "librispeech_train960.json"))
    assert cfg.features.mean == pytest.approx(stats["features.mean"], rel=1e-6)


def test_esc50_and_speech_commands_keep_their_splits_and_labels(demo_root, tmp_path):
    out = tmp_path / "prepared"
    prepare(["esc50", f"root={demo_root / 'esc50'}", f"out={out}", "stats_clips=0"])
    labels = str(out / "class_labels_indices.csv")
    for fold in (1, 5):
        ours = read_dataset(source(kind="json", path=str(out / f"esc50_fold{fold}.json"), labels=labels))
        theirs = read_dataset(source(kind="esc50", path="esc50", split=str(fold)), demo_root)
        assert [(e.path, e.labels) for e in ours.examples] == [(e.path, e.labels) for e in theirs.examples]
        assert ours.classes == theirs.classes
    out = tmp_path / "sc"
    prepare(["speechcommands", f"root={demo_root / 'speechcommands'}", f"out={out}", "stats_clips=0"])
    report = json.loads((out / "report_speechcommands.json").read_text())
    assert report["manifests"] == {
        "speechcommands_training.json": 280,
        "speechcommands_validation.json": 35,
        "speechcommands_testing.json": 35,
    }


def test_a_folder_with_nothing_readable_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        prepare(["folder", f"root={tmp_path / 'empty'}", f"out={tmp_path / 'out'}"])
    assert e.value.code == 1 and capsys.readouterr().err == (
        f"python -m ssast.data.prepare: error: no audio found for folder under {tmp_path / 'empty'}\n"
    )


def test_the_tools_help_shows_every_key_with_its_default(capsys):
    with pytest.raises(SystemExit):
        prepare(["--help"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "usage: python -m ssast.data.prepare LAYOUT [key=value ...] [--print-config]"
    assert "  root: (required)  # str" in lines and "  stats_clips: 2000  # int, >= 0" in lines


def test_the_released_recipe_pretrains_on_prepared_audioset_and_librispeech(audioset, tmp_path):
    """The README's path end to end: prepare both corpora, then the released recipe (shrunk to run here) mixes
    the three manifests in proportion to their sizes."""
    (audioset / "unbalanced_train_segments.csv").write_text('ccccccccccc, 0, 10, "/m/c"\naaaaaaaaaaa, 0, 10, "/m/a"\n')
    for i in range(4):
        tone(tmp_path / f"LibriSpeech/train-clean-100/19/198/19-198-000{i}.flac", seconds=1.5)
    out = tmp_path / "data/prepared"
    for layout, root in (("audioset", audioset), ("librispeech", tmp_path / "LibriSpeech")):
        prepare([layout, f"root={root}", f"out={out}", "workers=2", "stats_clips=0"])
    pretrain_stage.main(
        ["--config", "configs/pretrain/ssast_tiny_patch400.yaml", f"data.root={tmp_path}", f"run_dir={tmp_path}/run"]
        + ["features.target_length=128", "model.input_tdim=128", "model.depth=1", "ssl.mask_size=32"]
        + ["ssl.valid_mask_size=32", "data.batch_size=8", "data.num_parallel_calls=1", "train.max_steps=2"]
        + ["train.log_every=1", "train.eval_every=2", "train.tensorboard=false", "data.valid_holdout=2"]
    )
    last = read_metrics(tmp_path / "run")[-1]
    drawn = {k.split("/")[1]: v for k, v in last.items() if k.startswith("clips_seen/")}
    names = ["audioset_unbalanced_train_segments", "audioset_balanced_train_segments", "librispeech_train960"]
    assert list(drawn) == names and sum(drawn.values()) == 16 and min(drawn.values()) > 0
    # their shares are their sizes (2, 2 and 4 clips), exactly per block of 10,000 draws
    overrides = [f"data.root={tmp_path}", "data.valid_holdout=0"]
    cfg = load_config(PretrainConfig, "configs/pretrain/ssast_tiny_patch400.yaml", overrides)
    train, _ = train_valid(cfg.data, cfg.data.root)
    assert training_sampler(train, cfg.data, 0, 0, 1).k.tolist() == [2500, 2500, 5000]
    assert "valid_loss" in read_metrics(tmp_path / "run", None)[-1]
