"""Moved to `ssast.demo.builtin` (``python -m ssast.demo``); this alias keeps earlier imports and commands working."""

from ssast.demo.builtin import SCALES, SETS, build, main

__all__ = ["SCALES", "SETS", "build", "main"]

if __name__ == "__main__":
    main()
