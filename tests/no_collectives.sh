#!/usr/bin/env bash
# The job must never call an MPI collective: one slow or dead rank would hang every other.
# Fails on any collective of rsmpi's API (or a raw MPI_ one) in the job's code.
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='\b(barrier|immediate_barrier|broadcast_into|immediate_broadcast_into|gather_into(_root)?|gather_varcount_into(_root)?|all_gather_into|all_gather_varcount_into|scatter_into(_root)?|scatter_varcount_into(_root)?|all_to_all_into|all_to_all_varcount_into|reduce_into(_root)?|all_reduce_into|reduce_scatter_block_into|scan_into|exclusive_scan_into|immediate_(all_)?(gather|reduce|scatter|all_to_all|scan|exclusive_scan)[a-z_]*|split_by_color|split_by_subgroup_collective|duplicate|MPI_(Barrier|Bcast|Gather|Gatherv|Allgather|Allgatherv|Scatter|Scatterv|Alltoall|Alltoallv|Reduce|Allreduce|Reduce_scatter|Scan|Exscan|Ibarrier|Ibcast|Ireduce|Iallreduce))\s*\('
if grep -rnE "$pattern" job/src; then
  echo "no_collectives: the job calls an MPI collective (above); use point-to-point messages" >&2
  exit 1
fi
# The check must see the job's MPI code at all (a moved file would make it pass vacuously).
grep -q "immediate_matched_probe" job/src/ranks/channel.rs || { echo "no_collectives: job/src/ranks/channel.rs not found or changed shape" >&2; exit 1; }
echo "no_collectives: job/src has no MPI collective"
