"""Atomic file writes: a file appears whole or not at all, also when the writer is killed half-way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Callable


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through `write` to a temporary file in the same folder, fsync, then rename: a kill never leaves a
    torn file, and readers see the old or the new one whole."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of a text file."""
    atomic_write(path, lambda f: f.write(text.encode()))
