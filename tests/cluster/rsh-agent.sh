#!/bin/sh
# OpenMPI's rsh agent for the fake hosts of netns-up.sh (`--mca plm_rsh_agent THIS`): mpirun calls
# `THIS <host> <orted command words…>` like ssh; the words carry quoting meant for a remote shell,
# so they are joined and run by `sh -c` (as ssh does) inside the host's namespace, in a UTS
# namespace of its own so that the ranks' host name is bt-hN.
# BT_NODE_LOCAL_TMP=1 (passed on by mpirun): the host also gets a mount namespace with an empty
# tmpfs over $TMPDIR, like a cluster node's local /tmp (what the driver writes there is not seen).
host="$1"; shift
case "$host" in
  10.231.17.1|bt-h1) ns=bt-h1 ;;
  10.231.17.2|bt-h2) ns=bt-h2 ;;
  *) echo "rsh-agent.sh: unknown host $host" >&2; exit 255 ;;
esac
if [ "${BT_NODE_LOCAL_TMP:-}" = 1 ]; then
  exec ip netns exec "$ns" unshare --uts --mount sh -c "mount -t tmpfs bt-tmp '${TMPDIR:-/tmp}' && hostname $ns; $*"
fi
exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns; $*"
