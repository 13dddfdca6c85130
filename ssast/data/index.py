"""The index of a data set: its clips' paths and labels compiled into flat arrays that every process on a node
memory-maps, and the held-out split.

Parsing a 2M-clip text manifest costs tens of seconds and hundreds of MB in every process, and a list of Python
objects per clip costs as much again. The compiled form is four arrays (the paths' UTF-8 bytes end to end and
their offsets; the label indices end to end and their offsets, i.e. CSR) and a small json. It is built once per
node and source: the first reader takes a lock, lists the source (`ssast.data.sources`), writes a temporary folder
and renames it into place; the others wait on the lock and map the result, so the pages are shared through the
page cache. A source's folder in the cache is keyed by its options; within it, each compiled version is keyed by
the size and mtime of the files and folders its listing read (recorded in ``inputs.json``), so an edited source,
or a folder where a file was added, is listed anew, and nothing is walked to find out. The arrays' sizes and CRC-32s
are recorded at build time and checked at every read: a version damaged outside this code is compiled anew.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ssast.data.sources import ManifestError, Source
from ssast.files import FolderLock, WriteError, no_space

log = logging.getLogger(__name__)

FORMAT = 3  # bump when the files below change
ARRAYS = ("paths", "path_offsets", "labels", "label_offsets")


class Example(NamedTuple):
    """One clip: its path and the indices of its labels."""

    path: str
    labels: tuple[int, ...] = ()  # class indices (several for multi-label data)


class Examples(Sequence):
    """A read-only sequence of `Example` over the compiled arrays (in memory or memory-mapped), or a selection of
    their `rows` (None: all, in order): indexing decodes one path, nothing is held per clip."""

    def __init__(
        self,
        paths: np.ndarray,
        path_offsets: np.ndarray,
        labels: np.ndarray,
        label_offsets: np.ndarray,
        rows: np.ndarray | None = None,
    ):
        self.paths, self.path_offsets, self.labels, self.label_offsets = paths, path_offsets, labels, label_offsets
        self.rows = rows

    @classmethod
    def pack(cls, examples: Sequence[Example]) -> "Examples":
        """The arrays of a list of examples."""
        if isinstance(examples, Examples):
            return examples
        return cls.from_lists([e.path for e in examples], [e.labels for e in examples])

    @classmethod
    def from_lists(cls, paths: list[str], labels: list[tuple[int, ...]]) -> "Examples":
        """The arrays of clips given as a list of paths and one of label tuples (a reader of millions of clips
        builds these rather than an `Example` each: a named tuple costs microseconds to make)."""
        encoded = [p.encode() for p in paths]
        label_counts = np.fromiter(map(len, labels), np.int64, len(labels))
        return cls(
            np.frombuffer(b"".join(encoded), np.uint8),
            _offsets(np.fromiter(map(len, encoded), np.int64, len(encoded))),
            np.fromiter((i for clip in labels for i in clip), np.int32, int(label_counts.sum())),
            _offsets(label_counts),
        )

    def __len__(self) -> int:
        return len(self.path_offsets) - 1 if self.rows is None else len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        r = range(len(self))[i] if self.rows is None else self.rows[i]  # negative i; IndexError past the end
        path = bytes(self.paths[self.path_offsets[r] : self.path_offsets[r + 1]]).decode()
        return Example(path, tuple(self.labels[self.label_offsets[r] : self.label_offsets[r + 1]].tolist()))

    def row_ids(self) -> np.ndarray:
        """The compiled row of each example."""
        return np.arange(len(self)) if self.rows is None else self.rows

    def take(self, positions: np.ndarray) -> "Examples":
        """The examples at `positions`, sharing the arrays."""
        return Examples(self.paths, self.path_offsets, self.labels, self.label_offsets, self.row_ids()[positions])

    def label_sums(self, values: np.ndarray) -> np.ndarray:
        """For each example, the sum of `values` over its labels (vectorised: one pass over the label array)."""
        starts = self.label_offsets[:-1]
        per_row = np.add.reduceat(values[self.labels], np.minimum(starts, max(len(self.labels) - 1, 0)))
        per_row[starts == self.label_offsets[1:]] = 0.0  # reduceat gives an empty row its next row's first value
        return per_row if self.rows is None else per_row[self.rows]

    def label_counts(self, classes: int) -> np.ndarray:
        """How many of these examples carry each class."""
        if self.rows is None:
            return np.bincount(self.labels, minlength=classes)
        per_row = np.diff(self.label_offsets)
        selected = np.bincount(self.rows, minlength=len(per_row))  # each row's multiplicity in the selection
        return np.bincount(self.labels, weights=np.repeat(selected, per_row), minlength=classes)

    def save(self, folder: Path) -> None:
        """Write the arrays (all their rows) to `folder`."""
        for name in ARRAYS:
            np.save(folder / f"{name}.npy", np.asarray(getattr(self, name)))

    @classmethod
    def load(cls, folder: Path) -> "Examples":
        """The arrays of `folder`: offsets and labels memory-mapped read-only, the paths read on demand."""
        offsets, labels, label_offsets = (np.load(folder / f"{n}.npy", mmap_mode="r") for n in ARRAYS[1:])
        return cls(PathBytes(folder / "paths.npy"), offsets, labels, label_offsets)


class PathBytes:
    """The paths' bytes of a compiled manifest, read with ``pread`` rather than memory-mapped: a lookup is a few
    bytes at a random place of a large file, and a mapping would map whole page-cache folios (megabytes on recent
    kernels) into the process for each."""

    fd = -1  # until the header has been read

    def __init__(self, file: Path):
        with open(file, "rb") as f:
            fmt = np.lib.format
            read_header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
            (self.size,), _, _ = read_header(f)
            self.start = f.tell()
        self.fd = os.open(file, os.O_RDONLY)

    def __del__(self):
        if self.fd >= 0:
            os.close(self.fd)

    def __getitem__(self, part: slice) -> bytes:
        return os.pread(self.fd, int(part.stop - part.start), self.start + int(part.start))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.frombuffer(self[0 : self.size], np.uint8)

    def __len__(self) -> int:
        return self.size


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def cache_root() -> Path:
    """Where compiled manifests live: $SSAST_CACHE/manifests, else $XDG_CACHE_HOME/ssast, else ~/.cache/ssast."""
    base = os.environ.get("SSAST_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ssast"
    return Path(base) / "manifests"


@dataclass
class Dataset:
    """The clips of a data set (packed into arrays), its class names, and whether a clip may carry several
    labels."""

    examples: Sequence[Example]
    classes: list[str] = field(default_factory=list)  # empty for unlabelled data
    multi_label: bool = False
    missing: list[str] = field(default_factory=list)  # listed clips not found on disk (AudioSet csvs)
    shard_stops: list[int] = field(default_factory=list)  # tar shards: where each shard's rows end

    def __post_init__(self):
        self.examples = Examples.pack(self.examples)

    def __len__(self) -> int:
        return len(self.examples)

    def take(self, positions: np.ndarray) -> "Dataset":
        """The examples at `positions` (sharing the arrays), with the same classes and shards."""
        return dataclasses.replace(self, examples=self.examples.take(positions), missing=[])


def read_dataset(source: Source, root: str | Path = "") -> Dataset:
    """The data set of `source` (paths resolved against `root`), compiled once per node and version of its inputs
    and memory-mapped; a compiled version that fails its integrity check is compiled anew (one warning line);
    ManifestError names what is wrong with the source."""
    options = {**dataclasses.asdict(source), "root": str(root), "cwd": os.getcwd()}
    options.pop("weight")  # not in the arrays
    folder = cache_root() / _hash([FORMAT, options])
    version = _version(folder)
    if version is None or _damage(version):
        with FolderLock(folder, "a manifest compile", wait_s=math.inf):  # one compiles, the others wait for it
            version = _version(folder)
            if version is not None and (damage := _damage(version)):  # not healed by another process meanwhile
                log.warning("compiled manifest %s is damaged (%s): compiling it anew", version, damage)
                shutil.rmtree(version)
                version = None
            version = version or _compile(source, root, folder)
    meta = json.loads((version / "meta.json").read_text())
    meta.pop("files")
    return Dataset(Examples.load(version), **meta)


def _hash(blob) -> str:
    return hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _stamps(inputs: list[str]) -> str:
    """The key of the inputs' size and mtime (a folder's mtime changes when an entry is added or removed)."""
    stamps = []
    for p in inputs:
        try:
            st = os.stat(p)
            stamps.append([p, st.st_size, st.st_mtime_ns])
        except FileNotFoundError:
            stamps.append([p, None, None])
    return _hash(stamps)


def _version(folder: Path) -> Path | None:
    """The compiled version of the source in `folder` that matches its inputs as they are now, if there is one."""
    try:
        inputs = json.loads((folder / "inputs.json").read_text())
    except (OSError, ValueError):
        return None
    version = folder / _stamps(inputs)
    return version if (version / "meta.json").is_file() else None


def _compile(source: Source, root: str | Path, folder: Path) -> Path:
    """List `source`, write its arrays as the version of its inputs, and record the inputs (under the lock)."""
    start = time.perf_counter()
    listing = source.read(root)
    if not listing.paths:
        raise ManifestError(f"{source.kind} data set at {source.base(root)} has no examples")
    if listing.skipped:
        log.warning("%s: %d files left out, e.g. %s", source.base(root), len(listing.skipped), listing.skipped[0])
    inputs = [str(p) for p in listing.inputs]
    version = folder / _stamps(inputs)
    tmp = folder / f"{version.name}.tmp{os.getpid()}"
    for stale in (tmp, version):  # a build killed half-way, a folder whose meta.json was deleted
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        Examples.from_lists(listing.paths, listing.labels).save(tmp)
        meta = {k: getattr(listing, k) for k in ("classes", "multi_label", "missing", "shard_stops")}
        meta["files"] = {name: _checksum(tmp / f"{name}.npy") for name in ARRAYS}  # what the integrity check compares
        (tmp / "meta.json").write_text(json.dumps(meta))
    except OSError as e:
        written = sum(f.stat().st_size for f in tmp.iterdir())
        shutil.rmtree(tmp)
        if full := no_space(e, version, written):
            raise WriteError(f"{full} (the compiled manifests' cache: point SSAST_CACHE elsewhere)") from None
        raise
    os.replace(tmp, version)
    (folder / "inputs.tmp").write_text(json.dumps(inputs))
    os.replace(folder / "inputs.tmp", folder / "inputs.json")
    log.info("compiled %d clips in %.1f s: %s", len(listing.paths), time.perf_counter() - start, version)
    return version


def _checksum(path: Path) -> list[int]:
    """[size, CRC-32] of a file, read in chunks (not mapped: a check adds nothing to a process's memory)."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
    return [size, crc]


def _damage(version: Path) -> str:
    """What is wrong with a compiled version's files (empty when they are as built): a cache damaged outside this
    code (its writes are atomic), say a file cut short."""
    try:
        files = json.loads((version / "meta.json").read_text())["files"]
        for name, expected in files.items():
            if (version / f"{name}.npy").stat().st_size != expected[0]:
                return f"{name}.npy is not {expected[0]} bytes"
            if _checksum(version / f"{name}.npy") != expected:
                return f"{name}.npy fails its checksum"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{type(e).__name__}: {e}"
    return ""


def holdout_positions(n: int, count: int) -> np.ndarray:
    """Exactly ``count`` of ``n`` positions, evenly spaced (deterministic)."""
    if not 0 <= count < n:
        raise ManifestError(
            f"cannot hold out {count} of the {n} examples for validation: set data.valid_holdout below {n}"
        )
    return np.arange(count) * n // count  # distinct, as n / count > 1


def split_holdout(dataset: Dataset, count: int) -> tuple[Dataset, Dataset]:
    """(rest, held out): `holdout_positions` of the examples held out."""
    n = len(dataset.examples)
    held = holdout_positions(n, count)
    return dataset.take(np.setdiff1d(np.arange(n), held)), dataclasses.replace(dataset.take(held), shard_stops=[])
