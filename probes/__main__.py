"""Frozen-encoder evaluation: embedding stores, fair linear probes, kNN, and retrieval.

    python -m probes linear --config configs/probes/<recipe>.yaml [checkpoints=[a.pt,b.pt]] [key=value ...]
    python -m probes extract --config configs/probes/<recipe>.yaml checkpoint=<ckpt> dataset.path=... [...]
    python -m probes retrieval build|query|eval --config configs/probes/<recipe>.yaml [key=value ...]

linear: each checkpoint, the same encoder at random initialisation and the fbank-statistics baseline on every
task of the recipe; the feature (layer x pooling) and C are chosen on held-out training data; prints mean +- sample
std [95% confidence interval] over seeds / checkpoints, the choices, and the per-feature sweep. extract: writes
(or finds) the embedding store of one data set. retrieval: builds a FAISS index over a store, queries it with
audio files, or evaluates query-by-example precision / recall / mAP at k. Example:
    python -m probes linear --config configs/probes/demo.yaml checkpoints=[runs/demo/seed0/checkpoints/last.pt]
"""

from __future__ import annotations

import sys

from probes.config import ExtractConfig, ProbeConfig, RetrievalConfig
from probes.linear import linear
from probes.stores import extract_store, retrieval
from ssast.cli import run_cli
from ssast.config import cli_config, usage

PROG = "python -m probes"


COMMANDS = {"linear": ProbeConfig, "extract": ExtractConfig, "retrieval": RetrievalConfig}


def main(argv: list[str] | None = None):
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else ""
    if command not in COMMANDS:
        wants_help = args[:1] in (["-h"], ["--help"])
        print(usage(f"{PROG} linear|extract|retrieval", __doc__, "probes"), file=sys.stdout if wants_help else sys.stderr)
        raise SystemExit(0 if wants_help else 2)
    rest = args[1:]
    if command == "retrieval":
        action = rest[0] if rest else ""
        if action not in ("build", "query", "eval"):
            print(f"{PROG}: error: retrieval takes build, query or eval, got {action!r}", file=sys.stderr)
            raise SystemExit(2)
        cfg = cli_config(RetrievalConfig, rest[1:], prog=f"{PROG} retrieval {action}", doc=__doc__, recipes="probes")
        return run_cli(PROG, lambda: retrieval(action, cfg))
    cfg = cli_config(COMMANDS[command], rest, prog=f"{PROG} {command}", doc=__doc__, recipes="probes")
    return run_cli(PROG, lambda: linear(cfg) if command == "linear" else extract_store(cfg))


if __name__ == "__main__":
    main()
