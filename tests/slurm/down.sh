#!/usr/bin/env bash
# Stops what tests/slurm/up.sh started, for sure: `scontrol shutdown` (slurmctld and slurmd end
# cleanly), then SIGTERM and at last SIGKILL by the recorded PIDs after deadlines; then munged.
# Idempotent: nothing running is fine. Leaves $BEAMTIME_SLURM_DIR (its logs) in place.
D=${BEAMTIME_SLURM_DIR:-/tmp/beamtime-slurm}
export SLURM_CONF=$D/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin   # the daemons live in sbin, which a user's PATH may lack
# The recorded PIDs, only while they still are our daemons (their command line names $D): a stale
# pid file must not make us kill a process that reuses the number.
pids() { for n in "$@"; do [ -s "$D/$n.bgpid" ] && p=$(cat "$D/$n.bgpid") && grep -qs "$D" /proc/$p/cmdline && echo $p; done; }
# A zombie counts as gone: the daemons' parent is init, which may take a second to reap them.
running() { for p in "$@"; do [ -r /proc/$p/stat ] && [ "$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null)" != Z ] && return 0; done; return 1; }
# wait_gone SECONDS PIDS…: true once none of PIDS runs, false at the deadline.
wait_gone() { local n=$(( $1 * 10 )); shift; for _ in $(seq 1 $n); do running "$@" || return 0; sleep 0.1; done; ! running "$@"; }
# stop SECONDS PIDS…: SIGTERM, then SIGKILL at the deadline.
stop() {
  local t=$1; shift
  running "$@" || return 0
  kill "$@" 2>/dev/null; wait_gone "$t" "$@" && return 0
  echo "down.sh: SIGKILL to $*" >&2; kill -9 "$@" 2>/dev/null; wait_gone 5 "$@"
}

slurm=$(pids slurmctld slurmd)
if [ -n "$(pids slurmctld)" ] && running $(pids slurmctld); then
  # Jobs and their steps first, then both daemons; each command and wait with a deadline.
  timeout 5 scancel --quiet --full --user="$(id -un)" 2>/dev/null
  timeout 5 scontrol shutdown >/dev/null 2>&1
  wait_gone 10 $slurm
fi
# Without a controller (it died, or shutdown did not do it): signals.
[ -n "$slurm" ] && stop 5 $slurm
# Job steps that outlived their slurmd: a slurmstepd whose environment names our config.
for p in $(pgrep -x slurmstepd); do
  grep -qs "$D" /proc/$p/environ && stop 5 "$p"
done
munge=$(pids munged)
[ -n "$munge" ] && stop 5 $munge
rm -f "$D"/*.bgpid "$D/munge.socket" "$D/munge.socket.lock"
true
