"""psana's Jungfrau 0.5M test file, constants for it written by numpy in psana's calib-dir layout
(NDArrIO text), and the spec's Jungfrau formula (shared/spec/calibration.md §3.1, mask §4) in
numpy float32: the oracle of the calibration tests of the CLI and the kernel."""
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILE = ROOT.parent / "shared" / "data" / "xtc2" / "detector" / "test_jungfrau05M_calib.xtc2"
SHAPE = (3, 1, 512, 1024)


def write_ndarrio(path, array, fmt):
    """psana's NDArrIO text: header comments, then rows of the last axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"SHAPE       ({','.join(map(str, array.shape))})\nDATATYPE    {array.dtype}"
    np.savetxt(path, array.reshape(-1, array.shape[-1]), fmt=fmt, header=header)


def write_constants(root):
    """Pedestals, offsets, gains and status for run 7 under `root`; returns them."""
    rng = np.random.default_rng(15)
    # Binary fractions, so the text holds the exact float32 values.
    peds = (np.array([1500, 11000, 13500])[:, None, None, None] + rng.integers(0, 4000, SHAPE) * 0.25).astype(np.float32)
    offset = (rng.integers(0, 200, SHAPE) * 0.125 - 10).astype(np.float32)
    gain = (np.array([40, -1.5, -0.12])[:, None, None, None] * (1 + rng.integers(0, 1000, SHAPE) / 1024)).astype(np.float32)
    gain[rng.random(SHAPE) < 1e-3] = 0  # factor 0, not inf
    status = np.where(rng.random(SHAPE) < 0.01, np.uint64(1) << rng.integers(0, 64, SHAPE).astype(np.uint64), np.uint64(0))
    det = root / "Jungfrau::CalibV1" / "jungfrau"
    write_ndarrio(det / "pedestals" / "0-end.data", peds, "%.9g")
    write_ndarrio(det / "pixel_offset" / "0-end.data", offset, "%.9g")
    write_ndarrio(det / "pixel_gain" / "0-end.data", gain, "%.9g")
    write_ndarrio(det / "pixel_status" / "0-end.data", status, "%d")
    # Valid from run 8 on: run 7 must not take it (psana's file choice).
    write_ndarrio(det / "pedestals" / "8-end.data", np.full(SHAPE, 1e6, np.float32), "%.9g")
    return peds, offset, gain, status


def jungfrau_calib(raw, peds, offset, gain, status):
    """psana's calib of one (1, 512, 1024) frame: gain code 00/01/11 → range 0/1/2, 10 → 0."""
    code = raw >> 14
    rng = np.select([code == 0, code == 1, code == 3], [0, 1, 2], 0)
    mask = np.all(status == 0, axis=0).astype(np.float32)
    po = (peds + offset)
    with np.errstate(divide="ignore"):
        gm = np.where(gain != 0, np.float32(1) / gain, np.float32(0)).astype(np.float32) * mask
    pick = lambda a: np.take_along_axis(a, rng[None], axis=0)[0]  # noqa: E731
    out = ((raw & 0x3FFF).astype(np.float32) - pick(po)) * pick(gm)
    return np.where(code == 2, np.float32(0), out).astype(np.float32)


def frames(table, column):
    """The (timestamps, frames) of a pyarrow table's list column, in timestamp order."""
    t = table.sort_by("timestamp")
    values = t.column(column).combine_chunks().flatten().to_numpy()
    return t.column("timestamp").to_pylist(), values.reshape(t.num_rows, 1, 512, 1024)


def image_row(r):
    """Spec §5.5's Jungfrau 0.5M default geometry: data row → image row (numpy, vectorised)."""
    r = np.asarray(r)
    return np.select([r <= 254, r == 255, r == 256], [513 - r, 258, 256], 511 - r)


def image_col(c):
    """Spec §5.5: data col → image col, 2-bin gaps after each 256-column ASIC."""
    c = np.asarray(c)
    return np.select(
        [c <= 254, c == 255, c == 256, c <= 510, c == 511, c == 512, c <= 766, c == 767, c == 768],
        [c, 256, 258, c + 2, 514, 516, c + 4, 772, 774],
        c + 6,
    )


def jungfrau_image(calib):
    """psana's det.raw.image of one module's (1, 512, 1024) calib: 514×1030, gaps 0 (no bin has
    four drawn neighbours, so no hole is filled)."""
    image = np.zeros((514, 1030), np.float32)
    rows, cols = np.meshgrid(np.arange(512), np.arange(1024), indexing="ij")
    image[image_row(rows), image_col(cols)] = calib[0]
    return image


def calibrated_run(run, tmp_path_factory, source=f"files={FILE}"):
    """The file's frames calibrated in numpy with constants written here: (calib dir, status,
    timestamps, calibrated frames (n,1,512,1024), images (n,514,1030)). `run` runs `beamtime`."""
    import pyarrow.parquet

    root = tmp_path_factory.mktemp("calib")
    peds, offset, gain, status = write_constants(root)
    out = tmp_path_factory.mktemp("raw") / "raw.parquet"
    run("run", "--source", source, "--sql", "SELECT timestamp, jungfrau.raw.raw AS r FROM events", "-o", str(out))
    ts, raw = frames(pyarrow.parquet.read_table(out), "r")
    calib = np.stack([jungfrau_calib(raw[k], peds, offset, gain, status) for k in range(len(ts))])
    images = np.stack([jungfrau_image(c) for c in calib])
    return root, status, ts, calib, images
