"""Submit a stage to SLURM through submitit.

    python -m slurm pretrain --config configs/pretrain/ssast_base_patch400.yaml [key=value ...] \\
        slurm.nodes=2 slurm.gpus_per_node=8 slurm.partition=gpu data.batch_size=3
    python -m slurm finetune --config configs/finetune/esc50.yaml data.root=ESC-50-master init=ssast.pth
    python -m slurm probes --config configs/probes/demo.yaml --sweep tol=0.01,0.001
    python -m slurm pretrain ... --dry-run        (print the sbatch script; submit nothing)

One task per GPU (``slurm.tasks_per_node`` on CPU), torch.distributed set up from SLURM's environment. Logs and
submitit's files go to ``<run folder>/slurm/``, and each start of the job is a line of ``jobs.jsonl``: a job
stopped by its time limit or a preemption checkpoints, requeues itself and resumes (pretraining's exact resume).
``--sweep key=v1,v2`` (repeatable: the grid of all values) submits a job array, each element in its own run
folder, and the last to finish writes ``summary.json``. ``slurm.cluster=local`` runs the same job as processes
on this machine and waits for it. ``--wait`` waits for SLURM jobs too and prints their results.
"""

from __future__ import annotations

import sys

from slurm.config import LaunchConfig
from slurm.job import STAGES
from slurm.launch import submit, sweep_elements
from ssast.cli import run_cli
from ssast.config import ConfigError, describe, fail, load_config

PROG = "python -m slurm"


def _option_values(args: list[str], name: str) -> tuple[list[str], list[str]]:
    """(the values of every ``name VALUE`` pair in `args`, the other arguments)."""
    values, rest, it = [], [], iter(args)
    for a in it:
        if a == name:
            values.append(next(it, ""))
        else:
            rest.append(a)
    return values, rest


def usage() -> str:
    """The launcher's help text."""
    return (
        f"usage: {PROG} {{{','.join(STAGES)}}} --config FILE [key=value ...] [slurm.key=value ...] "
        f"[--sweep key=v1,v2] [--dry-run] [--wait]\n\n{__doc__.strip()}\n\nslurm keys:\n"
        + "\n".join("  " + line for line in describe(LaunchConfig))
    )


def main(argv: list[str] | None = None) -> list:
    """Submit a stage (or a sweep of it as a job array) and, with --wait, return its results."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        raise SystemExit(0 if args else 2)
    stage, rest = args[0], args[1:]
    if stage not in STAGES:
        fail(PROG, f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    flags = {"--dry-run", "--wait"} & set(rest)
    sweeps, rest = _option_values([a for a in rest if a not in flags], "--sweep")
    stage_args = [a for a in rest if not a.startswith("slurm.")]
    try:
        launch = load_config(LaunchConfig, None, [a for a in rest if a.startswith("slurm.")]).slurm
        elements = sweep_elements(sweeps)
    except ConfigError as e:
        fail(PROG, str(e))
    return run_cli(PROG, lambda: submit(stage, stage_args, elements, launch, "--dry-run" in flags, "--wait" in flags))


if __name__ == "__main__":
    main()
