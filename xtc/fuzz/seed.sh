#!/usr/bin/env bash
# Regenerates the fuzz seed corpora from the sample runs (shared/data/xtc2):
#   corpus/dgram/  every datagram on its own; each Configure followed by a few datagrams of
#                  each service (a datagram is decoded only after its stream's Configure);
#                  whole files (or their first datagrams, up to MAX_LEN bytes)
#   corpus/parse/  whole files (or their first datagrams, up to MAX_LEN bytes); Configure pairs
#   corpus/run/    each sample run with small data, packed as fuzz_targets/run.rs expects
#                  (u32 LE length + bytes for s000 smd, s000 bigdata, s001 smd, s001 bigdata,
#                  and the c001 chunk), plus its first stream alone
# Seeds are named by their SHA-1, as libFuzzer names its own corpus entries.
# Usage: ./seed.sh [DATA_DIR]   (default: ../../../shared/data/xtc2 from this directory)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${1:-$here/../../../shared/data/xtc2}"
max_len="${MAX_LEN:-300000}"
[ -d "$data" ] || { echo "no sample data at $data" >&2; exit 1; }
mkdir -p "$here/corpus/dgram" "$here/corpus/parse" "$here/corpus/run"
python3 - "$data" "$here/corpus" "$max_len" <<'PY'
import hashlib, os, struct, sys

data, out, max_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
PER_SERVICE = 3  # Configure + datagram pairs per service and file
count = {"dgram": 0, "parse": 0, "run": 0}

def seed(target, b):
    p = os.path.join(out, target, hashlib.sha1(b).hexdigest())
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.write(b)
        count[target] += 1

def dgrams(b):
    at = 0
    while at + 24 <= len(b):
        size = 12 + struct.unpack_from("<I", b, at + 20)[0]
        if size < 24 or at + size > len(b):
            break
        yield b[at:at + size]
        at += size

for root, _, files in sorted(os.walk(data)):
    for name in sorted(files):
        if not name.endswith(".xtc2"):
            continue
        b = open(os.path.join(root, name), "rb").read()
        ds = list(dgrams(b))
        prefix = b""
        for d in ds:
            if len(prefix) + len(d) > max_len:
                break
            prefix += d
        for t in ("dgram", "parse"):
            seed(t, b if len(b) <= max_len else prefix)
        configure, per_service = None, {}
        for d in ds:
            seed("dgram", d)
            service = (struct.unpack_from("<I", d, 8)[0] >> 24) & 0xF
            if service == 2:  # Configure
                configure = d
                continue
            n = per_service.get(service, 0)
            if configure is not None and n < PER_SERVICE and len(configure) + len(d) <= max_len:
                per_service[service] = n + 1
                for t in ("dgram", "parse"):
                    seed(t, configure + d)

def pack(parts):
    return b"".join(struct.pack("<I", len(p)) + p for p in parts)

for run in sorted(os.listdir(data)):
    d = os.path.join(data, run)
    smd = os.path.join(d, "smalldata")
    if not os.path.isdir(smd):
        continue
    def read(path):
        return open(path, "rb").read() if os.path.exists(path) else b""
    parts = []
    for s in ("s000", "s001"):
        parts.append(read(os.path.join(smd, f"xpptut15-r0014-{s}-c000.smd.xtc2")))
        parts.append(read(os.path.join(d, f"xpptut15-r0014-{s}-c000.xtc2")))
    chunk = read(os.path.join(d, "data-r0001-s000-c001.xtc2"))
    if chunk:
        parts.append(chunk)
    while parts and not parts[-1]:
        parts.pop()
    for p in (parts, parts[:2]):
        b = pack(p)
        if len(b) <= max_len:
            seed("run", b)
print(f"new seeds written: {count['dgram']} dgram, {count['parse']} parse, {count['run']} run (in {out})")
PY
