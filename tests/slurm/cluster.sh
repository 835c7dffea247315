#!/usr/bin/env bash
# A throw-away Slurm cluster on this host for the tests: Debian's Slurm + munge (+ Open MPI and PMIx),
# slurmctld and one slurmd per fake node (node1..nodeN, all 127.0.0.1), without systemd. Needs root.
#   bash tests/slurm/cluster.sh start [NODES]    idempotent; prints the cluster
#   bash tests/slurm/cluster.sh stop             stops only the daemons it started (by pid)
# Follows the recipe in ../shared/slurm: libpmix-dev must be installed before slurmd starts, or
# `srun --mpi=pmix` hangs the node.
set -euo pipefail
ACTION=${1:-start}
NODES=${2:-2}
BASE=${PRETRAIN_SLURM_BASE:-/tmp/pretrain-slurm}
RUN=$BASE/run LOG=$BASE/log
CPUS=$(nproc)
export DEBIAN_FRONTEND=noninteractive

alive() { [ -s "$1" ] && [ -d "/proc/$(cat "$1")" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }
waitfor() { local n=$1; shift; for _ in $(seq $((n * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

stop() {
  if alive "$RUN/slurmctld.pid" slurmctld; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    [ -z "$jobs" ] || scancel $jobs || true
  fi
  for f in "$RUN"/slurmd.*.pid "$RUN/slurmctld.pid" "$RUN/munged.pid"; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid); name=${name%%.*}
    if alive "$f" "$name"; then kill "$(cat "$f")"; fi
    rm -f "$f"
  done
}

if [ "$ACTION" = stop ]; then stop; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "the test cluster needs root" >&2; exit 3; }

packages="slurmctld slurmd slurm-client munge libpmix-dev openmpi-bin libopenmpi-dev"
missing=$(for p in $packages; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  apt-cache show slurmd >/dev/null 2>&1 || apt-get update -qq
  made_policy=0  # keep any init system from starting the daemons during installation
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1; }
  apt-get install -y -q --no-install-recommends $missing > "$BASE.apt.log" 2>&1 || { tail -20 "$BASE.apt.log"; exit 1; }
  [ "$made_policy" = 0 ] || rm -f /usr/sbin/policy-rc.d
fi
mkdir -p "$RUN" "$LOG" "$BASE/ctld"

[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  waitfor 10 sh -c 'munge -n | unmunge' || { echo "munged did not start" >&2; exit 1; }
  cp /run/munge/munged.pid "$RUN/munged.pid"
fi

host=$(hostname -s)
names=$(seq -f 'node%g' -s ' ' 1 "$NODES")
grep -v '# pretrain-test-nodes$' /etc/hosts > "$BASE/hosts" || true
printf '127.0.0.1 %s # pretrain-test-nodes\n' "$names" >> "$BASE/hosts"
cat "$BASE/hosts" > /etc/hosts
config="ClusterName=pretraintest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/ctld
SlurmdSpoolDir=$BASE/d/%n
TmpFS=$BASE/tmp/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
EnforcePartLimits=ALL
JobRequeue=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=600"
for i in $(seq 1 "$NODES"); do
  config+=$'\n'"NodeName=node$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((17000 + i)) CPUs=$CPUS State=UNKNOWN"
done
config+=$'\n'"PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"

all_up() { alive "$RUN/slurmctld.pid" slurmctld || return 1; for n in $names; do alive "$RUN/slurmd.$n.pid" slurmd || return 1; done; }
if [ "$config" != "$(cat /etc/slurm/slurm.conf 2>/dev/null)" ] || ! all_up; then
  for f in "$RUN"/slurmd.*.pid "$RUN/slurmctld.pid"; do [ -e "$f" ] && alive "$f" "$(basename "$f" .pid | cut -d. -f1)" && kill "$(cat "$f")"; rm -f "$f"; done
  sleep 1
  mkdir -p /etc/slurm
  printf '%s\n' "$config" > /etc/slurm/slurm.conf
  for n in $names; do mkdir -p "$BASE/d/$n" "$BASE/tmp/$n"; done
  slurmctld -c
  waitfor 30 sh -c 'scontrol ping | grep -q UP' || { tail -20 "$LOG/slurmctld.log"; exit 1; }
  for n in $names; do slurmd -N "$n"; done
  for n in $names; do waitfor 30 alive "$RUN/slurmd.$n.pid" slurmd || { tail "$LOG/slurmd.$n.log"; exit 1; }; done
fi
waitfor 60 sh -c "[ \$(sinfo -h -N -o %t | grep -cx idle) -eq $NODES ]" || { sinfo -N; exit 1; }
sinfo -N
