# Shared by slurm/*.sbatch (sourced, not run). Finds the project and its environment, and works out
# the job's geometry from Slurm's variables: nothing here names a host or a node count.

# The repository (submit from its root, or set PRETRAIN_HOME) and its virtual environment.
PRETRAIN_HOME=${PRETRAIN_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$PRETRAIN_HOME" || { echo "PRETRAIN_HOME=$PRETRAIN_HOME does not exist" >&2; exit 1; }
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "${PRETRAIN_VENV:-$PRETRAIN_HOME/.venv}/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "${PRETRAIN_VENV:-$PRETRAIN_HOME/.venv}/bin/activate"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

# Hosts of this job, and the master: the first of them; the port follows from the job id so that
# two jobs sharing a node do not collide (pretrain.distributed.port_for_job, the one formula; override
# with MASTER_ADDR / MASTER_PORT).
mapfile -t JOB_HOSTS < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
export MASTER_ADDR=${MASTER_ADDR:-${JOB_HOSTS[0]}}
if [ -z "${MASTER_PORT:-}" ]; then
  MASTER_PORT=$(python -c 'import os; from pretrain.distributed import port_for_job; print(port_for_job(os.environ))') \
    || { echo "cannot import pretrain from $(command -v python): set PRETRAIN_VENV or activate its environment" >&2; exit 1; }
  export MASTER_PORT
fi
NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}

# Ranks per node: one per GPU; with no GPU (CPU mode, for tests) CPU_RANKS_PER_NODE (default 1).
gpus_on_node() {
  if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then echo "$SLURM_GPUS_ON_NODE"
  elif [ -n "${SLURM_GPUS_PER_NODE:-}" ]; then echo "${SLURM_GPUS_PER_NODE##*:}"
  elif command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true  # 0: exit 1
  else echo 0; fi
}
GPUS_PER_NODE=$(gpus_on_node)
if [ "${PRETRAIN_DEVICE:-auto}" = cpu ] || [ "$GPUS_PER_NODE" = 0 ]; then
  RANKS_PER_NODE=${CPU_RANKS_PER_NODE:-1}
  export CUDA_VISIBLE_DEVICES="" DS_ACCELERATOR=cpu
else
  RANKS_PER_NODE=$GPUS_PER_NODE
fi
WORLD_SIZE=$((NNODES * RANKS_PER_NODE))

# pretrain-pipeline --slurm sets PIPELINE_STAMP (and PIPELINE_HASH) on the last job of each stage: once the
# stage's work succeeded, record it complete (its outputs are checked first; a check that fails fails the job).
record_stage() {
  [ -z "${PIPELINE_STAMP:-}" ] || python tools/pipeline.py --record "$PIPELINE_STAMP" --expect-hash "${PIPELINE_HASH:-}"
}
