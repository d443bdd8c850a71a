"""Independent oracle of psana2's `smalldata` HDF5 output (layout: docs/smalldata-h5.md).

Built from the rules of psana2's smalldata (SRV part files + joined file of virtual datasets),
never from beamtime's output. Needs numpy and h5py only.

    write_expected(dir, name, events_by_rank, summaries=None) -> {'parts': [...], 'joined': path}
    compare(path_expected, path_got) -> list of human-readable differences ([] = same)

An event is a dict: {'timestamp': int, 'a': {'b': 1.5}, 'img': np.array(...), ...}; nested
dicts are flattened with '/'. The reserved key 'align_group' puts the event's data in that
group (own `<group>/timestamp`). An event may also be a list of such dicts: successive
`smd.event()` calls with the same timestamp (timestamp taken from the first), merged like psana.
`events_by_rank` is a list (index = SRV rank = part number) or a dict {rank: events}; ranks
absent from a dict have no part file (psana skips a missing part with a warning).
"""
import os
import sys
import tempfile

import h5py
import numpy as np

MISSING_INT = -99999
MISSING_FLOAT = np.nan
DEFAULT_GROUP = "default"
ALIGN_GROUP = "align_group"
DEFAULT_CACHE_SIZE = 1000  # cache_size defaults to batch_size, whose default is 1000


def flatten(d, parent=""):
    """Nested dicts -> {'a/b': value}; keys go through str()."""
    out = {}
    for k, v in d.items():
        key = f"{parent}/{k}" if parent else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def missing_value(dtype):
    """-99999 for every integer dtype (signed or not), NaN for every float dtype, else an error."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return MISSING_INT
    if dtype.kind == "f":
        return MISSING_FLOAT
    raise ValueError(f"{dtype} :: no missing value in psana2 smalldata (bool/complex/str)")


def _filled(shape, dtype, value):
    """An array of `value`; -99999 into a narrow/unsigned integer wraps (C cast), as psana did
    under numpy 1.x (numpy 2 raises OverflowError there: see the doc's ambiguity note)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" and isinstance(value, int):
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            return np.full(shape, np.int64(value)).astype(dtype)
    out = np.empty(shape, dtype=dtype)
    out.fill(value)
    return out


def _first_value_info(name, value):
    """(shape, dtype) of a dataset from its first value."""
    if type(value) is int:
        return (), np.dtype("i8")
    if type(value) is float:
        return (), np.dtype("f8")
    if hasattr(value, "dtype"):
        shape = tuple(np.shape(value))
        if shape == (0,):
            raise ValueError(f"dataset {name} has illegal shape (0,)")
        return shape, np.dtype(value.dtype)
    raise TypeError(f"dataset {name}: type {type(value).__name__} not storable")


def _is_var(name):
    return any(p.startswith("var_") for p in name.split("/"))


def _merge_event(event):
    """One handled event: {group: {name: value, 'timestamp': ts}} like psana's batch entry."""
    calls = event if isinstance(event, list) else [event]
    merged, ts = {}, None
    for call in calls:
        call = dict(call)
        if ts is None:
            ts = call.get("timestamp")
            if type(ts) is not int:
                raise ValueError("an event needs an int 'timestamp'")
        group = call.pop(ALIGN_GROUP, DEFAULT_GROUP)
        call.pop("timestamp", None)
        data = flatten(call)
        if group not in merged:
            merged[group] = {}
            data["timestamp"] = ts
        merged[group].update(data)
    return merged


class _Part:
    """What one SRV rank's Server accumulates."""

    def __init__(self):
        self.dsets = {}  # group -> {name: (shape, dtype)}
        self.rows = {}  # group -> {name: [row arrays]}
        self.seen = {}  # group -> events handled

    def _append(self, group, name, value):
        shape, dtype = self.dsets[group][name]
        row = np.empty(shape, dtype=dtype)
        row[...] = value  # numpy assignment into the first dtype, as the server cache does
        self.rows[group][name].append(row)

    def handle(self, event):
        for group, data in _merge_event(event).items():
            dsets = self.dsets.setdefault(group, {})
            self.rows.setdefault(group, {})
            self.seen.setdefault(group, 0)
            to_backfill = list(dsets)
            for name, value in data.items():
                if _is_var(name):
                    raise NotImplementedError(f"var_ (ragged) key {name} is not modelled")
                if name not in dsets:
                    dsets[name] = _first_value_info(name, value)
                    shape, dtype = dsets[name]
                    # events of this part before the key appeared: 0, not the missing value
                    self.rows[group][name] = [_filled(shape, dtype, 0) for _ in range(self.seen[group])]
                else:
                    to_backfill.remove(name)
                self._append(group, name, value)
            for name in to_backfill:
                shape, dtype = dsets[name]
                self.rows[group][name].append(_filled(shape, dtype, missing_value(dtype)))
            self.seen[group] += 1

    def write(self, path, cache_size):
        with h5py.File(path, "w", libver="latest") as f:
            for group, dsets in self.dsets.items():
                for name, (shape, dtype) in dsets.items():
                    full = name if group == DEFAULT_GROUP else f"{group}/{name}"
                    rows = self.rows[group][name]
                    ds = f.create_dataset(full, (0,) + shape, maxshape=(None,) + shape,
                                          dtype=dtype, chunks=(cache_size,) + shape)
                    ds.resize((len(rows),) + shape)
                    ds[...] = np.stack(rows)


def part_filename(name, rank):
    return "%s_part%d.h5" % (name.replace(".h5", ""), rank)


def _write_summaries(fh, summaries):
    for key, value in flatten(summaries).items():
        if value is not None:
            fh[key] = value


def _join(joined_path, part_paths, opened_before):
    """psana's join_files: one virtual dataset per dataset path of any part."""
    infos = []
    for p in part_paths:
        found = {}
        with h5py.File(p, "r") as f:
            f.visititems(lambda n, o: found.__setitem__(o.name, (o.dtype, o.shape))
                         if isinstance(o, h5py.Dataset) else None)
        infos.append(found)
    names = sorted(set().union(*infos)) if infos else []
    with h5py.File(joined_path, "r+" if opened_before else "w", libver="latest") as out:
        for dname in names:
            total, dtype, shape = 0, None, None
            for found in infos:
                if dname in found:
                    dtype, shape = found[dname]
                    total += shape[0]
                elif "/timestamp" in found:
                    total += found["/timestamp"][1][0]
            layout = h5py.VirtualLayout(shape=(total,) + shape[1:], dtype=dtype)
            at = 0
            for p, found in zip(part_paths, infos):
                if dname in found:
                    n = found[dname][1][0]
                    layout[at:at + n, ...] = h5py.VirtualSource(p, dname, shape=found[dname][1])
                    at += n
                elif "/timestamp" in found:
                    at += found["/timestamp"][1][0]
            out.create_virtual_dataset(dname, layout, fillvalue=missing_value(dtype))


def write_expected(dir, name, events_by_rank, summaries=None, cache_size=DEFAULT_CACHE_SIZE,
                   serial=False):
    """Write what psana2 would: part files `<name>_part<N>.h5` (one per SRV rank) and the
    joined `<name>` (".h5" appended when absent) of virtual datasets plus summary datasets.
    serial=True: psana with one MPI rank, a single ordinary file, no parts."""
    fname = name if name.endswith(".h5") else name + ".h5"
    joined = os.path.join(dir, fname)
    if isinstance(events_by_rank, dict):
        ranks = dict(events_by_rank)
    else:
        ranks = dict(enumerate(events_by_rank))
    if serial:
        if len(ranks) != 1:
            raise ValueError("serial mode has exactly one writer")
        part = _Part()
        for ev in next(iter(ranks.values())):
            part.handle(ev)
        part.write(joined, cache_size)
        if summaries:
            with h5py.File(joined, "r+", libver="latest") as f:
                _write_summaries(f, summaries)
        return {"parts": [], "joined": joined}
    n_srv = max(ranks) + 1 if ranks else 0
    parts = []
    for rank in range(n_srv):
        if rank not in ranks:
            continue
        part = _Part()
        for ev in ranks[rank]:
            part.handle(ev)
        path = os.path.join(dir, part_filename(fname, rank))
        part.write(path, cache_size)
        parts.append(path)
    opened = False
    if summaries:  # save_summary (before done()) creates the joined file
        with h5py.File(joined, "w", libver="latest") as f:
            _write_summaries(f, summaries)
        opened = True
    _join(joined, parts, opened)
    return {"parts": parts, "joined": joined}


# ---------------------------------------------------------------------------- comparison

def _tree(f):
    groups, dsets = set(), {}

    def visit(n, o):
        if isinstance(o, h5py.Dataset):
            dsets[n] = o
        else:
            groups.add(n)
    f.visititems(visit)
    return groups, dsets


def _sources(ds, full_paths):
    out = []
    for m in ds.virtual_sources():
        try:
            vb = m.vspace.get_select_bounds()
        except Exception:
            vb = None
        try:
            sb = m.src_space.get_select_bounds()
        except Exception:
            sb = None
        fn = m.file_name if full_paths else os.path.basename(m.file_name)
        out.append((vb, fn, m.dset_name, sb))
    return out


def _values_equal(a, b):
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return np.array_equal(a, b, equal_nan=True)
    return np.array_equal(a, b)


def _first_diff(a, b):
    if a.shape != b.shape or a.ndim == 0:
        return f"expected {a!r}, got {b!r}"
    same = a == b
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        same = same | (np.isnan(a) & np.isnan(b))
    bad = ~same
    idx = tuple(int(i[0]) for i in np.nonzero(bad))
    return f"{int(bad.sum())} element(s) differ, first at {idx}: expected {a[idx]!r}, got {b[idx]!r}"


def _attrs_diff(where, ea, ga):
    out = []
    for k in sorted(set(ea) | set(ga)):
        if k not in ga:
            out.append(f"{where}: attribute {k!r} missing")
        elif k not in ea:
            out.append(f"{where}: unexpected attribute {k!r}")
        elif not _values_equal(np.asarray(ea[k]), np.asarray(ga[k])):
            out.append(f"{where}: attribute {k!r} expected {ea[k]!r}, got {ga[k]!r}")
    return out


def compare(path_expected, path_got, check_chunks=True, full_source_paths=False):
    """Differences between two smalldata files (part or joined), as sentences; [] = same.
    Checks groups, datasets, shape, dtype, maxshape, chunks, values (NaN = NaN, -99999 exact),
    attributes, and for virtual datasets their fill value and source mappings (row ranges,
    source file basename or full path, source dataset, source selection)."""
    diffs = []
    with h5py.File(path_expected, "r") as fe, h5py.File(path_got, "r") as fg:
        eg, ed = _tree(fe)
        gg, gd = _tree(fg)
        diffs += [f"group /{g} missing" for g in sorted(eg - gg)]
        diffs += [f"unexpected group /{g}" for g in sorted(gg - eg)]
        diffs += [f"dataset /{d} missing" for d in sorted(set(ed) - set(gd))]
        diffs += [f"unexpected dataset /{d}" for d in sorted(set(gd) - set(ed))]
        diffs += _attrs_diff("/", fe.attrs, fg.attrs)
        for g in sorted(eg & gg):
            diffs += _attrs_diff(f"/{g}", fe[g].attrs, fg[g].attrs)
        for name in sorted(set(ed) & set(gd)):
            e, g = ed[name], gd[name]
            w = f"/{name}"
            diffs += _attrs_diff(w, e.attrs, g.attrs)
            if e.is_virtual != g.is_virtual:
                diffs.append(f"{w}: expected {'virtual' if e.is_virtual else 'ordinary'} dataset, "
                             f"got {'virtual' if g.is_virtual else 'ordinary'}")
            if e.dtype != g.dtype:
                diffs.append(f"{w}: dtype expected {e.dtype.str}, got {g.dtype.str}")
            if e.shape != g.shape:
                diffs.append(f"{w}: shape expected {e.shape}, got {g.shape}")
            if e.maxshape != g.maxshape:
                diffs.append(f"{w}: maxshape expected {e.maxshape}, got {g.maxshape}")
            if check_chunks and not e.is_virtual and e.chunks != g.chunks:
                diffs.append(f"{w}: chunks expected {e.chunks}, got {g.chunks}")
            if e.is_virtual and g.is_virtual:
                ef, gf = np.asarray(e.fillvalue), np.asarray(g.fillvalue)
                if not _values_equal(ef, gf):
                    diffs.append(f"{w}: fill value expected {e.fillvalue!r}, got {g.fillvalue!r}")
                es, gs = _sources(e, full_source_paths), _sources(g, full_source_paths)
                if es != gs:
                    diffs.append(f"{w}: virtual sources expected {es}, got {gs}")
            try:
                ev, gv = e[()], g[()]
            except Exception as exc:  # e.g. a virtual source that cannot be read
                diffs.append(f"{w}: cannot read values ({exc})")
                continue
            ev, gv = np.asarray(ev), np.asarray(gv)
            if e.shape == g.shape and not _values_equal(ev, gv):
                diffs.append(f"{w}: values differ: {_first_diff(ev, gv)}")
    return diffs


def compare_run(dir_expected, dir_got, name, n_parts, **kw):
    """compare() for the joined file and every part `<name>_part<N>.h5`, N < n_parts."""
    fname = name if name.endswith(".h5") else name + ".h5"
    out = []
    for f in [part_filename(fname, r) for r in range(n_parts)] + [fname]:
        out += [f"{f}: {d}" for d in compare(os.path.join(dir_expected, f), os.path.join(dir_got, f), **kw)]
    return out


def _example():
    img = np.arange(6, dtype=np.uint16).reshape(2, 3)
    return [
        [  # SRV rank 0
            {"timestamp": 10, "a": {"b": 1.5}, "n": 3, "img": img},
            {"timestamp": 12, "n": 4},  # a/b -> NaN, img -> -99999 wrapped to uint16
            {"timestamp": 14, "a": {"b": 2.5}, "late": np.float32(7)},  # n -> -99999; late: 0, 0, 7
        ],
        [  # SRV rank 1: never has 'late'; its rows read the VDS fill value
            {"timestamp": 11, "a": {"b": -1.0}, "n": 5, "img": img + 1},
            [{"timestamp": 13, "n": 6}, {"timestamp": 13, "align_group": "grp", "x": 1}],
        ],
    ]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        out = write_expected(d, "example.h5", _example(), summaries={"sums": {"n": np.array([18])}})
        diffs = []
        for p in out["parts"] + [out["joined"]]:
            diffs += compare(p, p)
        with h5py.File(out["joined"], "r") as f:
            for k in ("timestamp", "a/b", "n", "late", "img"):
                print(f"{k:10s} virtual={f[k].is_virtual} {f[k].dtype} {f[k][()].tolist()}")
            print("grp/x", f["grp/x"][()].tolist(), "sums/n", f["sums/n"][()].tolist())
        if diffs:
            print("\n".join(diffs))
            sys.exit(1)
        print("self-check ok")
