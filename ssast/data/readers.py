"""Dataset readers: each turns one on-disk format into a `Dataset` (a list of examples and the class names).

Formats: AST data json + label csv, AudioSet segment csvs mapped onto a local audio
folder, ESC-50, Speech Commands V2, and plain folders or file lists of unlabelled audio. Relative paths are
resolved against ``root``. A manifest that does not parse raises `ManifestError` naming the file and line.
`read_dataset` compiles what a reader returns into memory-mapped arrays, once per node (`ssast.data.manifests`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ssast.config import NonNegativeFloat
from ssast.data.manifests import Example, Examples, ManifestError, compiled, source_key

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass
class DatasetConfig:
    """One data set on disk."""

    kind: Literal["json", "audioset", "esc50", "speechcommands", "folder", "list", "shards"] = "folder"
    # json manifest | AudioSet segment csv | ESC-50 / Speech Commands root | folder | path list | shards folder
    path: str = ""
    labels: str = ""  # json, audioset: class_labels_indices.csv
    audio_dir: str = ""  # audioset: folder holding the clips
    split: str = ""  # esc50: folds, e.g. "1,2,3,4"; speechcommands: training | validation | testing
    weight: NonNegativeFloat = 0.0  # share of a training mixture (relative to the others'); 0: the set's size


@dataclass
class Source:
    """One data set of a mixture: its name, where its rows end in the compiled arrays, its share."""

    name: str
    stop: int  # rows from the previous source's stop up to this one are this source's
    weight: float = 0.0  # 0: its size


@dataclass
class Dataset:
    """The clips of a data set (packed into arrays), its class names, and whether a clip may carry several
    labels; a mixture also lists its sources."""

    examples: Sequence[Example]
    classes: list[str] = field(default_factory=list)  # empty for unlabelled data
    multi_label: bool = False
    missing: list[str] = field(default_factory=list)  # listed clips not found on disk (AudioSet csvs)
    sources: list[Source] = field(default_factory=list)  # a mixture's, in row order
    shard_stops: list[int] = field(default_factory=list)  # tar shards: where each shard's rows end

    def __post_init__(self):
        self.examples = Examples.pack(self.examples)


def _resolve(path: str, root: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or not str(root) else Path(root) / p


def _label_csv(path: Path) -> tuple[list[str], dict[str, int]]:
    """class_labels_indices.csv -> (display names, mid -> index)."""
    try:
        rows = list(csv.DictReader(open(path, newline="")))
    except FileNotFoundError:
        raise ManifestError(f"label csv not found: {path}") from None
    if not rows or not {"index", "mid", "display_name"} <= rows[0].keys():
        raise ManifestError(f"{path}: line 1: expected the header index,mid,display_name")
    names, index = [""] * len(rows), {}
    for line, row in enumerate(rows, start=2):
        try:
            i = int(row["index"])
            names[i], index[row["mid"]] = row["display_name"], i
        except (ValueError, IndexError, TypeError):
            raise ManifestError(f"{path}: line {line}: bad row {row}") from None
    return names, index


def _labels(mids: str, index: dict[str, int], where: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({index[m.strip()] for m in mids.split(",") if m.strip()}))
    except KeyError as e:
        raise ManifestError(f"{where}: label {e.args[0]!r} is not in the label csv") from None


def read_json(cfg: DatasetConfig, root: str | Path = "") -> Dataset:
    """AST/SSAST data json: {"data": [{"wav": path, "labels": "mid1,mid2"}, ...]}; a relative ``wav`` path is
    relative to the json's folder, so a data set with its manifest can move."""
    path = _resolve(cfg.path, root)
    try:
        data = json.loads(path.read_text())["data"]
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: line {e.lineno}: {e.msg}") from None
    except (KeyError, TypeError):
        raise ManifestError(f"{path}: expected a top-level object with a 'data' list") from None
    if not isinstance(data, list):
        raise ManifestError(f"{path}: expected a top-level object with a 'data' list")
    classes, index = _label_csv(_resolve(cfg.labels, root)) if cfg.labels else ([], {})
    paths, labels, folder, parsed = [], [], str(path.parent), {"": ()}  # parsed: label strings repeat
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("wav"), str):
            raise ManifestError(f"{path}: entry {i}: expected an object with a 'wav' path string")
        mids = item.get("labels", "")
        if not isinstance(mids, str):
            raise ManifestError(f"{path}: entry {i}: 'labels' must be a string of comma-separated mids, got {mids!r}")
        if index and mids not in parsed:
            parsed[mids] = _labels(mids, index, f"{path}: entry {i}")
        paths.append(os.path.normpath(os.path.join(folder, os.path.expanduser(item["wav"]))))
        labels.append(parsed[mids] if index else ())
    return Dataset(Examples.from_lists(paths, labels), classes, multi_label=True)


def audioset_files(audio_dir: Path, suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> dict[str, Path]:
    """YTID -> clip, for the files under `audio_dir` whose stem is the YTID, ``Y<YTID>`` or starts with
    ``<YTID>_``."""
    files = {}
    for f in sorted(audio_dir.rglob("*")):
        if f.suffix.lower() in suffixes:
            stem = f.stem[1:] if f.stem.startswith("Y") and len(f.stem) == 12 else f.stem
            files.setdefault(stem, f)
            files.setdefault(stem.rsplit("_", 1)[0], f)
    return files


def audioset_segments(path: Path) -> list[tuple[int, str, str]]:
    """(line, YTID, "mid1,mid2") of an AudioSet segment csv (``# comments``, rows ``YTID, start, end, labels``)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ManifestError(f"AudioSet csv not found: {path}") from None
    segments = []
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = next(csv.reader([line], skipinitialspace=True))
        if len(row) != 4:
            raise ManifestError(f'{path}: line {n}: expected YTID, start, end, "labels"; got {line!r}')
        segments.append((n, row[0].strip(), row[3]))
    return segments


def read_audioset_csv(cfg: DatasetConfig, root: str | Path = "") -> Dataset:
    """AudioSet segment csv mapped onto the clips in ``audio_dir`` (`audioset_files`). Missing clips are
    listed."""
    path, audio_dir = _resolve(cfg.path, root), _resolve(cfg.audio_dir, root)
    if not audio_dir.is_dir():
        raise ManifestError(f"AudioSet audio_dir is not a folder: {audio_dir}")
    classes, index = _label_csv(_resolve(cfg.labels, root))
    files, examples, missing = audioset_files(audio_dir), [], []
    for n, ytid, mids in audioset_segments(path):
        if ytid in files:
            examples.append(Example(str(files[ytid]), _labels(mids, index, f"{path}: line {n}")))
        else:
            missing.append(ytid)
    return Dataset(examples, classes, multi_label=True, missing=missing)


def _esc50_meta(base: Path) -> list[dict]:
    """Rows of ``meta/esc50.csv`` with ``fold`` and ``target`` as ints."""
    meta = base / "meta" / "esc50.csv"
    try:
        rows = list(csv.DictReader(open(meta, newline="")))
        return [
            {"fold": int(r["fold"]), "target": int(r["target"]), "category": r["category"], "filename": r["filename"]}
            for r in rows
        ]
    except FileNotFoundError:
        raise ManifestError(f"ESC-50 metadata not found: {meta}") from None
    except (KeyError, ValueError, TypeError) as e:
        raise ManifestError(f"{meta}: bad column or value ({e})") from None


def read_esc50(cfg: DatasetConfig, root: str | Path = "") -> Dataset:
    """ESC-50 (``audio/``, ``meta/esc50.csv``); ``split`` lists the folds to keep (all when empty). The classes
    are the csv's targets, however many."""
    base = _resolve(cfg.path, root)
    rows = _esc50_meta(base)
    try:
        folds = {int(f) for f in cfg.split.split(",") if f.strip()} or {r["fold"] for r in rows}
    except ValueError:
        raise ManifestError(f"ESC-50 split must list folds like 1,2,3, got {cfg.split!r}") from None
    names = {r["target"]: r["category"] for r in rows}
    examples = [Example(str(base / "audio" / r["filename"]), (r["target"],)) for r in rows if r["fold"] in folds]
    return Dataset(examples, [names.get(i, str(i)) for i in range(max(names, default=-1) + 1)])


def esc50_folds(cfg: DatasetConfig, root: str | Path = "") -> list[int]:
    """The folds of an ESC-50 folder, from ``meta/esc50.csv``."""
    return sorted({r["fold"] for r in _esc50_meta(_resolve(cfg.path, root))})


def read_speechcommands(cfg: DatasetConfig, root: str | Path = "") -> Dataset:
    """Speech Commands V2: one folder per word; ``split`` training (everything not listed), validation or
    testing (``validation_list.txt`` / ``testing_list.txt``); ``_background_noise_`` is not an example."""
    base = _resolve(cfg.path, root)
    if not base.is_dir():
        raise ManifestError(f"Speech Commands root is not a folder: {base}")
    words = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("_"))
    listed = {}
    for split in ("validation", "testing"):
        list_file = base / f"{split}_list.txt"
        if not list_file.is_file():
            raise ManifestError(f"Speech Commands list not found: {list_file}")
        listed[split] = set(list_file.read_text().split())
    split = cfg.split or "training"
    if split not in ("training", "validation", "testing"):
        raise ManifestError(f"Speech Commands split must be training, validation or testing, got {split!r}")
    examples = []
    for label, word in enumerate(words):
        for f in sorted((base / word).glob("*.wav")):
            name = f"{word}/{f.name}"
            in_split = name in listed[split] if split != "training" else not any(name in s for s in listed.values())
            if in_split:
                examples.append(Example(str(f), (label,)))
    return Dataset(examples, words)


def read_folder(cfg: DatasetConfig, root: str | Path = "") -> Dataset:
    """Every audio file under a folder (recursively), unlabelled."""
    base = _resolve(cfg.path, root)
    if not base.is_dir():
        raise ManifestError(f"audio folder not found: {base}")
    return Dataset([Example(str(f)) for f in sorted(base.rglob("*")) if f.suffix.lower() in AUDIO_SUFFIXES])


def read_list(cfg: DatasetConfig, root: str | Path = "") -> Dataset:
    """A text file of audio paths, one per line (relative to the file's folder), unlabelled."""
    path = _resolve(cfg.path, root)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ManifestError(f"file list not found: {path}") from None
    return Dataset([Example(str(_resolve(p.strip(), path.parent))) for p in lines if p.strip()])


def read_shards(cfg: DatasetConfig, root: str | Path = "") -> Dataset:
    """Tar shards written by ``python -m ssast.data.shards write`` (``path``: their folder); each audio member is
    read in place, as ``shard.tar:offset:size``."""
    base = _resolve(cfg.path, root)
    try:
        index = json.loads((base / "index.json").read_text())
        lines = (base / "index.tsv").read_text().splitlines()
    except FileNotFoundError as e:
        raise ManifestError(f"shard index not found: {e.filename}") from None
    examples, shards = [], []
    for n, line in enumerate(lines, start=1):
        try:
            shard, _, offset, size, labels = line.split("\t")
            path = f"{base / index['shards'][int(shard)]}:{int(offset)}:{int(size)}"
            examples.append(Example(path, tuple(int(i) for i in labels.split(",") if i)))
            shards.append(int(shard))
        except (ValueError, IndexError):
            raise ManifestError(f"{base / 'index.tsv'}: line {n}: expected shard, key, offset, size, labels") from None
    stops = np.searchsorted(shards, np.arange(len(index["shards"])), side="right")  # rows come shard by shard
    return Dataset(examples, index["classes"], index["multi_label"], shard_stops=stops.tolist())


READERS = {
    "json": read_json,
    "audioset": read_audioset_csv,
    "esc50": read_esc50,
    "speechcommands": read_speechcommands,
    "folder": read_folder,
    "list": read_list,
    "shards": read_shards,
}


def _sources(cfg: DatasetConfig, root: str | Path) -> list[Path]:
    """The files and folders a reader looks at: a change to any of them compiles the data set anew."""
    path = _resolve(cfg.path, root)
    labels = [_resolve(cfg.labels, root)] if cfg.labels else []
    if cfg.kind == "esc50":
        return [path / "meta" / "esc50.csv", path / "audio"]
    if cfg.kind == "speechcommands":
        return [path, *(p for p in sorted(path.glob("*")) if p.is_dir()), *sorted(path.glob("*_list.txt"))]
    if cfg.kind == "shards":
        return [path / "index.json", path / "index.tsv"]
    if cfg.kind in ("folder", "audioset"):
        top = path if cfg.kind == "folder" else _resolve(cfg.audio_dir, root)
        folders = [Path(d) for d, _, _ in os.walk(top)] if top.is_dir() else [top]
        return [path, *labels, *sorted(folders)] if cfg.kind == "audioset" else sorted(folders)
    return [path, *labels]


def _key(cfg: DatasetConfig, root: str | Path) -> str:
    options = {**dataclasses.asdict(cfg), "root": str(root), "cwd": os.getcwd()}
    options.pop("weight")  # not in the arrays
    return source_key(options, _sources(cfg, root))


def read_dataset(cfg: DatasetConfig, root: str | Path = "") -> Dataset:
    """The data set a `DatasetConfig` names (paths resolved against `root`), compiled once per node and source
    and memory-mapped; ManifestError names what is wrong."""

    def build():
        dataset = READERS[cfg.kind](cfg, root)
        if not dataset.examples:
            raise ManifestError(f"{cfg.kind} data set at {_resolve(cfg.path, root)} has no examples")
        meta = {k: getattr(dataset, k) for k in ("classes", "multi_label", "missing", "shard_stops")}
        return dataset.examples, meta

    examples, meta = compiled(_key(cfg, root), build)
    return Dataset(examples, **meta)


def read_mixture(cfgs: Sequence[DatasetConfig], root: str | Path = "") -> Dataset:
    """Several data sets as one training set, compiled once, each a `Source` with its weight; the labels stay
    when every set has the same classes, else the mixture is unlabelled (pretraining needs none)."""
    if len(cfgs) == 1:
        return read_dataset(cfgs[0], root)
    names = [Path(c.path).stem or c.kind for c in cfgs]
    names = [n if names.count(n) == 1 else f"{n}{i}" for i, n in enumerate(names)]

    def build():
        parts = [read_dataset(c, root) for c in cfgs]
        same = all(p.classes == parts[0].classes for p in parts)
        stops = np.cumsum([len(p.examples) for p in parts]).tolist()
        meta = {
            "classes": parts[0].classes if same else [],
            "multi_label": same and any(p.multi_label for p in parts),
            "missing": [m for p in parts for m in p.missing],
            "sources": [{"name": n, "stop": stop} for n, stop in zip(names, stops, strict=True)],
        }
        return Examples.concat([p.examples for p in parts], labels=same), meta

    examples, meta = compiled(source_key({"mixture": [_key(c, root) for c in cfgs], "names": names}, []), build)
    sources = [Source(**s, weight=c.weight) for s, c in zip(meta.pop("sources"), cfgs, strict=True)]
    return Dataset(examples, **meta, sources=sources)


def split_holdout(dataset: Dataset, count: int) -> tuple[Dataset, Dataset]:
    """(rest, held out): exactly ``count`` examples, evenly spaced through the list, held out (deterministic)."""
    n = len(dataset.examples)
    if not 0 <= count < n:
        raise ManifestError(
            f"cannot hold out {count} of the {n} examples for validation: set data.valid_holdout below {n}"
        )
    held = np.arange(count) * n // count  # distinct, as n / count > 1
    rest = np.setdiff1d(np.arange(n), held)
    meta = dict(classes=dataset.classes, multi_label=dataset.multi_label)
    rest = Dataset(dataset.examples.take(rest), **meta, sources=dataset.sources, shard_stops=dataset.shard_stops)
    return rest, Dataset(dataset.examples.take(held), **meta)
