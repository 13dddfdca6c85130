"""What the SLURM launcher does with a parsed command line: the sweep's grid, where each job writes, submitit's
executor and the sbatch script, and the submission."""

from __future__ import annotations

import itertools
import shutil
import sys
from pathlib import Path

import submitit
from submitit.slurm.slurm import _make_sbatch_string

from probes.config import ProbeConfig
from slurm.config import SlurmConfig
from slurm.job import StageJob
from ssast.config import ConfigError, cli_config
from ssast.train.finetuning import FinetuneRunConfig
from ssast.train.pretraining import PretrainConfig
from ssast.train.run_folder import RunError, default_run_dir

SCHEMAS = {"pretrain": PretrainConfig, "finetune": FinetuneRunConfig, "probes": ProbeConfig}


def sweep_elements(sweeps: list[str]) -> list[list[str]]:
    """``["a=1,2", "b=x,y"]`` -> the overrides of every element of the grid: [["a=1", "b=x"], ...]."""
    axes = []
    for sweep in sweeps:
        key, sep, values = sweep.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--sweep takes key=v1,v2,..., got {sweep!r}")
        axes.append([f"{key}={v}" for v in values.split(",")])
    return [list(element) for element in itertools.product(*axes)]


def placement(stage: str, run_dir: Path) -> list[str]:
    """The overrides that put a stage's outputs in `run_dir`: pretraining and fine-tuning write their run there
    and resume from it when requeued; a probe's results are the job's result (``result.json``)."""
    return [f"run_dir={run_dir}", "resume=auto"] if stage in ("pretrain", "finetune") else []


def base_dir(stage: str, cfg, launch: SlurmConfig) -> Path:
    """The run folder a launch writes into: the stage's run_dir, or runs/<stage>-<date>-<time>."""
    given = getattr(cfg, "run_dir", "") or launch.run_dir
    return Path(given) if given else default_run_dir(stage)


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
        # requeued by SLURM when a node fails, whatever the cluster's JobRequeue default
        additional_parameters={"requeue": True, **cfg.additional_parameters},
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
        raise RunError(
            "no SLURM on this machine (srun not found): use slurm.cluster=local, or --dry-run to see the script"
        )
    ex = submitit.SlurmExecutor(folder, max_num_timeout=cfg.max_requeues)
    ex.update_parameters(**slurm_parameters(cfg, stage))
    return ex


def sbatch_script(cfg: SlurmConfig, folder: Path, stage: str, array: int) -> str:
    """The script submitit hands to sbatch (for an array of `array` elements when > 0)."""
    command = f"{sys.executable} -u -m submitit.core._submit {folder.absolute()}"
    return _make_sbatch_string(command=command, folder=folder, map_count=array or None, **slurm_parameters(cfg, stage))


def submit(
    stage: str, stage_args: list[str], elements: list[list[str]], launch: SlurmConfig, dry_run: bool, wait: bool
):
    """Submit a stage (or, for the elements of a sweep, its job array); with `wait` or on the local cluster, the
    results of its main tasks, else the jobs. Every element's configuration is checked before anything is
    submitted."""
    sweeps = elements != [[]]
    prog = f"python -m slurm {stage}"
    base = base_dir(stage, cli_config(SCHEMAS[stage], stage_args, prog=prog), launch)
    jobs_args, run_dirs = [], []
    for element in elements:  # every element's configuration is checked before anything is submitted
        run_dir = base / ",".join(element) if sweeps else base
        argv_element = stage_args + element + placement(stage, run_dir)
        cli_config(SCHEMAS[stage], argv_element, prog=prog)
        jobs_args.append(argv_element)
        run_dirs.append(run_dir)
    folder = base / "slurm" / "%j"
    if dry_run:
        print(sbatch_script(launch, folder, stage, len(elements) if sweeps else 0))
        return []
    ex = executor(launch, folder, stage)
    sweep = [str(d) for d in run_dirs] if sweeps else None
    with ex.batch():
        jobs = [ex.submit(StageJob(stage, a, str(d), sweep)) for a, d in zip(jobs_args, run_dirs, strict=True)]
    for job, run_dir in zip(jobs, run_dirs, strict=True):
        print(f"submitted job {job.job_id}: {stage} in {run_dir}")
    if launch.cluster == "local" or wait:
        results = [job.results()[0] for job in jobs]  # the main task's
        for job, result in zip(jobs, results, strict=True):
            print(f"job {job.job_id} done: {result}")
        return results
    return jobs
