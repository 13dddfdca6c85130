"""Dataset readers: each turns one on-disk format into a `Dataset` (a list of examples and the class names).

Formats: AST data json + label csv, AudioSet segment csvs mapped onto a local audio
folder, ESC-50, Speech Commands V2, and plain folders or file lists of unlabelled audio. Relative paths are
resolved against ``root``. A manifest that does not parse raises `ManifestError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file (and line)."""


@dataclass
class DatasetConfig:
    """One data set on disk."""

    kind: Literal["json", "audioset", "esc50", "speechcommands", "folder", "list"] = "folder"
    path: str = ""  # json manifest | AudioSet segment csv | ESC-50 / Speech Commands root | folder | path list
    labels: str = ""  # json, audioset: class_labels_indices.csv
    audio_dir: str = ""  # audioset: folder holding the clips
    split: str = ""  # esc50: folds, e.g. "1,2,3,4"; speechcommands: training | validation | testing


@dataclass(frozen=True)
class Example:
    """One clip: its path and the indices of its labels."""

    path: str
    labels: tuple[int, ...] = ()  # class indices (several for multi-label data)


@dataclass
class Dataset:
    """The clips of a data set, its class names, and whether a clip may carry several labels."""

    examples: list[Example]
    classes: list[str] = field(default_factory=list)  # empty for unlabelled data
    multi_label: bool = False
    missing: list[str] = field(default_factory=list)  # listed clips not found on disk (AudioSet csvs)


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
    examples = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("wav"), str):
            raise ManifestError(f"{path}: entry {i}: expected an object with a 'wav' path string")
        if not isinstance(item.get("labels", ""), str):
            raise ManifestError(
                f"{path}: entry {i}: 'labels' must be a string of comma-separated mids, got {item['labels']!r}"
            )
        labels = _labels(item.get("labels", ""), index, f"{path}: entry {i}") if index else ()
        examples.append(Example(str(_resolve(item["wav"], path.parent)), labels))
    return Dataset(examples, classes, multi_label=True)


def read_audioset_csv(cfg: DatasetConfig, root: str | Path = "") -> Dataset:
    """AudioSet segment csv (``# comments``, rows ``YTID, start, end, "mid1,mid2"``) mapped onto the clips in
    ``audio_dir`` whose file stem is the YTID, ``Y<YTID>`` or starts with ``<YTID>_``. Missing clips are listed."""
    path, audio_dir = _resolve(cfg.path, root), _resolve(cfg.audio_dir, root)
    if not audio_dir.is_dir():
        raise ManifestError(f"AudioSet audio_dir is not a folder: {audio_dir}")
    classes, index = _label_csv(_resolve(cfg.labels, root))
    files = {}
    for f in sorted(audio_dir.rglob("*")):
        if f.suffix.lower() in AUDIO_SUFFIXES:
            stem = f.stem[1:] if f.stem.startswith("Y") and len(f.stem) == 12 else f.stem
            files.setdefault(stem, f)
            files.setdefault(stem.rsplit("_", 1)[0], f)
    examples, missing = [], []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ManifestError(f"AudioSet csv not found: {path}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = next(csv.reader([line], skipinitialspace=True))
        if len(row) != 4:
            raise ManifestError(f'{path}: line {n}: expected YTID, start, end, "labels"; got {line!r}')
        ytid = row[0].strip()
        if ytid in files:
            examples.append(Example(str(files[ytid]), _labels(row[3], index, f"{path}: line {n}")))
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


READERS = {
    "json": read_json,
    "audioset": read_audioset_csv,
    "esc50": read_esc50,
    "speechcommands": read_speechcommands,
    "folder": read_folder,
    "list": read_list,
}


def read_dataset(cfg: DatasetConfig, root: str | Path = "") -> Dataset:
    """The data set a `DatasetConfig` names (paths resolved against `root`); ManifestError names what is wrong."""
    dataset = READERS[cfg.kind](cfg, root)
    if not dataset.examples:
        raise ManifestError(f"{cfg.kind} data set at {_resolve(cfg.path, root)} has no examples")
    return dataset


def split_holdout(dataset: Dataset, count: int) -> tuple[Dataset, Dataset]:
    """(rest, held out): exactly ``count`` examples, evenly spaced through the list, held out (deterministic)."""
    n = len(dataset.examples)
    if not 0 <= count < n:
        raise ManifestError(
            f"cannot hold out {count} of the {n} examples for validation: set data.valid_holdout below {n}"
        )
    held = {i * n // count for i in range(count)}  # distinct, as n / count > 1

    def pick(keep):
        return [e for i, e in enumerate(dataset.examples) if (i in held) != keep]

    rest = dict(classes=dataset.classes, multi_label=dataset.multi_label)
    return Dataset(pick(True), **rest), Dataset(pick(False), **rest)
