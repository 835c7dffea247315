"""The one place that reads the launch environment and decides rank, world size and rendezvous.

Checked in this order (the first that applies wins):
  1. torchrun / the deepspeed launcher / anything that exports RANK and WORLD_SIZE (torchrun per node
     under srun included): taken as given.
  2. MPI (mpirun, or ``srun --mpi=pmix``): OMPI_COMM_WORLD_RANK, PMIX_RANK or PMI_RANK is set; rank
     and size come from mpi4py, and rank 0's host and a free port are broadcast to everybody. Under srun
     (its PMI rank is its SLURM_PROCID) without mpi4py, or with one whose MPI sees each process alone (a
     plain srun on a cluster whose MpiDefault is pmix), Slurm's variables instead (3).
  3. Slurm (``srun`` with one task per GPU, no SSH needed): SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS;
     the master is the first host of the step's node list, the port is derived from the job id.
  4. Nothing: one process.
The result is exported as RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT so that
``torch.distributed`` / DeepSpeed initialize with ``env://``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    launcher: str  # "env" (torchrun/deepspeed), "mpi", "slurm" or "single"
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int

    @property
    def node_rank(self) -> int:
        return self.rank // max(self.local_world_size, 1)

    def export(self) -> None:
        os.environ.update(RANK=str(self.rank), LOCAL_RANK=str(self.local_rank), WORLD_SIZE=str(self.world_size),
                          LOCAL_WORLD_SIZE=str(self.local_world_size), MASTER_ADDR=self.master_addr,
                          MASTER_PORT=str(self.master_port))


_MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK")


def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        local_world = int(env.get("LOCAL_WORLD_SIZE", env.get("SLURM_NTASKS_PER_NODE", world)) or world)
        return DistEnv("env", int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), world, local_world,
                       env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)))
    slurm_step = "SLURM_PROCID" in env and "SLURM_STEP_ID" in env
    mpi = [name for name in _MPI_RANK_VARS if name in env]
    if mpi and slurm_step and "OMPI_COMM_WORLD_RANK" not in env and env[mpi[0]] == env["SLURM_PROCID"]:
        # srun under a PMI plugin (--mpi=pmix, or a cluster's MpiDefault): MPI's view, or Slurm's variables where
        # mpi4py is missing or its MPI does not speak this PMI (every process a world of one). (Under MPICH's or
        # Intel MPI's hydra only global rank 0 gets here, and MPI's world of all ranks keeps it on MPI's view.)
        return _from_mpi(env, fallback=lambda: _from_slurm(env))
    if mpi:  # mpirun (inside a job too, where the batch step's SLURM_PROCID is every process's)
        return _from_mpi(env)
    if slurm_step:
        return _from_slurm(env)
    return DistEnv("single", 0, 0, 1, 1, "127.0.0.1", int(env.get("MASTER_PORT", 0)) or free_port())


def _from_slurm(env: Mapping[str, str]) -> DistEnv:
    world = int(env["SLURM_NTASKS"])
    nodes = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
    local_world = world // max(len(nodes), 1)
    return DistEnv("slurm", int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), world, max(local_world, 1),
                   env.get("MASTER_ADDR") or nodes[0], int(env.get("MASTER_PORT") or port_for_job(env)))


def port_for_job(env: Mapping[str, str]) -> int:
    """A port in 10000-29999 derived from the job id, so concurrent jobs on a node rarely collide (below Linux's
    ephemeral ports, 32768 and up, which outgoing connections take)."""
    job = int(env.get("SLURM_JOB_ID", "0") or 0)
    return 10000 + job % 20000


def _from_mpi(env: Mapping[str, str], fallback: Callable[[], DistEnv] | None = None) -> DistEnv:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        if fallback is not None:
            return fallback()
        raise RuntimeError("launched by MPI but mpi4py is missing: pip install 'pretrain[mpi]' (needs an MPI "
                           "library, e.g. apt-get install libopenmpi-dev)") from exc
    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    if fallback is not None and world == 1 < int(env.get("SLURM_NTASKS", 1)):  # an MPI that does not see the others
        return fallback()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    master = comm.bcast((env.get("MASTER_ADDR") or socket.gethostname(),
                         int(env.get("MASTER_PORT") or 0) or free_port()) if rank == 0 else None, root=0)
    return DistEnv("mpi", rank, local.Get_rank(), world, local.Get_size(), master[0], master[1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list ("node[01-03,7],gpu5") as names; scontrol when available."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", hostlist], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        pass
    hosts: list[str] = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", hostlist):
        prefix, ranges = match.group(1), match.group(2)
        if not ranges:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            low, _, high = part.partition("-")
            for number in range(int(low), int(high or low) + 1):
                hosts.append(f"{prefix}{number:0{len(low)}d}")
    return hosts


class RendezvousError(RuntimeError):
    """The ranks cannot meet: the message says which host, which address, and what to check."""


def check_rendezvous(env: DistEnv, timeout: float | None = None) -> None:
    """Fail fast, with a clear message, where torch.distributed would hang for half an hour.

    Rank 0 checks that MASTER_ADDR is an address of its own host and that MASTER_PORT is free (not
    under torchrun, whose agent holds the port). The other ranks wait until they can open a TCP
    connection to the master, for up to PRETRAIN_RENDEZVOUS_TIMEOUT seconds (default 600).
    """
    if env.world_size == 1:
        return
    timeout = timeout if timeout is not None else float(os.environ.get("PRETRAIN_RENDEZVOUS_TIMEOUT", 600))
    host = socket.gethostname()
    try:
        address = socket.gethostbyname(env.master_addr)
    except OSError as exc:
        raise RendezvousError(f"rank {env.rank} on {host}: the master host MASTER_ADDR={env.master_addr} does not "
                              f"resolve ({exc}); set MASTER_ADDR to a name or address every node can reach.") from None
    if env.rank == 0:
        _check_master_host(env, address, host)
        return
    deadline, last_error = time.monotonic() + timeout, "no attempt"
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, env.master_port), timeout=5).close()
            return
        except ConnectionRefusedError:
            last_error = "connection refused (the host answers; rank 0 is not listening yet)"
        except OSError as exc:
            last_error = f"{exc.strerror or exc} (the host does not answer)"
        time.sleep(1)
    raise RendezvousError(
        f"rank {env.rank} on {host} cannot reach the master {env.master_addr}:{env.master_port} after {timeout:.0f} s: "
        f"{last_error}. Check that rank 0 started, that {env.master_addr} is reachable from {host} (firewall, the "
        "interface: NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME), or set PRETRAIN_RENDEZVOUS_TIMEOUT for slow starts.")


def _check_master_host(env: DistEnv, address: str, host: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            raise RendezvousError(f"rank 0 runs on {host}, but MASTER_ADDR={env.master_addr} ({address}) is not an "
                                  "address of this host: set MASTER_ADDR to the host of rank 0 (under Slurm, the "
                                  "first host of the job).") from None
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return  # torchrun's agent already listens on MASTER_PORT for the workers
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's store does: TIME_WAIT is fine
        try:
            probe.bind(("", env.master_port))
        except OSError:
            raise RendezvousError(f"MASTER_PORT={env.master_port} is already in use on {host} (another job, or a "
                                  "process left over from an earlier run): set MASTER_PORT to a free port.") from None


@contextmanager
def process_group(timeout_minutes: float = 15) -> Iterator[None]:
    """The process group for the block: started on entry (``init_process_group``), ended when the block ends
    normally. A process that leaves a gloo group alive can abort in interpreter shutdown, after its work is
    done: a gloo worker thread still releasing its last collective's tensors needs the GIL, which a
    finalizing interpreter refuses by ending the thread, inside a destructor that may not throw
    ("terminate called without an active exception", SIGABRT, about one 2-rank CPU launch in ten).

    Ending it means DeepSpeed's groups too (its copy of the world for data parallelism, held by its module
    and by engines): ``deepspeed.comm.destroy_process_group`` drops DeepSpeed's own references and a
    collection frees what the block left behind, so their worker threads finish what they were releasing
    and are joined here, well before shutdown. (An engine built with ``deepspeed.initialize`` keeps groups
    referenced from C++ even so, their threads alive at exit: the trainer's command ends with ``os._exit``,
    pretrain.cli.train.cli.)

    Left alone when the block raises (``sys.exit`` too): tearing down a group whose peers are gone or blocked
    in a collective can hang (the trainer's fatal errors end the process with ``os._exit`` instead)."""
    import gc

    import deepspeed.comm

    init_process_group(timeout_minutes)
    yield
    if deepspeed.comm.is_initialized():  # a library inside the block may have ended it already
        deepspeed.comm.destroy_process_group()
    gc.collect()  # engines and optimizers hold DeepSpeed's groups in reference cycles


def init_process_group(timeout_minutes: float = 15) -> None:
    """DeepSpeed's process group (NCCL on GPUs, gloo on CPUs) from the exported environment.

    A collective that waits ``timeout_minutes`` for a rank that does not answer fails instead of
    hanging (a rank that dies is usually noticed at once: its connections close). On CPUs DeepSpeed
    first builds its shared-memory all-reduce op; that build goes through ``jit_ops`` so that one
    killed earlier cannot hang this start, into this environment's folder (``jit_ops``).
    """
    from datetime import timedelta

    import deepspeed
    import torch

    from pretrain.jit_ops import load_op, use_environment_build_root

    use_environment_build_root()  # before anything DeepSpeed builds, its own builds included
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        load_op("ShareMemCommBuilder")
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False,
                               timeout=timedelta(minutes=timeout_minutes))
    if not on_gpu:
        _unlink_shm_buffer()


def _unlink_shm_buffer() -> None:
    """DeepSpeed's CPU all-reduce maps a 66 MiB buffer per rank from /dev/shm and never unlinks it: every
    launch would leave its buffers in memory (a test suite fills the machine's RAM). Once every rank has
    attached to all of them (a barrier after init), each rank unlinks its own name; the mappings stay
    valid and the memory is freed when the processes end, however they end."""
    import torch

    torch.distributed.barrier()
    name = (f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}_{torch.distributed.get_rank()}")
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
