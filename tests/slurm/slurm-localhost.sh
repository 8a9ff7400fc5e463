#!/usr/bin/env bash
# Single-node SLURM (Debian 12's Slurm 22.05) on localhost, no accounting database, for CI and tests.
#
# Usage:  bash tests/slurm/slurm-localhost.sh install|up|down|status
#    or:  source tests/slurm/slurm-localhost.sh; slurm_install; slurm_up; ...; slurm_down
#
#   install  apt-get install munge slurmctld slurmd slurm-client, only those that are missing (root)
#   up       write /etc/slurm/slurm.conf, start munged (unless one answers), slurmctld and slurmd,
#            wait until the node is idle; a cluster this script already started is stopped first
#   down     scancel this cluster's jobs, stop the daemons by the PIDs `up` recorded, remove the config
#   status   sinfo and every job record squeue still holds
#
# All four are idempotent. State, spool, logs and PID files live under $SLURM_DIR (default /tmp/golf-slurm).
# The cluster has one node "localhost" and one partition "debug" (the default), MaxTime infinite.
#
# Why it looks like this (details: ../shared/reference/slurm-single-node.md):
# - The config MUST be at the compiled-in path /etc/slurm/slurm.conf: snakemake-executor-plugin-slurm-jobstep
#   strips SLURM_* variables (SLURM_CONF too) before its nested srun, which then finds no configuration.
# - There is no slurmdbd, so `sacct` does not work: Snakemake needs `--slurm-status-command squeue`, and
#   MinJobAge must exceed the plugin's longest poll interval (180 s) or finished jobs vanish unseen (hang).
# - There is no systemd: daemons run in the foreground under `&`, their stdio goes to files (so no daemon
#   holds the caller's pipes open) and they are stopped by their recorded PIDs, never by name.
set -euo pipefail

SLURM_DIR=${SLURM_DIR:-/tmp/golf-slurm}
SLURM_CONF_FILE=/etc/slurm/slurm.conf
SLURM_PACKAGES=(munge slurmctld slurmd slurm-client)
unset SLURM_CONF

slurm_missing_packages() {  # prints the packages of SLURM_PACKAGES that are not installed
  local p
  for p in "${SLURM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

slurm_install() {
  local missing
  missing=$(slurm_missing_packages | tr '\n' ' ')
  if [ -z "${missing// /}" ]; then return 0; fi
  if [ "$(id -u)" != 0 ]; then echo "slurm_install: needs root to install: $missing" >&2; return 1; fi
  # policy-rc.d (present in containers) stops postinst from starting daemons; `up` starts our own
  apt-get update -qq
  # shellcheck disable=SC2086  # word splitting of the package list is intended
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=300 $missing >/dev/null
}

_wait_for() {  # _wait_for SECONDS CMD...   (polls every 0.2 s)
  local n=$(($1 * 5))
  shift
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

_ours() { head -n 1 "$1" | grep -q "slurm-localhost.sh"; } # a config this script wrote

_node_idle() { [ "$(sinfo -h -n localhost -o %T 2>/dev/null)" = idle ]; }

slurm_up() {
  if [ -n "$(slurm_missing_packages)" ]; then
    echo "slurm_up: packages missing: $(slurm_missing_packages | tr '\n' ' ')(run: $0 install)" >&2
    return 1
  fi
  if [ -f "$SLURM_CONF_FILE" ] && ! _ours "$SLURM_CONF_FILE"; then
    echo "slurm_up: $SLURM_CONF_FILE was not written by this script (a real cluster's?); not touching it" >&2
    return 1
  fi
  slurm_down # a cluster left by an earlier run (same SLURM_DIR) would hold the ports
  mkdir -p "$SLURM_DIR"/{state,spool,log}
  local ncpu realmem
  ncpu=$(nproc)
  # never declare more memory than slurmd detects, or the node is drained
  realmem=$(/usr/sbin/slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mkdir -p /etc/slurm
  cat >"$SLURM_CONF_FILE" <<CONF
# written by tests/slurm/slurm-localhost.sh; removed by its "down"
ClusterName=golfci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$SLURM_DIR/slurmctld.pidfile
SlurmdPidFile=$SLURM_DIR/slurmd.pidfile
SlurmdSpoolDir=$SLURM_DIR/spool
StateSaveLocation=$SLURM_DIR/state
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue for MinJobAge s: must exceed the plugin's longest poll interval (180 s)
MinJobAge=600
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$realmem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

  # munge: /run/munge is normally made by systemd (RuntimeDirectory=munge)
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  # reuse a munged that already answers (e.g. started by systemd); else start ours (setpriv execs: $! is munged)
  if ! munge -n >/dev/null 2>&1; then
    setpriv --reuid=munge --regid=munge --init-groups \
      /usr/sbin/munged --foreground --force </dev/null >"$SLURM_DIR/log/munged.out" 2>&1 &
    echo $! >"$SLURM_DIR/munged.pid"
    _wait_for 10 munge -n || {
      echo "munged did not start" >&2
      cat "$SLURM_DIR/log/munged.out" >&2
      return 1
    }
  fi

  /usr/sbin/slurmctld -D </dev/null >"$SLURM_DIR/log/slurmctld.out" 2>&1 &
  echo $! >"$SLURM_DIR/slurmctld.pid"
  _wait_for 15 scontrol ping || {
    echo "slurmctld did not start" >&2
    tail -n 30 "$SLURM_DIR"/log/slurmctld.* >&2
    return 1
  }
  # -N localhost: the node name does not depend on the machine's hostname
  /usr/sbin/slurmd -D -N localhost </dev/null >"$SLURM_DIR/log/slurmd.out" 2>&1 &
  echo $! >"$SLURM_DIR/slurmd.pid"
  _wait_for 30 _node_idle || {
    echo "node not idle" >&2
    sinfo -N -l >&2 || true
    tail -n 30 "$SLURM_DIR"/log/slurm*.log >&2
    return 1
  }
  sinfo
}

_alive() { # running and not a zombie (an orphaned daemon is reaped late by PID 1; kill -0 still succeeds)
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}

_stop_pidfile() { # _stop_pidfile FILE NAME: TERM the daemon whose PID we recorded, KILL after 20 s
  local f=$1 name=$2 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  # a stale PID file may name a PID that was reused by another program: stop only our daemon
  if _alive "$pid" && [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = "$name" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    _wait_for 20 eval "! _alive $pid" || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

slurm_down() {
  if [ -s "$SLURM_DIR/slurmctld.pid" ] && _alive "$(cat "$SLURM_DIR/slurmctld.pid")" && scontrol ping >/dev/null 2>&1; then
    # only jobs of this private cluster; slurmstepd and the job's processes would outlive slurmd otherwise
    squeue -h -o %i | xargs -r scancel || true
    _wait_for 15 bash -c '[ -z "$(squeue -h -t R,CG -o %i)" ]' || true
  fi
  _stop_pidfile "$SLURM_DIR/slurmd.pid" slurmd
  _stop_pidfile "$SLURM_DIR/slurmctld.pid" slurmctld
  _stop_pidfile "$SLURM_DIR/munged.pid" munged
  # the config is ours only if we wrote it (first line); never delete a real cluster's config
  if [ -f "$SLURM_CONF_FILE" ] && _ours "$SLURM_CONF_FILE"; then
    rm -f "$SLURM_CONF_FILE"
  fi
  rm -rf "$SLURM_DIR"
}

slurm_status() {
  sinfo
  squeue -t all -o "%.8i %.12T %.20k %.10M %.6C %.8m %R"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    install) slurm_install ;;
    up) slurm_up ;;
    down) slurm_down ;;
    status) slurm_status ;;
    *)
      echo "usage: $0 install|up|down|status" >&2
      exit 2
      ;;
  esac
fi
