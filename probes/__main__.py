"""Frozen-encoder evaluation: fair linear probes, kNN, embedding stores and retrieval.

    python -m probes linear --config configs/probes/<recipe>.yaml [checkpoints=[a.pt,b.pt]] [key=value ...]
    python -m probes extract --config configs/probes/<recipe>.yaml checkpoint=<ckpt|HF dir|fbank> [...]
    python -m probes retrieval build|query|eval|report --config configs/probes/<recipe>.yaml [key=value ...]

Each command's --help says what it does.
"""

from __future__ import annotations

import sys

from probes.commands import RETRIEVAL, extract_store, linear
from probes.config import ExtractConfig, ProbeConfig, RetrievalConfig
from ssast.cli import run_cli
from ssast.config import cli_config, fail, usage

PROG = "python -m probes"

LINEAR = """Fair linear probes (and kNN, retrieval mAP) of encoders on the tasks of a probe recipe.

Each checkpoint in `checkpoints`, the same architecture at random initialisation (`random_init_seeds`) and the
fbank statistics are probed on every task: the feature (layer x pooling) and C are chosen on held-out training
data only, then scored once on the test part. Prints mean +- sample std [95% confidence interval] over seeds or
checkpoints, the choices and the per-feature sweep; `output` keeps every number as JSON. Example:
    python -m probes linear --config configs/probes/demo.yaml checkpoints=[runs/demo/seed0/checkpoints/last.pt]
"""
EXTRACT = """Embed one data set into an embedding store (or find the store complete and reuse it).

`checkpoint` names a checkpoint or a Hugging Face AST directory, or is `fbank` for the fbank statistics. The
store folder under `store_dir` is named by a hash of the weights, the front end, the features and the clip list.
Runs sharded over the processes of a torchrun or SLURM launch. Example:
    python -m probes extract --config configs/probes/extract_demo.yaml checkpoint=runs/demo/seed0/checkpoints/last.pt
"""
RETRIEVAL_DOC = """Query-by-example retrieval over an embedding store with FAISS.

build: embed `dataset` (as `extract` does) and write an index (flat, IVF, IVF-PQ or HNSW) of its first feature
into `index_dir` (refused when one is there, unless overwrite=true). query: the k nearest indexed clips of each
audio file in `files`, with their labels and scores. eval: precision@k, recall@k and mAP@k of every indexed clip
as a query (itself excluded). report: those metrics, overall and per class, and a few queries per class with
their k nearest neighbours (labels, scores, players, spectrograms) as a static page in `out`. Example:
    python -m probes retrieval build --config configs/probes/extract_demo.yaml checkpoint=<ckpt> index_dir=runs/index
    python -m probes retrieval report --config configs/probes/extract_demo.yaml index_dir=runs/index out=runs/report
"""
COMMANDS = {"linear": (ProbeConfig, LINEAR), "extract": (ExtractConfig, EXTRACT)}


def main(argv: list[str] | None = None):
    """Dispatch to a command; a missing or unknown command prints the usage (exit 0 for --help, else 2)."""
    args = sys.argv[1:] if argv is None else argv
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "retrieval":
        return _retrieval(rest)
    if command not in COMMANDS:
        wants_help = args[:1] in (["-h"], ["--help"])
        print(
            usage(f"{PROG} linear|extract|retrieval", __doc__, "probes"), file=sys.stdout if wants_help else sys.stderr
        )
        raise SystemExit(0 if wants_help else 2)
    schema, doc = COMMANDS[command]
    cfg = cli_config(schema, rest, prog=f"{PROG} {command}", doc=doc, recipes="probes")
    return run_cli(PROG, lambda: linear(cfg) if command == "linear" else extract_store(cfg))


def _retrieval(args: list[str]):
    action = args[0] if args else ""
    if action in ("-h", "--help"):
        print(usage(f"{PROG} retrieval build|query|eval|report", RETRIEVAL_DOC, "probes"))
        raise SystemExit(0)
    if action not in RETRIEVAL:
        fail(PROG, f"retrieval takes build, query, eval or report, got {action!r}")
    cfg = cli_config(RetrievalConfig, args[1:], prog=f"{PROG} retrieval {action}", doc=RETRIEVAL_DOC, recipes="probes")
    return run_cli(PROG, lambda: RETRIEVAL[action](cfg))


if __name__ == "__main__":
    main()
