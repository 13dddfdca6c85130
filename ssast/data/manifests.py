"""Compiled manifests: a data set's paths and labels as flat arrays that every process on a node memory-maps.

Parsing a 2M-clip text manifest costs tens of seconds and hundreds of MB in every process, and a list of Python
objects per clip costs as much again. The compiled form is four arrays (the paths' UTF-8 bytes end to end and
their offsets; the label indices end to end and their offsets, i.e. CSR) and a small json. It is built once per
node and source: the first reader takes a lock, parses the source, writes a temporary folder and renames it into
place; the others wait on the lock and map the result, so the pages are shared through the page cache. The
cache key covers the reader options and the size and mtime of every file and folder the reader looks at, so an
edited source compiles anew.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the files below change
ARRAYS = ("paths", "path_offsets", "labels", "label_offsets")


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file (and line)."""


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

    @classmethod
    def concat(cls, parts: Sequence["Examples"], labels: bool = True) -> "Examples":
        """All the rows of `parts`, one part after the other (without labels unless `labels`)."""
        path_lengths = np.concatenate([np.diff(p.path_offsets) for p in parts])
        label_lengths = np.concatenate([np.diff(p.label_offsets) * labels for p in parts])
        values = np.concatenate([p.labels for p in parts]) if labels else np.zeros(0, np.int32)
        paths = np.concatenate([np.asarray(p.paths) for p in parts])
        return cls(paths, _offsets(path_lengths), values.astype(np.int32), _offsets(label_lengths))

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


def source_key(options: dict, sources: list[Path]) -> str:
    """The cache key of a data set: its reader options and the size and mtime of each source file or folder
    (a folder's mtime changes when an entry is added or removed)."""
    stamps = []
    for p in sources:
        try:
            st = p.stat()
            stamps.append([str(p), st.st_size, st.st_mtime_ns])
        except FileNotFoundError:
            stamps.append([str(p), None, None])  # the reader reports it
    blob = json.dumps([FORMAT, options, stamps], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def compiled(key: str, build: Callable[[], tuple[Examples, dict]]) -> tuple[Examples, dict]:
    """The compiled data set of `key`: mapped from the cache, or built by `build` (examples, json-able meta)
    by the first process to ask, while the others wait for it."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / key
    if not (folder / "meta.json").is_file():
        with open(root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            if not (folder / "meta.json").is_file():
                start = time.perf_counter()
                examples, meta = build()
                tmp = root / f"{key}.tmp{os.getpid()}"
                for stale in (tmp, folder):  # a build killed half-way, a folder whose meta.json was deleted
                    shutil.rmtree(stale, ignore_errors=True)
                tmp.mkdir()
                examples.save(tmp)
                (tmp / "meta.json").write_text(json.dumps(meta))
                os.replace(tmp, folder)
                log.info("compiled %d clips in %.1f s: %s", len(examples), time.perf_counter() - start, folder)
    try:
        return Examples.load(folder), json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as e:  # a cache damaged outside this code: its writes are atomic
        raise ManifestError(
            f"compiled manifest {folder} cannot be read ({e}): delete that folder to compile it anew"
        ) from None
