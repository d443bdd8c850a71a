"""The spec's epix10ka rules (shared/spec/calibration.md §3.2, mask §4) in numpy: a panel's
control bits from its raw 2.0.1 segment config, and the calib of raw frames with 7-mode
constants; the oracle of the epix10ka calibration tests of the CLI."""
import numpy as np


def epix10ka_cbits(asic_pixel_config, trbit):
    """Spec §3.2 (raw 2.0.1): one panel's control bits from its segment config — ASICs 2 and 1
    rotated by 180° on top, 3 and 0 below, `& 12`, trbit → bit 4 per ASIC quadrant."""
    a = np.asarray(asic_pixel_config, np.uint8).reshape(4, 176, 192)
    top = np.hstack([a[2, ::-1, ::-1], a[1, ::-1, ::-1]])
    bottom = np.hstack([a[3], a[0]])
    c = np.vstack([top, bottom]) & 12
    quadrant = {2: (slice(0, 176), slice(0, 192)), 1: (slice(0, 176), slice(192, 384)),
                3: (slice(176, 352), slice(0, 192)), 0: (slice(176, 352), slice(192, 384))}
    for asic, (rows, cols) in quadrant.items():
        if trbit[asic]:
            c[rows, cols] |= 16
    return c


def epix10ka_calib(raw, cbits, peds, gain, status):
    """Spec §3.2's calib of (nseg, 352, 384) raw: data bit 14 → control bit 5, the first matching
    gain-mode test picks the constants (none: pedestal 0, factor 1), mask = status of modes 0–4."""
    c = cbits | ((raw & 0x4000) >> 9).astype(np.uint8)
    tests = [(c & 28) == 28, (c & 28) == 12, (c & 12) == 8, (c & 60) == 16, (c & 60) == 0, (c & 60) == 48, (c & 60) == 32]
    index = np.select(tests, range(7), -1)
    pick = lambda a, none: np.where(index >= 0, np.take_along_axis(a, np.maximum(index, 0)[None], 0)[0], none)  # noqa: E731
    mask = np.all(status[:5] == 0, axis=0).astype(np.float32)
    factor = (np.float32(1) / gain).astype(np.float32)
    out = ((raw & 0x3FFF).astype(np.float32) - pick(peds, np.float32(0)).astype(np.float32)) * pick(factor, np.float32(1)).astype(np.float32)
    return (out * mask).astype(np.float32)
