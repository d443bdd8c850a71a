#!/usr/bin/env bash
# Removes what tests/cluster/netns-up.sh made, for sure: every process inside the namespaces
# bt-h1 and bt-h2 (SIGTERM, SIGKILL after 3 s), the namespaces, the veths and the bridge.
# Idempotent: nothing there is fine. Touches only names starting with bt-h / bt-br17.
set -u
export PATH=$PATH:/usr/sbin:/sbin
BR=bt-br17
HOSTS="1 2"
running() { for p in "$@"; do [ -r /proc/$p/stat ] && [ "$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null)" != Z ] && return 0; done; return 1; }
inside() { for i in $HOSTS; do timeout 5 ip netns pids "bt-h$i" 2>/dev/null; done; }
pids=$(inside)
if [ -n "$pids" ]; then
  kill -CONT $pids 2>/dev/null; kill $pids 2>/dev/null
  for _ in $(seq 30); do running $pids || break; sleep 0.1; done
  pids=$(inside); [ -n "$pids" ] && { echo "netns-down.sh: SIGKILL to $pids" >&2; kill -9 $pids 2>/dev/null; }
  for _ in $(seq 50); do running $(inside) || break; sleep 0.1; done
fi
for i in $HOSTS; do
  ns=bt-h$i
  if ip netns list 2>/dev/null | grep -qw "$ns"; then
    timeout 10 ip netns del "$ns" || echo "netns-down.sh: cannot delete namespace $ns" >&2
  fi
  # The bridge end (gone with the namespace's end, normally).
  ip link show "$ns-b" >/dev/null 2>&1 && timeout 5 ip link del "$ns-b"
  ip link show "$ns-v" >/dev/null 2>&1 && timeout 5 ip link del "$ns-v"
done
ip link show "$BR" >/dev/null 2>&1 && timeout 5 ip link del "$BR"
left=""
for i in $HOSTS; do
  ip netns list 2>/dev/null | grep -qw "bt-h$i" && left="$left namespace bt-h$i"
  ip link show "bt-h$i-b" >/dev/null 2>&1 && left="$left link bt-h$i-b"
done
ip link show "$BR" >/dev/null 2>&1 && left="$left bridge $BR"
[ -z "$left" ] || { echo "netns-down.sh: still there:$left" >&2; exit 1; }
exit 0
