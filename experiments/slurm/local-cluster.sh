#!/usr/bin/env bash
# A one-node Slurm cluster on this machine: to try experiments/slurm/sweep.sbatch, and for tests/test_slurm.py.
#
#   experiments/slurm/local-cluster.sh start DIR [CPUS]   # prints: export SLURM_CONF=DIR/slurm.conf
#   export SLURM_CONF=DIR/slurm.conf; sbatch ...; squeue; sinfo
#   experiments/slurm/local-cluster.sh stop DIR           # cancels its jobs, stops its daemons (pid files)
#
# Everything lives in DIR (slurm.conf, state, spool, logs, munge key and socket); nothing in /etc is used,
# two free TCP ports are picked (or SLURMCTLD_PORT / SLURMD_PORT). The recipe, as it works for Debian 12's
# slurm-wlm 22.05 + munge 0.5.15 run as root (`make install-slurm` installs them):
# - munged with its own key (mungekey -c), socket, pid, log and seed files in DIR/munge; --force because
#   munged insists on a world-executable path to its socket (a pytest tmp folder is 0700); slurm.conf
#   points at the socket with AuthInfo=socket=... (clients read it there too). Without munged installed,
#   AuthType=auth/none + CredType=cred/none (22.05 still has them; 23.11 removed them).
# - SlurmUser=root, slurmctld -c (fresh state) and slurmd -N NODE, both with -f DIR/slurm.conf (and
#   SLURM_CONF for the clients). SlurmctldHost=HOST(127.0.0.1): HOST must be `hostname -s`, or slurmctld
#   exits ("This host not a valid controller"); NODE is any name (NODE_NAME, default HOST).
# - ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, JobAcctGatherType=jobacct_gather/none: no
#   cgroup plugin, no cgroup.conf; SelectType=select/cons_tres with CR_CPU; accounting storage off.
# - NodeName=NODE NodeAddr=127.0.0.1 CPUs=CPUS (default: 4, or the core count if larger) and
#   SlurmdParameters=config_overrides, so declaring more CPUs than the machine has does not drain the node:
#   on 2 cores, two `sbatch -n 2` jobs run at once. ReturnToService=2: the node registers straight to idle.
# - Inside a job, Open MPI's mpirun sees the allocation (-n 2 gives 2 slots); `srun --mpi=pmix` works too.
set -euo pipefail

usage() { echo "usage: $0 start DIR [CPUS] | stop DIR" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
cmd=$1
dir=$(realpath -m "$2")
conf=$dir/slurm.conf
export SLURM_CONF=$conf

alive() {  # a zombie (exited, not yet reaped by whoever adopted the daemon) counts as gone
  kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

stop_pid_file() {  # TERM the pid in file $1, KILL it after 5 s
  local pid
  [[ -s $1 ]] || return 0
  pid=$(<"$1")
  alive "$pid" || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do alive "$pid" || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  if [[ -s $dir/slurmctld.pid ]] && alive "$(<"$dir/slurmctld.pid")"; then
    timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
    SECONDS=0
    while (( SECONDS < 10 )) && [[ -n $(timeout 5 squeue -h 2>/dev/null) ]]; do sleep 0.2; done
  fi
  stop_pid_file "$dir/slurmd.pid"
  stop_pid_file "$dir/slurmctld.pid"
  stop_pid_file "$dir/munge/munged.pid"
}

fail() {
  echo "local-cluster: $*" >&2
  for log in "$dir"/log/*.log "$dir"/munge/munged.log; do
    [[ -s $log ]] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }
  done
  stop
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local cpus=${1:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
  local host node ctld_port slurmd_port auth state
  [[ $(id -u) == 0 ]] || { echo "local-cluster: run as root (slurmd runs jobs as their user)" >&2; exit 1; }
  for prog in slurmctld slurmd sbatch squeue sinfo scontrol; do
    command -v "$prog" >/dev/null || { echo "local-cluster: $prog not found (make install-slurm)" >&2; exit 1; }
  done
  host=$(hostname -s)  # slurmctld runs only where SlurmctldHost names this host
  node=${NODE_NAME:-$host}
  ctld_port=${SLURMCTLD_PORT:-$(free_port)}
  slurmd_port=${SLURMD_PORT:-$(free_port)}
  while [[ $slurmd_port == "$ctld_port" ]]; do slurmd_port=$(free_port); done
  mkdir -p "$dir"/{state,spool,log,munge}
  chmod 700 "$dir/munge"

  if command -v munged >/dev/null; then
    rm -f "$dir/munge/munge.key"
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$dir/munge/munge.key"
    else
      dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 400 "$dir/munge/munge.key"
    munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
      --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
      --seed-file="$dir/munge/munged.seed" || fail "munged did not start"
    auth="AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket"
  else
    auth="AuthType=auth/none
CredType=cred/none"
  fi

  cat >"$conf" <<CONF
# One-node cluster written by experiments/slurm/local-cluster.sh
ClusterName=bench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
$auth
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

  slurmctld -c -f "$conf" || fail "slurmctld did not start"
  slurmd -f "$conf" -N "$node" || fail "slurmd did not start"
  SECONDS=0
  while (( SECONDS < 30 )); do
    for name in slurmctld slurmd; do  # they fork before reading their configuration: exit status 0 says little
      if [[ -s $dir/$name.pid ]] && ! alive "$(<"$dir/$name.pid")"; then fail "$name exited"; fi
    done
    state=$(timeout 5 sinfo -h -n "$node" -o %T 2>/dev/null || true)
    case $state in
      idle) echo "export SLURM_CONF=$conf"; return 0 ;;
      down*|drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.1
  done
  fail "node $node is not idle after 30 s (state: ${state:-none})"
}

case $cmd in
  start) start "${3:-}" ;;
  stop) stop ;;
  *) usage ;;
esac
