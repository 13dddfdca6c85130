"""What each SLURM task runs: one stage in one run folder, resumable across requeues.

The task exports torch.distributed's variables from SLURM's (rank, local rank, world size, master address and
port from the node list) and runs the stage's entry point in-process. The training engine checkpoints on
SIGUSR2 (SLURM's time-limit warning, or a preemption) and SIGTERM, then hands the signal on to submitit, which
calls `StageJob.checkpoint` and requeues the job; the requeued job resumes from the run's last checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import submitit

from ssast.files import atomic_write_text


def _pretrain(argv: list[str]) -> Any:
    from pretrain.__main__ import main

    return main(argv)


def _finetune(argv: list[str]) -> Any:
    from finetune.__main__ import main

    return main(argv)


def _probes(argv: list[str]) -> Any:
    from probes.__main__ import main

    return main(["linear", *argv])


STAGES: dict[str, Callable[[list[str]], Any]] = {"pretrain": _pretrain, "finetune": _finetune, "probes": _probes}


class StageJob:
    """`stage` run with `argv` in `run_dir`; `sweep` lists the run folders of the job array it belongs to."""

    def __init__(self, stage: str, argv: list[str], run_dir: str, sweep: list[str] | None = None):
        self.stage, self.argv, self.run_dir, self.sweep = stage, argv, Path(run_dir), sweep or []

    def __call__(self) -> Any:
        """Run the stage in this task (resuming the run folder after a requeue) and return its result."""
        env = submitit.JobEnvironment()
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        main = env.global_rank == 0
        if main:  # one line per start of this job: the requeues are the lines after the first
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "jobs.jsonl", "a") as f:
                f.write(
                    json.dumps(
                        {
                            "job_id": env.job_id,
                            "tasks": env.num_tasks,
                            "nodes": env.hostnames,
                            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                        }
                    )
                    + "\n"
                )
        result = STAGES[self.stage](self.argv)
        if main:
            atomic_write_text(self.run_dir / "result.json", json.dumps(result, indent=1))
            self._summarise()
        return result

    def _summarise(self) -> None:
        """The last element of a sweep to finish writes the results of all of them beside them."""
        results = [Path(d) / "result.json" for d in self.sweep]
        if results and all(p.exists() for p in results):
            summary = {Path(d).name: json.loads(p.read_text()) for d, p in zip(self.sweep, results, strict=True)}
            atomic_write_text(self.run_dir.parent / "summary.json", json.dumps(summary, indent=1))

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on SIGUSR2 after the engine has checkpointed: requeue the same job; the stage
        resumes from the run folder's last checkpoint."""
        return submitit.helpers.DelayedSubmission(self)
