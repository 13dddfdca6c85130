"""Data sources: one small config class per on-disk format, each parsing its format into a `Listing`.

A source names the clips of a data set (paths, label indices, class names) and the files and folders it looked
at, which key the compiled cache (`ssast.data.index`): a change to any of them lists the source anew. Relative
paths resolve against ``root`` (``data.root``). A source that does not parse raises `ManifestError` naming the
file and line. In a recipe a source is a mapping with a ``kind`` and that kind's options only::

    train: {kind: json, path: audioset_train.json, labels: class_labels_indices.csv}

This module is the bottom of the data layers: it imports nothing else of the package.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
import re
import typing
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from ssast.config import NonNegativeFloat, UserError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # what the loader decodes (libsndfile)


class ManifestError(UserError, ValueError):
    """A data source that cannot be read; the message names the file (and line)."""


@dataclass
class Listing:
    """What a source lists: per clip a path and its label indices, the class names, and the inputs read."""

    paths: list[str]
    labels: list[tuple[int, ...]]
    classes: list[str] = field(default_factory=list)  # empty for unlabelled data
    multi_label: bool = False
    missing: list[str] = field(default_factory=list)  # clips the source lists but the disk lacks (AudioSet)
    skipped: list[str] = field(default_factory=list)  # "path: reason" for files found but not used
    shard_stops: list[int] = field(default_factory=list)  # tar shards: where each shard's clips end
    inputs: list[Path] = field(default_factory=list)  # files and folders read: their size and mtime key the cache


@dataclass(kw_only=True)
class Source:
    """The options every kind takes."""

    kind: str = ""
    path: str = ""
    weight: NonNegativeFloat = 0.0  # share of a training mixture (relative to the others'); 0: the set's size

    def read(self, root: str | Path = "") -> Listing:
        """The clips of the source (`ManifestError` when it cannot be read)."""
        raise NotImplementedError

    def resolve(self, path: str, root: str | Path) -> Path:
        """`path` (``~`` expanded) against `root` unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() or not str(root) else Path(root) / p

    def base(self, root: str | Path) -> Path:
        """The source's ``path``, resolved."""
        return self.resolve(self.path, root)

    def named(self) -> bool:
        """Whether the source names a data set (a section left at its default names none)."""
        return bool(self.path)

    def with_split(self, split: str) -> "Source":
        """The source of another split (the same source for a kind without splits)."""
        return self


@dataclass(kw_only=True)
class FolderSource(Source):
    """Every audio file under a folder (recursively), unlabelled; each folder's mtime keys the cache, so adding or
    removing a file lists it anew."""

    kind: Literal["folder"] = "folder"

    def read(self, root: str | Path = "") -> Listing:
        """Walk the folder once."""
        top = self.base(root)
        if not top.is_dir():
            hint = " (it is a file: set kind=json, csv or list to read a manifest)" if top.is_file() else ""
            raise ManifestError(f"audio folder not found: {top}{hint}")
        files, folders = audio_files(top)
        return Listing([str(f) for f in files], [()] * len(files), inputs=folders)


@dataclass(kw_only=True)
class ListSource(Source):
    """A text file of audio paths, one per line (relative to the file's folder), unlabelled."""

    kind: Literal["list"] = "list"

    def read(self, root: str | Path = "") -> Listing:
        """Read the lines."""
        path = self.base(root)
        try:
            lines = [line.strip() for line in path.read_text().splitlines()]
        except FileNotFoundError:
            raise ManifestError(f"file list not found: {path}") from None
        paths = [str(self.resolve(p, path.parent)) for p in lines if p]
        return Listing(paths, [()] * len(paths), inputs=[path])


@dataclass(kw_only=True)
class JsonSource(Source):
    """AST/SSAST data json: {"data": [{"wav": path, "labels": "mid1,mid2"}, ...]}; a relative ``wav`` path is
    relative to the json's folder, so a data set with its manifest can move."""

    kind: Literal["json"] = "json"
    labels: str = ""  # class_labels_indices.csv (index,mid,display_name); empty: unlabelled

    def read(self, root: str | Path = "") -> Listing:
        """Parse the json; labels through the label csv."""
        path = self.base(root)
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
        classes, index, label_inputs = self.label_csv(root)
        paths, labels, folder, parsed = [], [], str(path.parent), {"": ()}  # parsed: label strings repeat
        for i, item in enumerate(data):
            if not isinstance(item, dict) or not isinstance(item.get("wav"), str):
                raise ManifestError(f"{path}: entry {i}: expected an object with a 'wav' path string")
            mids = item.get("labels", "")
            if not isinstance(mids, str):
                raise ManifestError(
                    f"{path}: entry {i}: 'labels' must be a string of comma-separated mids, got {mids!r}"
                )
            if index and mids not in parsed:
                parsed[mids] = label_indices(mids, index, f"{path}: entry {i}")
            paths.append(os.path.normpath(os.path.join(folder, os.path.expanduser(item["wav"]))))
            labels.append(parsed[mids] if index else ())
        return Listing(paths, labels, classes, multi_label=True, inputs=[path, *label_inputs])

    def label_csv(self, root: str | Path) -> tuple[list[str], dict[str, int], list[Path]]:
        """(class names, mid -> index, the csv read) of ``labels``; nothing when it is empty."""
        if not self.labels:
            return [], {}, []
        path = self.resolve(self.labels, root)
        return *read_label_csv(path), [path]


@dataclass(kw_only=True)
class CsvSource(JsonSource):
    """A csv with a header: a ``path`` column (relative to the csv's folder) and optionally a ``labels`` column of
    comma-separated class names; with ``labels`` set they are mids of that label csv, else the classes are the
    names found, sorted."""

    kind: Literal["csv"] = "csv"

    def read(self, root: str | Path = "") -> Listing:
        """Parse the rows."""
        path = self.base(root)
        try:
            rows = _csv_rows(path)
        except FileNotFoundError:
            raise ManifestError(f"manifest not found: {path}") from None
        if not rows or "path" not in rows[0]:
            raise ManifestError(f"{path}: line 1: expected a header with a 'path' column (and optionally 'labels')")
        classes, index, label_inputs = self.label_csv(root)
        if not index:
            classes = sorted({n.strip() for r in rows for n in (r.get("labels") or "").split(",") if n.strip()})
            index = {c: i for i, c in enumerate(classes)}
        paths, labels = [], []
        for line, row in enumerate(rows, start=2):
            if not row["path"]:
                raise ManifestError(f"{path}: line {line}: empty path")
            paths.append(os.path.normpath(self.resolve(row["path"], path.parent)))
            labels.append(label_indices(row.get("labels") or "", index, f"{path}: line {line}"))
        multi = any(len(ls) > 1 for ls in labels)
        return Listing(paths, labels, classes, multi_label=multi, inputs=[path, *label_inputs])


@dataclass(kw_only=True)
class AudioSetSource(JsonSource):
    """An AudioSet segment csv (``path``) mapped onto the clips under ``audio_dir``, found under every common
    downloader's naming (`match_audioset`); segments without a clip are listed as missing, files that match no
    segment or several are skipped with the reason."""

    kind: Literal["audioset"] = "audioset"
    audio_dir: str = ""  # the folder holding the clips

    def read(self, root: str | Path = "") -> Listing:
        """Parse the csv and match the files."""
        path, audio_dir = self.base(root), self.resolve(self.audio_dir, root)
        if not audio_dir.is_dir():
            raise ManifestError(f"AudioSet audio_dir is not a folder: {audio_dir}")
        classes, index, label_inputs = self.label_csv(root)
        if not index:
            raise ManifestError("AudioSet sources need their label csv: set labels=class_labels_indices.csv")
        segments = read_segments(path)
        files, folders = audio_files(audio_dir)
        found, skipped = match_audioset(files, segments)
        paths, labels, missing = [], [], []
        for segment in segments:
            if segment.key in found:
                paths.append(str(found[segment.key]))
                labels.append(label_indices(segment.labels, index, f"{path}: line {segment.line}"))
            else:
                missing.append(segment.ytid)
        return Listing(paths, labels, classes, True, missing, skipped, inputs=[path, *label_inputs, *folders])


@dataclass(kw_only=True)
class SplitSource(Source):
    """A corpus whose layout holds its splits: ``path`` its root, ``split`` the part to read."""

    split: str = ""

    def named(self) -> bool:
        """A path or a split."""
        return bool(self.path or self.split)

    def with_split(self, split: str) -> "Source":
        """The source of `split`."""
        return dataclasses.replace(self, split=split)


@dataclass(kw_only=True)
class Esc50Source(SplitSource):
    """ESC-50 (``audio/``, ``meta/esc50.csv``); ``split`` lists the folds to keep, e.g. "1,2,3,4" (all when
    empty); the classes are the csv's targets, however many."""

    kind: Literal["esc50"] = "esc50"

    def read(self, root: str | Path = "") -> Listing:
        """The rows of the folds."""
        base = self.base(root)
        rows = esc50_rows(base)
        try:
            folds = {int(f) for f in self.split.split(",") if f.strip()} or {r["fold"] for r in rows}
        except ValueError:
            raise ManifestError(f"ESC-50 split must list folds like 1,2,3, got {self.split!r}") from None
        names = {r["target"]: r["category"] for r in rows}
        kept = [r for r in rows if r["fold"] in folds]
        classes = [names.get(i, str(i)) for i in range(max(names, default=-1) + 1)]
        paths = [str(base / "audio" / r["filename"]) for r in kept]
        inputs = [base / "meta" / "esc50.csv", base / "audio"]
        return Listing(paths, [(r["target"],) for r in kept], classes, inputs=inputs)

    def folds(self, root: str | Path = "") -> list[int]:
        """Every fold of the data set."""
        return sorted({r["fold"] for r in esc50_rows(self.base(root))})


@dataclass(kw_only=True)
class SpeechCommandsSource(SplitSource):
    """Speech Commands V2: one folder per word; ``split`` training (every clip not listed; the default),
    validation or testing (``validation_list.txt`` / ``testing_list.txt``); ``_background_noise_`` is not an
    example."""

    kind: Literal["speechcommands"] = "speechcommands"

    def read(self, root: str | Path = "") -> Listing:
        """The clips of the split."""
        base = self.base(root)
        if not base.is_dir():
            raise ManifestError(f"Speech Commands root is not a folder: {base}")
        split = self.split or "training"
        if split not in ("training", "validation", "testing"):
            raise ManifestError(f"Speech Commands split must be training, validation or testing, got {split!r}")
        lists = [base / f"{s}_list.txt" for s in ("validation", "testing")]
        listed = {}
        for path in lists:
            if not path.is_file():
                raise ManifestError(f"Speech Commands list not found: {path}")
            listed[path.name.split("_")[0]] = set(path.read_text().split())
        words = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("_"))
        paths, labels = [], []
        for label, word in enumerate(words):
            for f in sorted((base / word).glob("*.wav")):
                name = f"{word}/{f.name}"
                if name in listed[split] if split != "training" else not any(name in s for s in listed.values()):
                    paths.append(str(f))
                    labels.append((label,))
        return Listing(paths, labels, words, inputs=[base, *(base / w for w in words), *lists])


@dataclass(kw_only=True)
class ShardSource(Source):
    """Tar shards written by ``python -m ssast.data.shards write`` (``path``: their folder); each audio member is
    read in place, as ``shard.tar:offset:size``."""

    kind: Literal["shards"] = "shards"

    def read(self, root: str | Path = "") -> Listing:
        """Parse the shard index."""
        base = self.base(root)
        inputs = [base / "index.json", base / "index.tsv"]
        try:
            index = json.loads(inputs[0].read_text())
            lines = inputs[1].read_text().splitlines()
        except FileNotFoundError as e:
            raise ManifestError(f"shard index not found: {e.filename}") from None
        paths, labels, stops = [], [], [0] * len(index["shards"])
        for n, line in enumerate(lines, start=1):
            try:
                shard, _, offset, size, names = line.split("\t")
                paths.append(f"{base / index['shards'][int(shard)]}:{int(offset)}:{int(size)}")
                labels.append(tuple(int(i) for i in names.split(",") if i))
                stops[int(shard)] = len(paths)  # rows come shard by shard
            except (ValueError, IndexError):
                raise ManifestError(f"{inputs[1]}: line {n}: expected shard, key, offset, size, labels") from None
        stops = list(itertools.accumulate(stops, max))  # an empty shard ends where the one before did
        return Listing(paths, labels, index["classes"], index["multi_label"], shard_stops=stops, inputs=inputs)


# The kinds a recipe may name (the first one is the kind of a mapping that names none): a new kind is a class above
# and its name here.
SourceConfig = Union[
    FolderSource, ListSource, JsonSource, CsvSource, AudioSetSource, Esc50Source, SpeechCommandsSource, ShardSource
]
KINDS: dict[str, type[Source]] = {c.kind: c for c in typing.get_args(SourceConfig)}


def source(kind: str, **options) -> Source:
    """The source of `kind` with `options` (a `ManifestError` names an unknown kind or option)."""
    if kind not in KINDS:
        raise ManifestError(f"unknown data source kind {kind!r}: one of {', '.join(KINDS)}")
    allowed = [f for f in KINDS[kind].__dataclass_fields__ if f != "kind"]
    if unknown := [o for o in options if o not in allowed]:
        raise ManifestError(f"a {kind} source takes {', '.join(allowed)}, not {', '.join(unknown)}")
    return KINDS[kind](**options)


def audio_files(top: Path, suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> tuple[list[Path], list[Path]]:
    """(audio files under `top`, sorted; every folder walked, `top` included)."""
    files, folders = [], []
    for folder, subfolders, names in os.walk(top):
        subfolders.sort()
        folders.append(Path(folder))
        files += [Path(folder) / n for n in sorted(names) if os.path.splitext(n)[1].lower() in suffixes]
    return sorted(files), folders


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_label_csv(path: Path) -> tuple[list[str], dict[str, int]]:
    """class_labels_indices.csv -> (display names, mid -> index)."""
    try:
        rows = _csv_rows(path)
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


def label_indices(mids: str, index: dict[str, int], where: str) -> tuple[int, ...]:
    """The sorted class indices of comma-separated mids."""
    try:
        return tuple(sorted({index[m.strip()] for m in mids.split(",") if m.strip()}))
    except KeyError as e:
        raise ManifestError(f"{where}: label {e.args[0]!r} is not in the label csv") from None


def esc50_rows(base: Path) -> list[dict]:
    """Rows of ESC-50's ``meta/esc50.csv`` with ``fold`` and ``target`` as ints."""
    meta = base / "meta" / "esc50.csv"
    try:
        rows = _csv_rows(meta)
        return [
            {"fold": int(r["fold"]), "target": int(r["target"]), "category": r["category"], "filename": r["filename"]}
            for r in rows
        ]
    except FileNotFoundError:
        raise ManifestError(f"ESC-50 metadata not found: {meta}") from None
    except (KeyError, ValueError, TypeError) as e:
        raise ManifestError(f"{meta}: bad column or value ({e})") from None


@dataclass(frozen=True)
class Segment:
    """One row of an AudioSet segment csv; times in milliseconds."""

    line: int
    ytid: str
    start: int
    end: int
    labels: str  # "mid1,mid2"

    @property
    def key(self) -> tuple[str, int]:
        """What names the segment: its video and start."""
        return self.ytid, self.start


def read_segments(path: Path) -> list[Segment]:
    """The segments of an AudioSet segment csv (``# comments``, rows ``YTID, start, end, "labels"``)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise ManifestError(f"AudioSet csv not found: {path}") from None
    segments = []
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = next(csv.reader([line], skipinitialspace=True))
        try:
            ytid, start, end, labels = row
            segments.append(Segment(n, ytid.strip(), _ms(start), _ms(end), labels))
        except ValueError:
            raise ManifestError(f'{path}: line {n}: expected YTID, start, end, "labels"; got {line!r}') from None
    return segments


def _ms(seconds: str) -> int:
    return round(float(seconds) * 1000)


# A file's stem: an optional "Y", the 11-character YTID, then nothing, "_<start>" (seconds, or milliseconds as
# some downloaders write it) or "_<start>_<end>" (milliseconds, audiosetdl's naming, or seconds).
_YTID_NAME = re.compile(r"(?P<ytid>[A-Za-z0-9_-]{11})(?:_(?P<a>\d+(?:\.\d+)?)(?:_(?P<b>\d+(?:\.\d+)?))?)?")


def match_audioset(files: list[Path], segments: list[Segment]) -> tuple[dict[tuple[str, int], Path], list[str]]:
    """({segment key: its clip}, ["path: reason" of the files left out]) under every naming in use: ``<ytid>``,
    ``Y<ytid>``, ``<ytid>_<start>`` (seconds, integer or decimal, or milliseconds) and ``<ytid>_<start>_<end>``
    (milliseconds or seconds). A name without times matches a YTID with one segment; the times pick among
    several. A file matching no segment or several is left out with its reason, as is a second file of a
    segment."""
    by_ytid = defaultdict(list)
    for s in segments:
        by_ytid[s.ytid].append(s)
    found, skipped = {}, []
    for f in files:
        named, ytid_known = _segments_named(f.stem, by_ytid)
        matches = {s.key: s for s in named}
        if len(matches) == 1:
            (key,) = matches
            if key in found:
                skipped.append(f"{f}: a second file of segment {key[0]} at {key[1] / 1000:g} s ({found[key].name})")
            else:
                found[key] = f
        elif matches:
            starts = ", ".join(f"{k[1] / 1000:g} s" for k in sorted(matches))
            skipped.append(f"{f}: matches several segments ({starts}); name it <ytid>_<start> to pick one")
        elif ytid_known:
            skipped.append(f"{f}: matches no segment (no segment of its YTID starts at the time in its name)")
        else:
            skipped.append(f"{f}: matches no segment (its name holds no YTID of the csv)")
    return found, skipped


def _segments_named(stem: str, by_ytid: dict[str, list[Segment]]) -> tuple[list[Segment], bool]:
    """The segments a file stem can name (every reading of the name is tried: a YTID may start with Y), and
    whether it names a YTID of the csv at all."""
    named, known = [], False
    for rest in (stem, stem[1:] if stem.startswith("Y") else None):
        m = _YTID_NAME.fullmatch(rest) if rest is not None else None
        if not m or m["ytid"] not in by_ytid:
            continue
        known = True
        a, b = m["a"], m["b"]
        for s in by_ytid[m["ytid"]]:
            if a is None:
                named.append(s)
            elif b is None and s.start in (_ms(a), round(float(a))):
                named.append(s)
            elif b is not None and (s.start, s.end) in ((_ms(a), _ms(b)), (round(float(a)), round(float(b)))):
                named.append(s)
    return named, known
