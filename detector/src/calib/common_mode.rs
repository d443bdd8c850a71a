//! psana's median common-mode correction (spec §3.7), applied to `raw − pedestal` of one panel
//! before the gain factor. Only selected good pixels are used and corrected.

use super::real::Real;

/// `cmpars = (alg, mode, cormax[, npix_min = 10])`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CommonMode {
    /// epix10ka: 7 selects the high/medium modes (FH, FM, AHL_H, AML_M); others use all good pixels.
    pub alg: i64,
    /// Bits: 4 per bank, 1 per row in each bank, 2 per column in each half; 0 = off.
    pub mode: u32,
    /// A median is subtracted only when `|median| < cormax`.
    pub cormax: f64,
    pub npix_min: usize,
}

impl CommonMode {
    /// From psana's parameter list, e.g. `[7, 1, 100]` or `[7, 7, 100, 10]`.
    pub fn from_params(p: &[f64]) -> Result<Self, String> {
        if p.len() < 3 {
            return Err(format!("common-mode parameters need (alg, mode, cormax[, npix_min]), got {p:?}"));
        }
        Ok(CommonMode {
            alg: p[0] as i64,
            mode: p[1] as u32,
            cormax: p[2],
            npix_min: p.get(3).map_or(10, |&n| n as usize),
        })
    }
}

/// One panel's layout for common mode: `rows × cols`, split in two row halves and `banks`
/// column banks (Jungfrau 16 of 64, epix10ka 8 of 48).
#[derive(Clone, Copy, Debug)]
pub struct PanelBanks {
    pub rows: usize,
    pub cols: usize,
    pub banks: usize,
}

/// Corrects `arrf` (`rows × cols`, row-major) in place; `selected[i]` marks pixels used and
/// corrected. Order: bit 4, then 1, then 2.
pub fn apply<T: Real>(cm: &CommonMode, panel: PanelBanks, arrf: &mut [T], selected: &[bool]) {
    let PanelBanks { rows, cols, banks } = panel;
    let half = rows / 2;
    let width = cols / banks;
    let mut values = Vec::with_capacity(rows.max(cols));
    // The median of the selected pixels at `cells`, if there are enough, subtracted from them.
    let mut correct = |cells: &mut dyn Iterator<Item = usize>, arrf: &mut [T], enough: &dyn Fn(usize) -> bool| {
        let cells: Vec<usize> = cells.filter(|&i| selected[i]).collect();
        if !enough(cells.len()) {
            return;
        }
        values.clear();
        values.extend(cells.iter().map(|&i| arrf[i]));
        let m = median(&mut values);
        if m.to_f64().abs() < cm.cormax {
            for &i in &cells {
                arrf[i] = arrf[i] - m;
            }
        }
    };
    let at_least = |n: usize| n >= cm.npix_min && n > 0;
    let more_than = |n: usize| n > cm.npix_min;
    if cm.mode & 4 != 0 {
        for h in [0..half, half..rows] {
            for b in 0..banks {
                let mut cells = h.clone().flat_map(|r| (b * width..(b + 1) * width).map(move |c| r * cols + c));
                correct(&mut cells, arrf, &at_least);
            }
        }
    }
    if cm.mode & 1 != 0 {
        for b in 0..banks {
            for r in 0..rows {
                let mut cells = (b * width..(b + 1) * width).map(|c| r * cols + c);
                correct(&mut cells, arrf, &more_than);
            }
        }
    }
    if cm.mode & 2 != 0 {
        for h in [0..half, half..rows] {
            for c in 0..cols {
                let mut cells = h.clone().map(|r| r * cols + c);
                correct(&mut cells, arrf, &more_than);
            }
        }
    }
}

/// numpy's median: the middle value, or `(a + b) / 2` of the two middle ones, in the values'
/// own precision (float32 for float32 data).
pub fn median<T: Real>(values: &mut [T]) -> T {
    let n = values.len();
    values.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / (T::ONE + T::ONE) }
}
