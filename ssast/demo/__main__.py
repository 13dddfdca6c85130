"""``python -m ssast.demo root=data/demo scale=full``: write the built-in data sets (see `ssast.demo.builtin`)."""

from ssast.demo.builtin import main

main()
