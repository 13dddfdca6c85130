"""A real single-node SLURM cluster for the launcher's tests: Debian's slurmctld, slurmd and munge, installed
(as root, with apt) when missing and started with a configuration of their own in a temporary folder.

Without accounting there is no ``sacct``, which submitit polls for job states: a stand-in answers from
``squeue`` (a job that has left the queue is COMPLETED; submitit then reads its result file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from support.system_packages import apt_install

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]

SACCT = """#!/bin/bash
# sacct stand-in for a cluster without accounting: states from squeue; a job that left the queue is COMPLETED.
ids=()
while [ $# -gt 0 ]; do case $1 in -j) ids+=("$2"); shift 2;; *) shift;; esac; done
echo "JobID|State|NodeList"
for id in "${ids[@]}"; do
  out=$(squeue -h -j "$id" -o "%i|%T|%N" 2>/dev/null)
  if [ -n "$out" ]; then echo "$out"; else echo "$id|COMPLETED|"; echo "${id}_[0-4095]|COMPLETED|"; fi
done
"""


def _run(*cmd: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def install() -> str:
    """'' when the packages are there (installing them if needed), else why not."""
    return apt_install(PACKAGES, ["slurmctld", "slurmd", "sbatch", "munged"])


def slurm_conf(folder: Path) -> str:
    mem_mb = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.9)
    first_job = 1000 + int(time.time()) % 60_000_000  # job ids of one start never meet those of another
    return f"""ClusterName=ssasttest
SlurmctldHost=localhost
FirstJobId={first_job}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
KillWait=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
NodeName=localhost CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """Starts munged, slurmctld and slurmd; `env` is the environment that reaches them (SLURM_CONF, the sacct
    stand-in on PATH). `stop` ends the daemons it started."""

    def __init__(self, folder: Path):
        self.folder = folder
        for sub in ("state", "spool", "bin"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "slurm.conf").write_text(slurm_conf(folder))
        sacct = folder / "bin" / "sacct"
        sacct.write_text(SACCT)
        sacct.chmod(0o755)
        self.env = {
            **os.environ,
            "SLURM_CONF": str(folder / "slurm.conf"),
            "PATH": f"{folder / 'bin'}:{os.environ['PATH']}",
        }
        self.daemons: list[subprocess.Popen] = []

    def start(self, timeout: float = 60) -> str:
        """'' once a job step runs, else what went wrong."""
        if _run("pgrep", "-x", "munged").returncode != 0:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            out = _run("runuser", "-u", "munge", "--", "munged")
            if out.returncode != 0:
                return f"munged did not start: {out.stderr.strip()}"
        for cmd in (["slurmctld", "-D"], ["slurmd", "-D", "-N", "localhost"]):
            log = open(self.folder / f"{cmd[0]}.out", "w")
            self.daemons.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))
            time.sleep(1)
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = _run("srun", "-n1", "-t", "1", "true", env=self.env, timeout=30)
            if out.returncode == 0:
                return ""
            time.sleep(1)
        return f"no job ran within {timeout:.0f} s: {out.stderr.strip()[-300:]}"

    def stop(self, timeout: float = 60) -> None:
        """Cancel every job, wait for their steps to end, then stop the daemons."""
        _run("scancel", "--user", "root", env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline and _run("squeue", "-h", env=self.env).stdout.strip():
            time.sleep(1)
        for daemon in self.daemons:
            daemon.terminate()
            daemon.wait(timeout=30)
