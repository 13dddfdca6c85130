"""Entry-point helper: errors a user can cause end with one line on stderr, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

from ssast.config import ConfigError
from ssast.data.sampling import DataError
from ssast.data.sources import ManifestError
from ssast.models.checkpoint import CheckpointError
from ssast.runs import RunError

T = TypeVar("T")
USER_ERRORS = (ConfigError, ManifestError, CheckpointError, DataError, RunError)


def run_cli(prog: str, fn: Callable[[], T]) -> T:
    """Run an entry point's work; an error a user can cause ends with one line and exit code 1."""
    try:
        return fn()
    except USER_ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
