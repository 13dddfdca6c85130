"""Atomic file writes (a file appears whole or not at all, also when the writer is killed half-way) and folder
locks (one writer per output folder)."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import time
from pathlib import Path
from typing import IO, Callable, Optional

from ssast.config import UserError


class WriteError(UserError):
    """A file that could not be written for want of space (a full disk, a quota): one line saying which, how much
    of it was written and how much space is free, and exit code 74 (sysexits' EX_IOERR), apart from a configuration
    error's 2."""

    exit_code = 74


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def no_space(error: Exception, path: Path, written: int = 0) -> Optional[WriteError]:
    """The WriteError of a failed write that means the disk is full, or None for any other. numpy and torch.save
    report a short write without an errno: one on a disk with less than a megabyte left counts as full."""
    free = shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free
    code = getattr(error, "errno", None)
    if code not in FULL and not (code is None and free < 2**20):
        return None
    reason = os.strerror(code or errno.ENOSPC).lower()
    return WriteError(f"could not write {path}: {reason} ({written} bytes of it written, {free} bytes free there)")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through `write` to a temporary file in the same folder, fsync, then rename: a kill never leaves a
    torn file, and readers see the old or the new one whole. A full disk is a `WriteError`, with nothing left."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # RuntimeError: torch.save's writer on a short write
        full = no_space(e, path, tmp.stat().st_size if tmp.exists() else 0)
        if full is None:
            raise
        raise full from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of a text file."""
    atomic_write(path, lambda f: f.write(text.encode()))


class FolderInUse(UserError):
    """Another process holds the folder a stage was asked to write."""


class FolderLock:
    """One writer per folder: an advisory lock (flock) on ``<folder>/.lock``, held from `acquire` until `release`
    or the process ends. The kernel drops it when its holder dies, so a killed run never leaves a stale lock; the
    file names the holder (what, host, pid, since when) for the line that refuses a second writer, which ends
    with `hint` (what to do instead). A process may take a folder it holds again (fine-tuning's results and its
    run share a folder)."""

    held: dict[str, list[int]] = {}  # folders this process holds -> [descriptor of the flock, holders]

    def __init__(self, folder: str | Path, what: str, hint: str = "wait for it to end", wait_s: float = 0.0):
        self.folder, self.what, self.hint, self.wait_s = Path(folder), what, hint, wait_s

    def acquire(self) -> "FolderLock":
        """Take the lock, waiting up to `wait_s` seconds for another holder to finish; FolderInUse names it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = str(self.folder.resolve())
        if key in self.held:
            self.held[key][1] += 1
            return self
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
                    os.close(fd)
                    raise FolderInUse(f"{self.folder} is in use by {holder}: {self.hint}") from None
                time.sleep(0.2)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.what} (host {socket.gethostname()}, pid {os.getpid()}, since {since})".encode(), 0)
        self.held[key] = [fd, 1]
        return self

    def release(self) -> None:
        """Let the next writer in, once every holder of this process has released the folder."""
        entry = self.held.get(str(self.folder.resolve()))
        if entry is None:
            return
        entry[1] -= 1
        if not entry[1]:
            del self.held[str(self.folder.resolve())]
            os.close(entry[0])  # closing the descriptor drops the flock

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
