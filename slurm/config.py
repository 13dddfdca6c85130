"""The SLURM launcher's configuration (``slurm.*`` keys on the command line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ssast.config import NonNegative, NonNegativeFloat, Positive


@dataclass
class SlurmConfig:
    """The SLURM resources and options of a launch."""

    cluster: Literal["slurm", "local"] = "slurm"  # local: the same job as processes on this machine
    run_dir: str = ""  # run folder of a stage that has none of its own (probes); default runs/<stage>-<time>
    partition: str = ""
    nodes: Positive = 1
    gpus_per_node: NonNegative = 0
    tasks_per_node: NonNegative = 0  # 0: one task per GPU (one task without GPUs)
    cpus_per_task: Positive = 8
    mem_gb: NonNegativeFloat = 0.0  # per node; 0 leaves the partition's default
    time_min: Positive = 24 * 60
    account: str = ""
    qos: str = ""
    constraint: str = ""
    job_name: str = ""  # default: ssast-<stage>
    signal_delay_s: Positive = 120  # SLURM sends SIGUSR2 this long before the time limit: checkpoint, requeue
    max_requeues: NonNegative = 20  # time-limit requeues before the job is left to end
    additional_parameters: dict = field(default_factory=dict)  # any other sbatch option, e.g. {exclusive: true}

    def tasks(self) -> int:
        """Tasks of the job: one per GPU, or one per node on CPUs."""
        return self.tasks_per_node or max(1, self.gpus_per_node)


@dataclass
class LaunchConfig:
    """The launcher's own configuration: the ``slurm`` section of a stage's command line."""

    slurm: SlurmConfig = field(default_factory=SlurmConfig)
