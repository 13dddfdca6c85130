"""A real two-node SLURM cluster on one machine for the launcher's tests: Debian's slurmctld, slurmd and munge,
installed (as root, with apt) when missing and started with a configuration of their own in a temporary folder.

Each node is a slurmd in its own network namespace (``ip netns``) with its own hostname (``unshare --uts``) and IP
address on a bridge, so the tasks of a two-node job talk over a real network interface, as on a cluster: the
nodes resolve each other's names through a hosts file of the cluster's, bind-mounted on ``/etc/hosts`` in the
node's own mount namespace. slurmctld runs on the bridge's address; munge's socket is shared
through the file system. ``stop_node``/``start_node`` take a node down (its processes frozen or killed) and back.

Without accounting there is no ``sacct``, which submitit polls for job states: a stand-in answers from
``squeue`` (a job that has left the queue is COMPLETED; submitit then reads its result file).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `support` is a package of tests/
from support.system_packages import apt_install  # noqa: E402

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "iproute2"]
BRIDGE, SUBNET = "ssastbr0", "10.77.0"  # the controller is SUBNET.1, node i is SUBNET.(10 + i)
NODES = ["node1", "node2"]

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
    return apt_install(PACKAGES, ["slurmctld", "slurmd", "sbatch", "munged", "ip", "unshare"])


def address(node: str) -> str:
    return f"{SUBNET}.{10 + NODES.index(node) + 1}"


def namespace(node: str) -> str:
    return f"ssast-{node}"


def slurm_conf(folder: Path) -> str:
    mem_mb = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.9)
    first_job = 1000 + int(time.time()) % 60_000_000  # job ids of one start never meet those of another
    nodes = "\n".join(
        f"NodeName={n} NodeAddr={address(n)} CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN" for n in NODES
    )
    return f"""ClusterName=ssasttest
SlurmctldHost=localhost({SUBNET}.1)
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
JobRequeue=1
SlurmdTimeout=20
KillWait=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool/%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd-%n.log
{nodes}
PartitionName=debug Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""


def _network_down() -> None:
    for node in NODES:
        _run("ip", "netns", "del", namespace(node))
    _run("ip", "link", "del", BRIDGE)


def _network_up() -> str:
    """The bridge and one namespace per node; '' or what failed."""
    _network_down()  # what a crashed earlier run left
    steps = [
        ["ip", "link", "add", BRIDGE, "type", "bridge"],
        ["ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE],
        ["ip", "link", "set", BRIDGE, "up"],
    ]
    for i, node in enumerate(NODES):
        ns, veth = namespace(node), f"ssastv{i + 1}"
        steps += [
            ["ip", "netns", "add", ns],
            ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns],
            ["ip", "link", "set", veth, "master", BRIDGE, "up"],
            ["ip", "-n", ns, "addr", "add", f"{address(node)}/24", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
        ]
    for step in steps:
        out = _run(*step)
        if out.returncode != 0:
            return f"{' '.join(step)} failed: {out.stderr.strip()}"
    return ""


class Cluster:
    """Starts munged, slurmctld and one slurmd per node; `env` is the environment that reaches them (SLURM_CONF,
    the sacct stand-in on PATH). `stop` ends the daemons it started and removes the network."""

    def __init__(self, folder: Path):
        self.folder = folder
        for sub in ("state", "bin", *(f"spool/{n}" for n in NODES)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "slurm.conf").write_text(slurm_conf(folder))
        (folder / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"{address(n)} {n}\n" for n in NODES))
        sacct = folder / "bin" / "sacct"
        sacct.write_text(SACCT)
        sacct.chmod(0o755)
        self.env = {
            **os.environ,
            "SLURM_CONF": str(folder / "slurm.conf"),
            "PATH": f"{folder / 'bin'}:{os.environ['PATH']}",
        }
        self.controller: subprocess.Popen | None = None
        self.nodes: dict[str, subprocess.Popen] = {}

    def _daemon(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{name}.out", "a")
        return subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_node(self, node: str) -> None:
        """slurmd of `node` in the node's namespace, under the node's hostname."""
        self.nodes[node] = self._daemon(
            node,
            ["nsenter", f"--net=/run/netns/{namespace(node)}", "unshare", "--mount", "--uts", "sh", "-c",
             f"mount --bind {self.folder / 'hosts'} /etc/hosts && hostname {node} && "
             f"exec slurmd -D -N {node}"],
        )  # fmt: skip

    def stop_node(self, node: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Every process of `node` (slurmd, its job steps, their tasks) gets `sig`: SIGKILL is a node that
        crashed; SIGSTOP one that hangs, its connections open but silent."""
        for pid in self.node_pids(node):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def node_pids(self, node: str) -> list[int]:
        return [int(p) for p in _run("ip", "netns", "pids", namespace(node)).stdout.split()]

    def node_state(self, node: str) -> str:
        return _run("sinfo", "-h", "-n", node, "-o", "%T", env=self.env).stdout.strip()

    def start(self, timeout: float = 60) -> str:
        """'' once a job step runs on every node, else what went wrong."""
        if reason := _network_up():
            return reason
        if _run("pgrep", "-x", "munged").returncode != 0:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            out = _run("runuser", "-u", "munge", "--", "munged")
            if out.returncode != 0:
                return f"munged did not start: {out.stderr.strip()}"
        self.controller = self._daemon("slurmctld", ["slurmctld", "-D"])
        time.sleep(1)
        for node in NODES:
            self.start_node(node)
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = _run("srun", f"-N{len(NODES)}", "-t", "1", "hostname", env=self.env, timeout=30)
            if out.returncode == 0 and sorted(out.stdout.split()) == NODES:
                return ""
            time.sleep(1)
        return f"no job ran on {len(NODES)} nodes within {timeout:.0f} s: {out.stderr.strip()[-300:]}"

    def stop(self, timeout: float = 60) -> None:
        """Cancel every job, wait for their steps to end, then stop the daemons and remove the network."""
        _run("scancel", "--user", "root", env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline and _run("squeue", "-h", env=self.env).stdout.strip():
            time.sleep(1)
        for node in NODES:
            self.stop_node(node)
        pid_file = self.folder / "slurmctld.pid"
        if pid_file.exists():  # the daemon of this start, or of `up` in another process
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        if self.controller:
            self.controller.wait(timeout=30)
        _network_down()


def main(argv: list[str]) -> int:
    """``python tests/support/slurm_cluster.py up|down FOLDER``: the tests' two-node cluster, to try a recipe on
    (as root). `up` prints the environment that reaches it."""
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print(main.__doc__)
        return 2
    folder = Path(argv[1]).absolute()
    if argv[0] == "down":
        Cluster(folder).stop()
        return 0
    cluster = Cluster(folder)
    if reason := install() or cluster.start():
        print(f"the cluster did not start: {reason}", file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={cluster.env['SLURM_CONF']} PATH={folder / 'bin'}:$PATH")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
