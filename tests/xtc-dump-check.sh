#!/usr/bin/env bash
# `beamtime dump` against psana's reference reader on every sample in ../shared/data/xtc2:
# --json through shared/tools/xtc_dump_check.py (the JSON contract), and --format xtcreader
# byte for byte against the *.reference-dump.txt.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${BEAMTIME_SHARED:-$root/../shared}
bin=${BEAMTIME_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/beamtime/target}/debug/beamtime}
[ -x "$bin" ] || { echo "no beamtime binary at $bin (run cargo build)"; exit 1; }
pass=0; fail=0
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
while IFS= read -r ref; do
  xtc=${ref%.reference-dump.txt}.xtc2
  name=${xtc#"$shared/data/xtc2/"}
  if "$bin" dump --json "$xtc" >"$tmp/out.jsonl" 2>"$tmp/err" &&
     python3 "$shared/tools/xtc_dump_check.py" "$ref" "$tmp/out.jsonl" >"$tmp/check"; then
    echo "ok   json      $name: $(cat "$tmp/check" | head -1)"; pass=$((pass+1))
  else
    echo "FAIL json      $name"; cat "$tmp/check" "$tmp/err" 2>/dev/null | head -12; fail=$((fail+1))
  fi
  if "$bin" dump --format xtcreader "$xtc" >"$tmp/out.txt" 2>"$tmp/err" && cmp -s "$tmp/out.txt" "$ref"; then
    echo "ok   xtcreader $name: identical to the reference dump"; pass=$((pass+1))
  else
    echo "FAIL xtcreader $name"; diff "$tmp/out.txt" "$ref" | head -8; cat "$tmp/err"; fail=$((fail+1))
  fi
done < <(find "$shared/data/xtc2" -name '*.reference-dump.txt' | sort)
[ $((pass+fail)) -gt 0 ] || { echo "no reference dumps found under $shared/data/xtc2"; exit 1; }
echo "dump-check: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
