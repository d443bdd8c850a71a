//! Archon (spec §3.5, psana's `archon_raw_1_0_0`, `archon_raw_1_0_1` its alias): raw
//! `(nrows, 4800)` = 16 banks of 300 columns, each 264 real columns then 36 fake ones.
//! `cal = raw − pedestals`; common mode (on unless turned off, as psana's default `cmpars`
//! `(1,0,0)`): each bank of each row minus the median of its fake columns, fakes included; then
//! `cal × gainfact` (default 3.65, skipped when 1). No mask. The image keeps the real columns:
//! `(nrows, 4224)` ([`image`]).

use super::common_mode::median;
use super::real::Real;
use super::{check_sizes, CommonMode, Fallback};
use crate::constants::{CalibType, DetectorConstants, DetectorKind, FloatValues};
use crate::error::{CalibError, ConstantError};

pub const BANKS: usize = 16;
pub const BANK_COLS: usize = 300;
pub const REAL_COLS: usize = 264;
pub const FAKE_COLS: usize = 36;
/// Columns of the raw array.
pub const RAW_COLS: usize = BANKS * BANK_COLS;
/// Columns of the image (fake columns dropped).
pub const IMAGE_COLS: usize = BANKS * REAL_COLS;
/// psana's default `gainfact` (eV/ADU).
pub const DEFAULT_GAINFACT: f64 = 3.65;

/// Whether raw column `c` is a fake one (the last 36 of its bank).
pub fn is_fake_column(c: usize) -> bool {
    c % BANK_COLS >= REAL_COLS
}

/// The raw column of each image column, in image order (psana's `_arr_to_image`:
/// `hstack(a[:, 300b : 300b + 264] for b in 0..16)`).
pub fn image_columns() -> impl Iterator<Item = usize> {
    (0..BANKS).flat_map(|b| b * BANK_COLS..b * BANK_COLS + REAL_COLS)
}

/// psana's Archon image of one `(rows, 4800)` frame (calib or raw): `(rows, 4224)`.
pub fn image<T: Copy>(detector: &str, rows: usize, frame: &[T]) -> Result<Vec<T>, CalibError> {
    let expected = rows * RAW_COLS;
    if frame.len() != expected {
        return Err(CalibError::RawSize { detector: detector.to_string(), found: frame.len(), segments: 1, panel: expected, expected });
    }
    let mut out = Vec::with_capacity(rows * IMAGE_COLS);
    for row in frame.chunks_exact(RAW_COLS) {
        for bank in row.chunks_exact(BANK_COLS) {
            out.extend_from_slice(&bank[..REAL_COLS]);
        }
    }
    Ok(out)
}

enum Pedestals {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

pub struct ArchonCalibrator {
    detector: String,
    /// Pixels of one frame, `rows × 4800`.
    pixels: usize,
    pedestals: Pedestals,
    common_mode: bool,
    gainfact: f64,
}

impl ArchonCalibrator {
    /// Needs pedestals shaped as the raw frame (psana fails without them: `KeyError`).
    pub fn new(constants: &DetectorConstants) -> Result<Self, ConstantError> {
        let spec = &constants.spec;
        let other = |message: String| ConstantError::Other { detector: spec.name.clone(), message };
        if spec.kind != DetectorKind::Archon {
            return Err(other(format!("a {} is not an Archon", spec.kind)));
        }
        let (rows, cols) = spec.panel;
        if cols != RAW_COLS || rows == 0 {
            return Err(other(format!("Archon raw is (nrows, {RAW_COLS}) = 16 banks × 300 columns, got ({rows}, {cols})")));
        }
        let Some(peds) = constants.get(CalibType::Pedestals) else {
            return Err(other(format!(
                "no pedestals (expected shape ({rows}, {RAW_COLS})): psana's Archon calib fails without them"
            )));
        };
        let pixels = rows * cols;
        if peds.array.len() != pixels {
            return Err(other(format!(
                "pedestals in {} have shape {}, expected ({rows}, {RAW_COLS})",
                peds.path.display(),
                crate::constants::types::shape_str(&peds.array.shape)
            )));
        }
        let pedestals = match peds.array.to_float() {
            FloatValues::F32(v) => Pedestals::F32(v),
            FloatValues::F64(v) => Pedestals::F64(v),
        };
        Ok(ArchonCalibrator { detector: spec.name.clone(), pixels, pedestals, common_mode: true, gainfact: DEFAULT_GAINFACT })
    }

    /// psana applies common mode for any `cmpars` that is not None (mode and cormax unused):
    /// `Some` on, `None` off. On by default.
    pub fn set_common_mode(&mut self, cm: Option<CommonMode>) {
        self.common_mode = cm.is_some();
    }

    /// psana's `gainfact` kwarg (default 3.65; 1 skips the multiplication).
    pub fn set_gainfact(&mut self, gainfact: f64) {
        self.gainfact = gainfact;
    }

    pub fn detector(&self) -> &str {
        &self.detector
    }

    pub fn fallbacks(&self) -> &[Fallback] {
        &[]
    }

    /// Calibrates `(rows, 4800)` frames (`segments`: the Archon's one segment number, not used
    /// to index).
    pub fn calibrate(&self, segments: &[u32], raw: &[u16], out: &mut [f32]) -> Result<(), CalibError> {
        check_sizes(&self.detector, self.pixels, segments.len().max(1), raw.len(), out.len())?;
        for (raw, out) in raw.chunks_exact(self.pixels).zip(out.chunks_exact_mut(self.pixels)) {
            match &self.pedestals {
                Pedestals::F32(p) => self.frame(raw, p, out),
                Pedestals::F64(p) => self.frame(raw, p, out),
            }
        }
        Ok(())
    }

    /// One frame in the pedestals' precision (numpy: u16 − float32 is float32, − float64 float64).
    fn frame<T: Real>(&self, raw: &[u16], peds: &[T], out: &mut [f32]) {
        let mut cal: Vec<T> = raw.iter().zip(peds).map(|(&r, &p)| T::from_u16(r) - p).collect();
        if self.common_mode {
            let mut fake = Vec::with_capacity(FAKE_COLS);
            for bank in cal.chunks_exact_mut(BANK_COLS) {
                fake.clear();
                fake.extend_from_slice(&bank[REAL_COLS..]);
                let m = median(&mut fake);
                bank.iter_mut().for_each(|v| *v = *v - m);
            }
        }
        if self.gainfact != 1.0 {
            // `cal *= gainfact`: numpy casts the Python float to the array's dtype.
            let g = T::from_f64(self.gainfact);
            cal.iter_mut().for_each(|v| *v = *v * g);
        }
        out.iter_mut().zip(&cal).for_each(|(o, v)| *o = v.to_f32());
    }
}
