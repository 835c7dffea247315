# Sourced by the submit_*.sh scripts, whose arguments are: SHARDS [sbatch options --] tool arguments.
# Sets SHARDS, SBATCH_OPTS (what goes to every sbatch) and ARGS (what goes to the tool).
# shellcheck shell=bash
SHARDS=${1:?usage: SHARDS [sbatch options --] tool arguments}; shift
SBATCH_OPTS=()
if [[ " $* " == *" -- "* ]]; then
  while [ "$1" != "--" ]; do SBATCH_OPTS+=("$1"); shift; done
  shift
fi
ARGS=("$@")
