"""Where a rank learns its rank, world and master, under each launcher (pretrain.distributed.detect), and the
Slurm scripts' GPU count on a node whose nvidia-smi sees none; without a cluster (tests/test_slurm.py runs the
launchers on one)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from pretrain.distributed import detect, port_for_job
from tests.conftest import ROOT

SRUN = {"SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "4321",
        "SLURM_STEP_NODELIST": "node1,node2", "MASTER_ADDR": "node1"}


def fake_mpi(monkeypatch, rank: int, world: int) -> None:
    """mpi4py whose COMM_WORLD is (rank, world), one process per node."""
    comm = types.SimpleNamespace(Get_rank=lambda: rank, Get_size=lambda: world, bcast=lambda value, root: ("node1", 5),
                                 Split_type=lambda kind, key: types.SimpleNamespace(Get_rank=lambda: 0, Get_size=lambda: 1))
    module = types.ModuleType("mpi4py")
    module.MPI = types.SimpleNamespace(COMM_WORLD=comm, COMM_TYPE_SHARED=0)
    monkeypatch.setitem(sys.modules, "mpi4py", module)


def test_plain_srun_under_a_pmi_plugin_needs_no_mpi4py(monkeypatch):
    """A cluster whose MpiDefault is pmix gives every srun task PMIX_RANK: without mpi4py (or with one whose MPI
    does not speak that PMI, each process a world of one) the ranks come from Slurm's own variables."""
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # not installed
    env = detect({**SRUN, "PMIX_RANK": "1"})
    assert (env.launcher, env.rank, env.world_size, env.master_addr) == ("slurm", 1, 2, "node1")
    fake_mpi(monkeypatch, 0, 1)  # an MPI that does not see the other task
    assert (detect({**SRUN, "PMI_RANK": "1"}).launcher, detect({**SRUN, "PMI_RANK": "1"}).rank) == ("slurm", 1)
    fake_mpi(monkeypatch, 1, 2)  # srun --mpi=pmix with a matching mpi4py: MPI's own view
    assert (detect({**SRUN, "PMIX_RANK": "1"}).launcher, detect({**SRUN, "PMIX_RANK": "1"}).rank) == ("mpi", 1)
    # MPICH's or Intel MPI's hydra: one proxy per node under srun (SLURM_PROCID the node, SLURM_NTASKS the nodes);
    # global rank 0 alone has PMI_RANK == SLURM_PROCID, and must take MPI's world of 4 as the other ranks do
    fake_mpi(monkeypatch, 0, 4)
    hydra = detect({**SRUN, "SLURM_PROCID": "0", "PMI_RANK": "0"})
    assert (hydra.launcher, hydra.rank, hydra.world_size) == ("mpi", 0, 4)


def test_mpirun_inside_a_job_takes_mpis_ranks_not_the_batch_steps(monkeypatch):
    """mpirun's processes inherit the batch step's SLURM_PROCID (0 for all of them): MPI's ranks count."""
    fake_mpi(monkeypatch, 1, 2)
    env = detect({**SRUN, "SLURM_PROCID": "0", "SLURM_STEP_ID": "batch", "OMPI_COMM_WORLD_RANK": "1"})
    assert (env.launcher, env.rank, env.world_size) == ("mpi", 1, 2)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(RuntimeError, match="mpi4py is missing"):
        detect({**SRUN, "SLURM_PROCID": "0", "OMPI_COMM_WORLD_RANK": "1"})


def test_the_jobs_port_is_below_the_ephemeral_range():
    """Outgoing connections take ports from 32768 up: a master port there can be taken by chance."""
    ports = {port_for_job({"SLURM_JOB_ID": str(job)}) for job in range(0, 100000, 7)}
    assert min(ports) >= 10000 and max(ports) < 32768


@pytest.mark.parametrize("listing,expected", [("", "0"), ("GPU 0: NVIDIA H100 (UUID: x)\nGPU 1: NVIDIA H100 (UUID: y)\n", "2")])
def test_the_gpu_count_of_a_node_whose_nvidia_smi_sees_none_is_zero(tmp_path, listing, expected):
    """slurm/common.sh under `set -euo pipefail`: nvidia-smi installed but no GPU visible to the job (a CPU stage
    on a GPU partition) counts 0, where grep's exit 1 ended the script without a word."""
    (tmp_path / "nvidia-smi").write_text(f"#!/bin/sh\nprintf '%s' '{listing}'\n")
    (tmp_path / "nvidia-smi").chmod(0o755)
    script = ("set -euo pipefail; unset SLURM_GPUS_ON_NODE SLURM_GPUS_PER_NODE; "
              "eval \"$(sed -n '/^gpus_on_node()/,/^}/p' slurm/common.sh)\"; count=$(gpus_on_node); echo \"count=$count\"")
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.strip() == f"count={expected}", proc.stdout + proc.stderr


def test_a_slurm_runs_resume_line_names_its_run_dir():
    """train.sbatch's default RUN_DIR is new for each job id: the summary's resume line for a job passes the
    run's own, or the resubmitted job would start a new run from step 0."""
    from pathlib import Path

    from pretrain.run_summary import resume_command

    line = resume_command(Path("/scratch/runs/pretrain-1234/config.yaml"), 16, 8, "slurm")
    assert line.startswith("RUN_DIR=/scratch/runs/pretrain-1234 sbatch (the job's options) slurm/train.sbatch "
                           "--config /scratch/runs/pretrain-1234/config.yaml"), line
