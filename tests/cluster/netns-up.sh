#!/usr/bin/env bash
# Two fake hosts for multi-host tests (tests/cli/test_multihost.py): network namespaces bt-h1
# (10.231.17.1) and bt-h2 (10.231.17.2), each with a veth on the bridge bt-br17. The root
# namespace gets no address on the bridge (nothing of the host's own networking changes); the
# namespaces share the filesystem, so the same paths are readable on both "hosts".
# Idempotent: what exists is kept (a half-made setup is torn down first). Needs root and `ip`.
# Every check has a deadline; exit status non-zero with a message when something is missing,
# 77 when namespaces cannot be made here (no CAP_SYS_ADMIN).
set -u
export PATH=$PATH:/usr/sbin:/sbin
BR=bt-br17
NET=10.231.17
HOSTS="1 2"
fail() { echo "netns-up.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (ip netns add)"
command -v ip >/dev/null || fail "no ip command (iproute2)"
ip netns list >/dev/null 2>&1 || fail "ip netns is not available"

ready() {
  ip link show "$BR" >/dev/null 2>&1 || return 1
  for i in $HOSTS; do
    ip netns exec "bt-h$i" true 2>/dev/null || return 1
    ip -n "bt-h$i" -o -4 addr show dev "bt-h$i-v" 2>/dev/null | grep -q "$NET.$i/24" || return 1
    ip -n "bt-h$i" link show "bt-h$i-v" 2>/dev/null | grep -q 'state UP\|LOWER_UP' || return 1
  done
}

if ! ready; then
  # Half-made (or not there): start from nothing.
  bash "$(dirname "$0")/netns-down.sh" || fail "netns-down.sh failed"
  ip link add "$BR" type bridge || fail "cannot add bridge $BR"
  ip link set "$BR" up || fail "cannot bring $BR up"
  for i in $HOSTS; do
    ns=bt-h$i
    if ! err=$(ip netns add "$ns" 2>&1); then
      # Root without the capability (an unprivileged container): 77 = not available here.
      case "$err" in *"not permitted"*) echo "netns-up.sh: ip netns add $ns: $err" >&2; exit 77 ;; esac
      fail "cannot add namespace $ns: $err"
    fi
    # bt-hN-v goes into the namespace, bt-hN-b stays on the bridge.
    ip link add "$ns-v" type veth peer name "$ns-b" || fail "cannot add veth $ns-v"
    ip link set "$ns-v" netns "$ns" || fail "cannot move $ns-v into $ns"
    ip link set "$ns-b" master "$BR" && ip link set "$ns-b" up || fail "cannot attach $ns-b to $BR"
    ip -n "$ns" addr add "$NET.$i/24" dev "$ns-v" || fail "cannot address $ns-v"
    ip -n "$ns" link set "$ns-v" up && ip -n "$ns" link set lo up || fail "cannot bring up links in $ns"
  done
fi

# Each namespace reaches the other over TCP (a listener in bt-h2, a client in bt-h1), 10 s at most.
check() {
  timeout 10 ip netns exec bt-h2 python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.settimeout(8)
s.bind((sys.argv[1], 0)); s.listen(1); print(s.getsockname()[1], flush=True)
c, a = s.accept(); c.sendall(b"pong " + a[0].encode()); c.close()' "$NET.2" > "$tmp/port" &
  local srv=$! port=""
  for _ in $(seq 50); do port=$(cat "$tmp/port" 2>/dev/null); [ -n "$port" ] && break; sleep 0.1; done
  [ -n "$port" ] || { kill $srv 2>/dev/null; wait $srv; return 1; }
  local got
  got=$(timeout 10 ip netns exec bt-h1 python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); print(s.recv(100).decode())' "$NET.2" "$port")
  wait $srv
  [ "$got" = "pong $NET.1" ]
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for attempt in 1 2 3; do
  check && { echo "netns-up.sh: bt-h1 ($NET.1) and bt-h2 ($NET.2) on $BR"; exit 0; }
  sleep 0.5   # a fresh bridge port may need a moment (forwarding state)
done
fail "bt-h1 cannot reach bt-h2 over TCP on $BR"
