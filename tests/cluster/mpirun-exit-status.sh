#!/usr/bin/env bash
# Shows the OpenMPI behaviour that test_multihost.py's fault test meets, without beamtime:
# `mpirun --enable-recovery` with 4 ranks over the fake hosts (rank 0 on bt-h2, mpirun in bt-h1)
# where rank 0 returns STATUS (first argument, default 4) after MPI_Finalize. With 0 mpirun exits
# at once; with non-zero (OpenMPI 4.1.4) it never exits: cut at 15 s, exit 124.
# Needs netns-up.sh first, mpicc, root.
set -u
S=${1:-4}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
cat > "$W/x.c" <<'C'
#include <mpi.h>
#include <stdlib.h>
int main(int c, char **v) { int r; MPI_Init(&c, &v); MPI_Comm_rank(MPI_COMM_WORLD, &r); MPI_Finalize();
  return r == 0 ? atoi(getenv("S")) : 0; }
C
mpicc -o "$W/x" "$W/x.c" || exit 1
export S OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
start=$(date +%s%N)
timeout 15 ip netns exec bt-h1 unshare --uts sh -c "hostname bt-h1; exec mpirun -n 4 --rankfile $HERE/rankfile --enable-recovery \
  --mca plm_rsh_agent $HERE/rsh-agent.sh --mca btl tcp,self --mca btl_tcp_if_include 10.231.17.0/24 \
  --mca oob_tcp_if_include 10.231.17.0/24 $W/x" 2>&1 | grep -v 'PMIX ERROR'
rc=${PIPESTATUS[0]}
t=$(( ($(date +%s%N) - start) / 100000000 ))
echo "rank 0 returned $S: mpirun exited $rc after $((t / 10)).$((t % 10)) s"
exit $rc
