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

import itertools
import shutil
import sys
import time
from pathlib import Path

import submitit
from submitit.slurm.slurm import _make_sbatch_string

from finetune.config import FinetuneRunConfig
from pretrain.config import PretrainConfig
from probes.config import ProbeConfig
from slurm.config import LaunchConfig, SlurmConfig
from slurm.job import STAGES, StageJob
from ssast.config import ConfigError, cli_config, describe, load_config

PROG = "python -m slurm"
SCHEMAS = {"pretrain": PretrainConfig, "finetune": FinetuneRunConfig, "probes": ProbeConfig}


def _fail(message: str, code: int = 2):
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _option_values(args: list[str], name: str) -> tuple[list[str], list[str]]:
    """(the values of every ``name VALUE`` pair in `args`, the other arguments)."""
    values, rest, it = [], [], iter(args)
    for a in it:
        if a == name:
            values.append(next(it, ""))
        else:
            rest.append(a)
    return values, rest


def sweep_elements(sweeps: list[str]) -> list[list[str]]:
    """``["a=1,2", "b=x,y"]`` -> the overrides of every element of the grid: [["a=1", "b=x"], ...]."""
    axes = []
    for sweep in sweeps:
        key, sep, values = sweep.partition("=")
        if not sep or not key or not values:
            _fail(f"--sweep takes key=v1,v2,..., got {sweep!r}")
        axes.append([f"{key}={v}" for v in values.split(",")])
    return [list(element) for element in itertools.product(*axes)]


def placement(stage: str, run_dir: Path) -> list[str]:
    """The overrides that put a stage's outputs in `run_dir`: pretraining and fine-tuning write their run there
    and resume from it when requeued; a probe's results are the job's result (``result.json``)."""
    return [f"run_dir={run_dir}", "resume=auto"] if stage in ("pretrain", "finetune") else []


def base_dir(stage: str, cfg, launch: SlurmConfig) -> Path:
    """The run folder a launch writes into: the stage's run_dir, or runs/<stage>-<date>-<time>."""
    given = getattr(cfg, "run_dir", "") or launch.run_dir
    return Path(given or f"runs/{stage}-{time.strftime('%Y%m%d-%H%M%S')}")


def slurm_parameters(cfg: SlurmConfig, stage: str) -> dict:
    """submitit's SlurmExecutor parameters (sbatch options) of a launch."""
    params = dict(
        job_name=cfg.job_name or f"ssast-{stage}",
        nodes=cfg.nodes,
        ntasks_per_node=cfg.tasks(),
        cpus_per_task=cfg.cpus_per_task,
        time=cfg.time_min,
        signal_delay_s=cfg.signal_delay_s,
        gpus_per_node=cfg.gpus_per_node or None,
        partition=cfg.partition or None,
        account=cfg.account or None,
        qos=cfg.qos or None,
        constraint=cfg.constraint or None,
        mem=f"{cfg.mem_gb:g}GB" if cfg.mem_gb else None,
        additional_parameters=cfg.additional_parameters or None,
    )
    return {k: v for k, v in params.items() if v is not None}


def executor(cfg: SlurmConfig, folder: Path, stage: str) -> submitit.Executor:
    """A submitit executor for the cluster (or the local one) with the launch's sbatch options."""
    if cfg.cluster == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=cfg.max_requeues)
        ex.update_parameters(
            tasks_per_node=cfg.tasks(),
            gpus_per_node=cfg.gpus_per_node,
            timeout_min=cfg.time_min,
            signal_delay_s=cfg.signal_delay_s,
        )
        return ex
    if not shutil.which("srun"):
        _fail("no SLURM on this machine (srun not found): use slurm.cluster=local, or --dry-run to see the script")
    ex = submitit.SlurmExecutor(folder, max_num_timeout=cfg.max_requeues)
    ex.update_parameters(**slurm_parameters(cfg, stage))
    return ex


def sbatch_script(cfg: SlurmConfig, folder: Path, stage: str, array: int) -> str:
    """The script submitit hands to sbatch (for an array of `array` elements when > 0)."""
    command = f"{sys.executable} -u -m submitit.core._submit {folder.absolute()}"
    return _make_sbatch_string(command=command, folder=folder, map_count=array or None, **slurm_parameters(cfg, stage))


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
        _fail(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    flags = {"--dry-run", "--wait"} & set(rest)
    sweeps, rest = _option_values([a for a in rest if a not in flags], "--sweep")
    try:
        launch = load_config(LaunchConfig, None, [a for a in rest if a.startswith("slurm.")]).slurm
    except ConfigError as e:
        _fail(str(e))
    stage_args = [a for a in rest if not a.startswith("slurm.")]
    elements = sweep_elements(sweeps)
    prog = f"{PROG} {stage}"
    base = base_dir(stage, cli_config(SCHEMAS[stage], stage_args, prog=prog), launch)
    jobs_args, run_dirs = [], []
    for element in elements:  # every element's configuration is checked before anything is submitted
        run_dir = base / ",".join(element) if sweeps else base
        argv_element = stage_args + element + placement(stage, run_dir)
        cli_config(SCHEMAS[stage], argv_element, prog=prog)
        jobs_args.append(argv_element)
        run_dirs.append(run_dir)
    folder = base / "slurm" / "%j"
    if "--dry-run" in flags:
        print(sbatch_script(launch, folder, stage, len(elements) if sweeps else 0))
        return []
    ex = executor(launch, folder, stage)
    sweep = [str(d) for d in run_dirs] if sweeps else None
    with ex.batch():
        jobs = [ex.submit(StageJob(stage, a, str(d), sweep)) for a, d in zip(jobs_args, run_dirs, strict=True)]
    for job, run_dir in zip(jobs, run_dirs, strict=True):
        print(f"submitted job {job.job_id}: {stage} in {run_dir}")
    if launch.cluster == "local" or "--wait" in flags:
        results = [job.results()[0] for job in jobs]  # the main task's
        for job, result in zip(jobs, results, strict=True):
            print(f"job {job.job_id} done: {result}")
        return results
    return jobs


if __name__ == "__main__":
    main()
