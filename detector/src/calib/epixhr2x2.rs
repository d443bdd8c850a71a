//! epixhr2x2 (spec §3.3): the epix10ka's seven gain modes and formula (§3.2) on a `(288, 384)`
//! panel. Control bits: `asicPixelConfig` (110592 values already in panel order) `& 12`, trbit
//! (bit 4) per ASIC quadrant; the data's gain bit is 15 (`(raw & 0x8000) >> 10` → bit 5), data
//! bits `raw & 0x3fff` (bit 14 is wired to gain too and dropped). Common mode: row halves of
//! 144, 8 banks of 48 columns. The calibrator is `Epix10kaCalibrator` with this [`LAYOUT`].

use super::common_mode::PanelBanks;
use super::epix10ka::Layout;

pub const ROWS: usize = 288;
pub const COLS: usize = 384;
const HALF_ROWS: usize = ROWS / 2;
const HALF_COLS: usize = COLS / 2;

pub(crate) const LAYOUT: Layout = Layout { gain_bit: 15, banks: PanelBanks { rows: ROWS, cols: COLS, banks: 8 } };

/// psana's `cbits_config_epixhr2x2`: `asicPixelConfig & 12` shaped `(288, 384)`, then `| 16` in
/// the quadrant of each ASIC whose trbit is set — ASIC 1 top-left, 3 top-right, 0 bottom-left,
/// 2 bottom-right (rows 0–143 on top).
pub fn control_bits(asic_pixel_config: &[u8], trbit: &[u8; 4]) -> Result<Vec<u8>, String> {
    if asic_pixel_config.len() != ROWS * COLS {
        return Err(format!(
            "asicPixelConfig has {} values, expected 288×384 = {} (epixhr2x2)",
            asic_pixel_config.len(),
            ROWS * COLS
        ));
    }
    let mut cbits: Vec<u8> = asic_pixel_config.iter().map(|&v| v & 12).collect();
    for (r, row) in cbits.chunks_exact_mut(COLS).enumerate() {
        for (c, bits) in row.iter_mut().enumerate() {
            let asic = match (r < HALF_ROWS, c < HALF_COLS) {
                (true, true) => 1,
                (true, false) => 3,
                (false, true) => 0,
                (false, false) => 2,
            };
            if trbit[asic] != 0 {
                *bits |= 16;
            }
        }
    }
    Ok(cbits)
}
