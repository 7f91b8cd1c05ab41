#!/usr/bin/env bash
# Bring up a throw-away single-node SLURM cluster (Debian bookworm, slurm-wlm 22.05, munge 0.5.15)
# on this machine, as root, for the tests that launch workers through sbatch (tests/it/cluster.rs).
#   usage:  bash .ci/slurm.sh            # start (installs packages if missing)
#           bash .ci/slurm.sh down       # stop the daemons it started (by PID files)
# Env: SLURM_DIR (state/logs, default /tmp/slurm), SLURM_CPUS (CPUs advertised for the node,
#      default $(nproc); may exceed the real core count, see SlurmdParameters=config_overrides).
set -euo pipefail
SLURM_DIR=${SLURM_DIR:-/tmp/slurm}
HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
T0=$(date +%s%N)
ts() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[slurm %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"; }

stop_pidfile() { # $1 = pid file
  if [ -s "$1" ]; then
    local p; p=$(cat "$1")
    if kill -0 "$p" 2>/dev/null; then
      kill "$p"   # slurmd ~1.3 s, slurmctld ~2 s, munged ~2 s to exit
      for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$p" 2>/dev/null && kill -9 "$p"
    fi
    rm -f "$1"
  fi
}

if [ "${1:-up}" = down ]; then
  stop_pidfile "$SLURM_DIR/slurmd.pid"
  stop_pidfile "$SLURM_DIR/slurmctld.pid"
  stop_pidfile /run/munge/munged.pid
  ts "stopped"
  exit 0
fi

# 1. packages (~10 s; no-install-recommends keeps it to 8 packages instead of 43 for slurm-wlm)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v srun >/dev/null \
   || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  ts "packages installed"
fi

# 2. munge (the Debian package's postinst already generated /etc/munge/munge.key)
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key && chmod 0755 /run/munge
if ! { [ -s /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; }; then
  runuser -u munge -- /usr/sbin/munged   # forks into the background, writes /run/munge/munged.pid
fi
munge -n | unmunge >/dev/null
ts "munged up (pid $(cat /run/munge/munged.pid))"

# 3. slurm.conf: one node named after the host, no cgroups, no accounting database
CPUS=${SLURM_CPUS:-$(nproc)}
MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
mkdir -p "$SLURM_DIR/ctld" "$SLURM_DIR/d" "$SLURM_DIR/log" /etc/slurm
cat > "$CONF" <<EOF
ClusterName=ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$SLURM_DIR/ctld
SlurmdSpoolDir=$SLURM_DIR/d
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=30
KillWait=5
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
ts "slurm.conf written (node $HOST, CPUs=$CPUS, RealMemory=$MEM)"

# 4. daemons (both fork into the background and write their PID files). -c: ignore old state.
stop_pidfile "$SLURM_DIR/slurmd.pid"
stop_pidfile "$SLURM_DIR/slurmctld.pid"
slurmctld -c
slurmd -c
for _ in $(seq 300); do
  if sinfo -h -n "$HOST" -o '%T' 2>/dev/null | grep -qx 'idle'; then break; fi
  sleep 0.1
done
if ! sinfo -h -n "$HOST" -o '%T' | grep -qx 'idle'; then
  echo "node did not become idle" >&2; sinfo -N -l >&2 || true
  tail -20 "$SLURM_DIR/log/slurmctld.log" "$SLURM_DIR/log/slurmd.log" >&2 || true
  exit 1
fi
ts "slurmctld (pid $(cat "$SLURM_DIR/slurmctld.pid")) and slurmd (pid $(cat "$SLURM_DIR/slurmd.pid")) up; node idle"
srun -N1 -n1 true   # end-to-end check (~0.15 s). The first sbatch job after a start waits ~3 s for a
                    # scheduling pass; later ones start in ~0.7 s with batch_sched_delay=0.
ts "srun works"
sinfo
