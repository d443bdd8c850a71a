#!/usr/bin/env bash
# A real one-node Slurm cluster on loopback for tests/cli/test_slurm.py: munged + slurmctld + slurmd,
# as root, everything (config, keys, sockets, state, logs) under $BEAMTIME_SLURM_DIR
# (default /tmp/beamtime-slurm), nothing in /etc or /run. Recipe: shared/design/cluster-here.md.
# Idempotent: when the cluster is already up it only prints. Prints `export SLURM_CONF=…` last;
# `eval "$(bash tests/slurm/up.sh | tail -1)"` sets it in the caller's shell. Stop: tests/slurm/down.sh.
set -euo pipefail
D=${BEAMTIME_SLURM_DIR:-/tmp/beamtime-slurm}
export SLURM_CONF=$D/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin   # the daemons live in sbin, which a user's PATH may lack
here=$(cd "$(dirname "$0")" && pwd)
# A daemon is up when its recorded PID runs with $D in its command line (not a reused PID).
alive() { [ -s "$D/$1.bgpid" ] && grep -qs "$D" "/proc/$(cat "$D/$1.bgpid")/cmdline"; }
idle() { [ "$(timeout 3 sinfo -h -o %T 2>/dev/null)" = idle ]; }

for d in munged slurmctld slurmd; do
  command -v $d >/dev/null || { echo "up.sh: $d is not installed (scripts/install-deps.sh installs slurm-wlm and munge)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "up.sh: run as root (slurmd starts job steps as their user)" >&2; exit 1; }

if alive munged && alive slurmctld && alive slurmd && idle; then
  echo "slurm already up"; echo "export SLURM_CONF=$SLURM_CONF"; exit 0
fi
# Half up (a daemon died, a previous run was killed): start again from nothing.
bash "$here/down.sh" >/dev/null 2>&1 || true

# munged must find its socket's directory searchable by all (0755) and the key readable by it only.
mkdir -p "$D"; chmod 755 "$D"
rm -rf "$D/state" "$D/spool" "$D/tmp" "$D"/*.log "$D"/*.out
mkdir -p "$D/state" "$D/spool" "$D/tmp"
# A key of our own (mungekey is munge >= 0.5.14; before, 1 KiB of random bytes is what it wrote).
[ -s "$D/munge.key" ] || mungekey --create --keyfile="$D/munge.key" 2>/dev/null \
  || (umask 077; head -c 1024 /dev/urandom > "$D/munge.key")
# Our own munged on our own socket: no clash with a site munged in /run/munge, no /etc/munge needed.
munged --foreground --socket="$D/munge.socket" --key-file="$D/munge.key" --pid-file="$D/munged.pid" \
  --seed-file="$D/munged.seed" --log-file="$D/munged.log" > "$D/munged.out" 2>&1 < /dev/null &
echo $! > "$D/munged.bgpid"

fail() {
  echo "up.sh: $1; the logs:" >&2
  for f in "$D"/*.out "$D"/*.log; do [ -s "$f" ] && { echo "== $f" >&2; tail -n 30 "$f" >&2; }; done
  bash "$here/down.sh" >&2 || true
  exit 1
}
# Every wait has a deadline: 10 s for munged, 20 s for the node to be idle.
for _ in $(seq 1 50); do [ -S "$D/munge.socket" ] && break; sleep 0.2; done
munge -S "$D/munge.socket" -n 2>/dev/null | unmunge -S "$D/munge.socket" >/dev/null 2>&1 || fail "munged did not answer within 10 s"

# The node is this host (slurmctld insists SlurmctldHost is its hostname) at 127.0.0.1. It claims at
# least 8 CPUs (config_overrides: trust the file, not the hardware) so that `srun -n 3` runs on a
# 2-core machine like mpirun --oversubscribe does. Ports off Slurm's defaults so that a site's
# daemons on this host are not disturbed. pmix puts its spmix_appdir_* under TmpFS.
NODE=$(hostname -s); CPUS=$(nproc); [ "$CPUS" -ge 8 ] || CPUS=8
cat > "$SLURM_CONF" <<CONF
ClusterName=beamtime
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge.socket
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
TmpFS=$D/tmp
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

# In the foreground (-D), backgrounded here, so that their PIDs are known for down.sh.
slurmctld -D -f "$SLURM_CONF" > "$D/slurmctld.out" 2>&1 < /dev/null & echo $! > "$D/slurmctld.bgpid"
slurmd -D -f "$SLURM_CONF" > "$D/slurmd.out" 2>&1 < /dev/null & echo $! > "$D/slurmd.bgpid"
# A wall-clock deadline (sinfo itself may wait for an unreachable controller); a daemon that died
# (a port in use, a bad config) fails at once.
deadline=$((SECONDS + 20))
until idle; do
  for n in slurmctld slurmd; do alive $n || fail "$n exited"; done
  [ $SECONDS -lt $deadline ] || fail "the node is not idle within 20 s ($(timeout 3 sinfo -h -o '%T %E' 2>&1 || true))"
  sleep 0.3
done
echo "slurm up: $(sinfo -h -o '%N %T %c CPUs')"
echo "export SLURM_CONF=$SLURM_CONF"
