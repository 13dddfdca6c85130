"""Process-group set-up for single-process, torchrun and SLURM (srun / submitit) launches."""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ssast.cli import setup_logging

log = logging.getLogger(__name__)
COLLECTIVE_TIMEOUT_S = 600  # how long a process waits for the others in a collective before it gives up on them


@dataclass(frozen=True)
class Dist:
    """This process's place in the launch: rank, world size, local rank."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this is the process that writes files and logs."""
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when there is a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _env_from_slurm() -> None:
    """Map SLURM task variables onto the torch.distributed ones when a launcher did not set them (``srun python -m
    pretrain ...``): the master is the first host of the job's node list."""
    if "WORLD_SIZE" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    from submitit.slurm.slurm import SlurmJobEnvironment

    os.environ.update(
        RANK=os.environ["SLURM_PROCID"],
        WORLD_SIZE=os.environ["SLURM_NTASKS"],
        LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"),
    )
    os.environ.setdefault("MASTER_ADDR", SlurmJobEnvironment().hostnames[0])
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def init_distributed(device: torch.device, timeout_s: float = COLLECTIVE_TIMEOUT_S) -> Dist:
    """Join the process group described by the environment (gloo on CPU, NCCL on GPU); a no-op alone. A collective
    that waits longer than `timeout_s` for another process fails (see `lost_process`)."""
    _env_from_slurm()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def log_places(d: Dist) -> None:
    """One line on the main process: where each rank runs (host and address) and the master it met at."""
    host = socket.gethostname()
    try:
        address = socket.gethostbyname(host)
    except OSError:
        address = "address unknown"
    places = gather(f"{host} ({address})", d)
    log.info(
        "process group of %d (master %s:%s): %s",
        d.world,
        os.environ["MASTER_ADDR"],
        os.environ["MASTER_PORT"],
        ", ".join(f"rank {r} on {p}" for r, p in enumerate(places)),
    )


def lost_process(error: BaseException) -> str:
    """Why a collective failed when it lost another process of the job (its connection reset, or no answer within
    the timeout), in a few words; '' for any other error."""
    text = str(error)
    if not (isinstance(error, dist.DistError) or "/gloo/" in text):
        return ""
    return re.sub(r"^\[[^\]]*\] ", "", text.strip().splitlines()[0])  # without the source location


def _tensor(values: list) -> torch.Tensor:
    """A tensor where the backend can reduce it (NCCL only reduces GPU tensors)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    return torch.tensor(values, dtype=torch.float64, device=device)


def all_mean(values: dict[str, float], d: Dist) -> dict[str, float]:
    """Mean of scalar metrics over processes."""
    if d.world == 1 or not values:
        return values
    t = _tensor(list(values.values()))
    dist.all_reduce(t)
    return dict(zip(values, (t / d.world).tolist(), strict=True))


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every process when it is true on any (a signal delivered to one rank stops them all)."""
    if d.world == 1:
        return flag
    t = _tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_true(flag: torch.Tensor, d: Dist) -> bool:
    """True when a boolean tensor is true on every process; the caller's only host-device sync."""
    if d.world > 1:
        flag = flag.to(torch.float64).reshape(1)
        flag = flag if dist.get_backend() == "nccl" else flag.cpu()
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)


def gather(obj, d: Dist) -> list:
    """Every process's `obj`, in rank order (on every process)."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    """Wait for every process (nothing alone)."""
    if d.world > 1:
        dist.barrier()


@dataclass
class World:
    """Where this process runs: its device and its place in the process group."""

    device: torch.device
    dist: Dist


def set_up(device: str = "auto", threads: int = 0, timeout_s: float = COLLECTIVE_TIMEOUT_S) -> World:
    """Once per process, before a stage's work: torch's threads (0: torch's default), the device (``auto``, ``cpu``,
    ``cuda``: this process's GPU of its node; ``cuda:N``), the process group (`init_distributed`) and logging."""
    chosen = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    d = init_distributed(chosen, timeout_s)
    setup_logging(d.main)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", d.local_rank if device in ("auto", "cuda") else chosen.index)
        torch.cuda.set_device(chosen)
    if d.world > 1:
        log_places(d)
    return World(chosen, d)
