//! Oracles shared by the detector tests, written from the spec (never from the code under test).

/// numpy's median of float32 values (§3.7): middle value, or f32(a + b) / 2.
pub fn oracle_median(mut v: Vec<f32>) -> f32 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The §3.7 table for one panel: bit 4 per (row half × bank) block needing ≥ npix_min good
/// pixels, bit 1 per row of each bank and bit 2 per column of each half needing > npix_min;
/// |median| < cormax; only good selected pixels are used and corrected.
/// Returns how many medians were (subtracted, over cormax, short of pixels).
#[allow(clippy::too_many_arguments)]
pub fn oracle_common_mode(arrf: &mut [f32], good: &[bool], rows: usize, cols: usize, nb: usize, mode: u32, cormax: f32, npix_min: usize) -> [usize; 3] {
    let h = rows / 2;
    let w = cols / nb;
    let mut counts = [0usize; 3];
    let mut fix = |idx: Vec<usize>, arrf: &mut [f32], strict: bool| {
        let sel: Vec<usize> = idx.into_iter().filter(|&i| good[i]).collect();
        let ok = if strict { sel.len() > npix_min } else { sel.len() >= npix_min && !sel.is_empty() };
        if !ok {
            counts[2] += 1;
            return;
        }
        let m = oracle_median(sel.iter().map(|&i| arrf[i]).collect());
        if m.abs() < cormax {
            counts[0] += 1;
            for i in sel {
                arrf[i] -= m;
            }
        } else {
            counts[1] += 1;
        }
    };
    if mode & 4 != 0 {
        for r0 in [0, h] {
            for b in 0..nb {
                let idx = (r0..r0 + h).flat_map(|r| (b * w..b * w + w).map(move |c| r * cols + c)).collect();
                fix(idx, arrf, false);
            }
        }
    }
    if mode & 1 != 0 {
        for b in 0..nb {
            for r in 0..rows {
                fix((b * w..b * w + w).map(|c| r * cols + c).collect(), arrf, true);
            }
        }
    }
    if mode & 2 != 0 {
        for r0 in [0, h] {
            for c in 0..cols {
                fix((r0..r0 + h).map(|r| r * cols + c).collect(), arrf, true);
            }
        }
    }
    counts
}
