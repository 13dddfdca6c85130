"""The command line's side of every entry point: errors a user can cause end with one line on stderr, not a
traceback; logging on the main process; progress counts."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Callable, Iterator, TypeVar

from tqdm import tqdm

from ssast.config import UserError

T = TypeVar("T")
log = logging.getLogger("ssast")


class Stopped(Exception):
    """A stage stopped on request (a signal) after saving its state: not an error, not the end of the run either.
    Its command line exits with 128 + the signal's number, as a shell reports a process a signal ended, so that a
    script or a SLURM dependency can tell it from a finished run (exit 0)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.code = 128 + signum


def run_cli(prog: str, fn: Callable[[], T]) -> T:
    """Run an entry point's work; an error a user can cause ends with one line and its exit code (1; 74 for a file
    that could not be written), a run stopped by a signal with one line and 128 + the signal's number."""
    try:
        return fn()
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except Stopped as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(e.code) from None


def setup_logging(main: bool) -> None:
    """INFO on the main process, warnings only elsewhere."""
    logging.basicConfig(
        level=logging.INFO if main else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


@contextlib.contextmanager
def progress(total: int, desc: str, show: bool = True) -> Iterator[Callable[[int], None]]:
    """Counts clips done: a progress bar on a terminal; in a log file, one line at the end with the rate."""
    if sys.stderr.isatty():
        with tqdm(total=total, desc=desc, unit="clip", mininterval=1, disable=not show) as bar:
            yield bar.update
        return
    done, start = [0], time.perf_counter()
    yield lambda n: done.__setitem__(0, done[0] + n)
    seconds = time.perf_counter() - start
    if show:
        log.info("%s: %d clips in %.1f s (%.1f clips/s)", desc, done[0], seconds, done[0] / max(seconds, 1e-9))
