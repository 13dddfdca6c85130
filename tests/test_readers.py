import json
import os

import numpy as np
import pytest
import soundfile as sf

from ssast.data.index import read_dataset, split_holdout
from ssast.data.sources import ManifestError, source
from ssast.demo import builtin as demo

pytestmark = pytest.mark.integration


def _wav(path, seconds=0.5, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * sr)), sr)
    return path


LABELS = 'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n2,/m/0ytgt,Child\n'


def test_json_manifest_with_label_csv(tmp_path):
    (tmp_path / "labels.csv").write_text(LABELS)
    a, b = _wav(tmp_path / "a.wav"), _wav(tmp_path / "sub" / "b.wav")
    (tmp_path / "data.json").write_text(
        json.dumps(
            {"data": [{"wav": str(a), "labels": "/m/09x0r,/m/05zppz"}, {"wav": "sub/b.wav", "labels": "/m/0ytgt"}]}
        )
    )
    ds = read_dataset(source(kind="json", path="data.json", labels="labels.csv"), tmp_path)
    assert ds.classes == ["Speech", "Male speech, man speaking", "Child"] and ds.multi_label
    assert [(e.path, e.labels) for e in ds.examples] == [(str(a), (0, 1)), (str(b), (2,))]


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"data": [\n{"wav": "a.wav",,}]}', "data.json: line 2:"),
        ("[1, 2]", "expected a top-level object with a 'data' list"),
        ('{"data": [{"wav": "a.wav", "labels": "/m/nope"}]}', "entry 0: label '/m/nope' is not in the label csv"),
        ('{"data": [{"wav": 12}]}', "entry 0: expected an object with a 'wav' path string"),
        (
            '{"data": [{"wav": "a.wav", "labels": ["/m/09x0r"]}]}',
            "entry 0: 'labels' must be a string of comma-separated mids, got ['/m/09x0r']",
        ),
        ('{"data": {"wav": "a.wav"}}', "expected a top-level object with a 'data' list"),
    ],
)
def test_json_manifest_errors_name_file_and_place(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(LABELS)
    (tmp_path / "data.json").write_text(text)
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_dataset(source(kind="json", path=str(tmp_path / "data.json"), labels=str(tmp_path / "labels.csv")))


def test_audioset_segment_csv_quirks_and_missing_clips(tmp_path):
    (tmp_path / "labels.csv").write_text(LABELS)
    (tmp_path / "segments.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/0ytgt"\n'
        '--ZhevVpy1s, 50.000, 60.000, "/m/05zppz"\n'
        '-0BIyqJj9ZU, 30.000, 40.000, "/m/09x0r"\n'
        "\n"
    )
    _wav(tmp_path / "clips" / "Y--PJHxphWEs.wav")
    _wav(tmp_path / "clips" / "nested" / "-0BIyqJj9ZU_30000.flac")
    ds = read_dataset(source(kind="audioset", path="segments.csv", labels="labels.csv", audio_dir="clips"), tmp_path)
    assert [(e.path.split("clips/")[1], e.labels) for e in ds.examples] == [
        ("Y--PJHxphWEs.wav", (0, 2)),
        ("nested/-0BIyqJj9ZU_30000.flac", (0,)),
    ]
    assert ds.missing == ["--ZhevVpy1s"]


def test_audioset_bad_row_names_the_line(tmp_path):
    (tmp_path / "labels.csv").write_text(LABELS)
    (tmp_path / "clips").mkdir()
    (tmp_path / "s.csv").write_text('# header\nabc, 1.0, "/m/09x0r"\n')
    with pytest.raises(ManifestError, match=r"s\.csv: line 2: expected YTID"):
        read_dataset(source(kind="audioset", path="s.csv", labels="labels.csv", audio_dir="clips"), tmp_path)


def test_esc50_folds_on_demo_data(demo_root):
    train = read_dataset(source(kind="esc50", path="esc50", split="1,2,3,4"), demo_root)
    test = read_dataset(source(kind="esc50", path="esc50", split="5"), demo_root)
    assert len(train.examples) == 100 and len(test.examples) == 25
    assert train.classes == demo.EVENT_NAMES and not train.multi_label
    assert {e.path for e in train.examples}.isdisjoint(e.path for e in test.examples)
    assert all(e.path.split("/")[-1].startswith("5-") for e in test.examples)
    assert sorted(e.labels[0] for e in test.examples) == list(range(25))


def test_speechcommands_splits_on_demo_data(demo_root):
    splits = {
        s: read_dataset(source(kind="speechcommands", path="speechcommands", split=s), demo_root)
        for s in ("training", "validation", "testing")
    }
    assert {s: len(d.examples) for s, d in splits.items()} == {"training": 280, "validation": 35, "testing": 35}
    assert splits["training"].classes == sorted(demo.WORDS)
    paths = [set(e.path for e in d.examples) for d in splits.values()]
    assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])
    assert all("_background_noise_" not in p for p in paths[0])
    word = splits["testing"].examples[0]
    assert splits["testing"].classes[word.labels[0]] == word.path.split("/")[-2]


def test_audioset_json_and_unlabelled_folder_on_demo_data(demo_root):
    ds = read_dataset(
        source(kind="json", path="audioset/train.json", labels="audioset/class_labels_indices.csv"), demo_root
    )
    assert len(ds.examples) == 24 and len(ds.classes) == 26
    assert all(1 <= len(e.labels) <= 4 for e in ds.examples)
    unlabeled = read_dataset(source(kind="folder", path="unlabeled"), demo_root)
    assert len(unlabeled.examples) == 40 and unlabeled.classes == []
    train, held = split_holdout(unlabeled, 8)
    assert len(held.examples) == 8 and len(train.examples) == 32
    assert {e.path for e in train.examples}.isdisjoint(e.path for e in held.examples)


def test_file_list_and_empty_folder(tmp_path):
    _wav(tmp_path / "x" / "a.wav")
    (tmp_path / "list.txt").write_text("x/a.wav\n\n")
    assert [e.path for e in read_dataset(source(kind="list", path=str(tmp_path / "list.txt"))).examples] == [
        str(tmp_path / "x" / "a.wav")
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="has no examples"):
        read_dataset(source(kind="folder", path=str(tmp_path / "empty")))


def test_a_folder_is_listed_once_and_anew_when_a_file_comes_or_goes(tmp_path, monkeypatch):
    from ssast.data import sources

    audio = tmp_path / "audio"
    for name in ("a/1.wav", "a/b/2.flac", "c/3.ogg", "c/notes.txt"):
        (audio / name).parent.mkdir(parents=True, exist_ok=True)
        (audio / name).write_bytes(b"")
    folder = source("folder", path=str(audio))
    walks, walk = [], os.walk
    monkeypatch.setattr(sources.os, "walk", lambda *a, **k: walks.append(a) or walk(*a, **k))
    assert [e.path for e in read_dataset(folder).examples] == [
        str(audio / n) for n in ("a/1.wav", "a/b/2.flac", "c/3.ogg")
    ]
    assert len(walks) == 1
    assert len(read_dataset(folder).examples) == 3 and len(walks) == 1  # a warm start stats, walks nothing
    (audio / "a/b/4.wav").write_bytes(b"")  # a file added deep down changes its folder's mtime
    assert str(audio / "a/b/4.wav") in [e.path for e in read_dataset(folder).examples] and len(walks) == 2
    (audio / "c/3.ogg").unlink()
    assert len(read_dataset(folder).examples) == 3 and len(walks) == 3


def test_a_csv_manifest_names_its_classes_or_takes_a_label_csv(tmp_path):
    (tmp_path / "clips.csv").write_text('path,labels\na.wav,"dog,bark"\nsub/b.wav,cat\nc.wav,\n')
    ds = read_dataset(source("csv", path="clips.csv"), tmp_path)
    assert [(e.path, e.labels) for e in ds.examples] == [
        (str(tmp_path / "a.wav"), (0, 2)),
        (str(tmp_path / "sub/b.wav"), (1,)),
        (str(tmp_path / "c.wav"), ()),
    ]
    assert ds.classes == ["bark", "cat", "dog"] and ds.multi_label
    (tmp_path / "labels.csv").write_text(LABELS)
    (tmp_path / "mids.csv").write_text("path,labels\na.wav,/m/0ytgt\n")
    ds = read_dataset(source("csv", path="mids.csv", labels="labels.csv"), tmp_path)
    assert ds.examples[0].labels == (2,) and ds.classes[2] == "Child" and not ds.multi_label
    (tmp_path / "bad.csv").write_text("wav,labels\na.wav,cat\n")
    with pytest.raises(ManifestError, match=r"bad\.csv: line 1: expected a header with a 'path' column"):
        read_dataset(source("csv", path="bad.csv"), tmp_path)
    with pytest.raises(ManifestError, match="a csv source takes path, weight, labels, not audio_dir"):
        source("csv", path="x.csv", audio_dir="clips")


def test_a_folder_source_given_a_file_says_which_kind_reads_it(tmp_path):
    (tmp_path / "data.json").write_text('{"data": []}')
    with pytest.raises(ManifestError) as e:
        read_dataset(source("folder", path="data.json"), tmp_path)
    hint = "(it is a file: set kind=json, csv or list to read a manifest)"
    assert str(e.value) == f"audio folder not found: {tmp_path / 'data.json'} {hint}"
