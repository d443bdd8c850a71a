#!/usr/bin/env bash
# The README's main command on a fresh clone: `make demo` in its check mode (the notebooks run
# headless against the simulator and their numbers are checked). PROFILE=debug reuses the test
# build's dependencies so that CI stays within its time. The other command, `make test`, is
# what CI itself runs on a fresh clone (.ci/run); running it here would recurse.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$root" "$tmp/beamtime"
# The sample data lives beside the project, as on CI.
ln -s "$root/../shared" "$tmp/shared"
cd "$tmp/beamtime"
make demo CHECK=1 PROFILE=debug DEMO_DIR="$tmp/demo"
