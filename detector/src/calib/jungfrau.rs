//! Jungfrau (spec §3.1, psana's default cversion 3): per pixel, gain code `raw >> 14` picks
//! range 0 (`00`), 1 (`01`) or 2 (`11`); `10` is a bad switch and gives +0.
//! `out = f32(f32(adu − po[g]) × gm[g])` with `po = ped + offset`, `gm = (1/gain) × mask`.

use super::common_mode::{self, CommonMode, PanelBanks};
use super::real::all_f32;
use super::{Fallback, SegmentIndex};
use crate::calib::mask::calib_mask;
use crate::constants::{CalibType, DetectorConstants, DetectorKind, FloatValues};
use crate::error::{CalibError, ConstantError};

/// Pixels per gain-bit check: a chunk without switched pixels reads only the gain-0 tables.
const CHUNK: usize = 64;

/// `po` and `gm` for the three gain ranges, each `(nseg, 512, 1024)` flattened: one contiguous
/// stream per range, so dark chunks read only range 0's.
struct Tables {
    po: [Vec<f32>; 3],
    gm: [Vec<f32>; 3],
}

pub struct JungfrauCalibrator {
    detector: String,
    segments: SegmentIndex,
    /// None: no pedestals, psana returns raw unchanged.
    tables: Option<Tables>,
    mask: Option<Vec<u8>>,
    fallbacks: Vec<Fallback>,
    common_mode: Option<CommonMode>,
}

/// Jungfrau common mode: two row halves of 256, 16 banks of 64 columns.
const BANKS: PanelBanks = PanelBanks { rows: 512, cols: 1024, banks: 16 };

impl JungfrauCalibrator {
    pub fn new(constants: &DetectorConstants) -> Result<Self, ConstantError> {
        let spec = &constants.spec;
        if spec.kind != DetectorKind::Jungfrau {
            return Err(ConstantError::Other {
                detector: spec.name.clone(),
                message: format!("a {} is not a Jungfrau", spec.kind),
            });
        }
        let panel = spec.panel_pixels();
        let segments = SegmentIndex { detector: spec.name.clone(), nseg: constants.nseg(), panel };
        let mask = calib_mask(constants)?;
        let mut fallbacks = Vec::new();
        if mask.is_none() {
            fallbacks.push(Fallback::MaskAllGood);
        }
        let Some(peds) = constants.get(CalibType::Pedestals) else {
            fallbacks.insert(0, Fallback::RawUnchanged);
            return Ok(JungfrauCalibrator { detector: spec.name.clone(), segments, tables: None, mask, fallbacks, common_mode: None });
        };
        let peds = peds.array.to_float();
        let offset = constants.get(CalibType::PixelOffset).map(|c| c.array.to_float());
        let gain = constants.get(CalibType::PixelGain).map(|c| c.array.to_float());
        if offset.is_none() {
            fallbacks.push(Fallback::OffsetZero);
        }
        if gain.is_none() {
            fallbacks.push(Fallback::GainOne);
        }
        let per_range = peds.len() / 3;
        let po = combined_offsets(&peds, offset.as_ref(), per_range);
        let gm = combined_factors(gain.as_ref(), mask.as_deref(), per_range);
        Ok(JungfrauCalibrator {
            detector: spec.name.clone(),
            segments,
            tables: Some(Tables { po, gm }),
            mask,
            fallbacks,
            common_mode: None,
        })
    }

    /// psana's cversion-0 common mode (`cmpars`, never from the constants for Jungfrau): medians
    /// of gain-0 good pixels, subtracted from them before the gain. `None` or mode 0: off.
    pub fn set_common_mode(&mut self, cm: Option<CommonMode>) {
        self.common_mode = cm.filter(|c| c.mode != 0);
    }

    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// Calibrates a frame of the daq `segments` (segment numbers, raw in that order).
    pub fn calibrate(&self, segments: &[u32], raw: &[u16], out: &mut [f32]) -> Result<(), CalibError> {
        for (segment, raw, out) in super::panels(&self.detector, self.segments.panel, segments, raw, out)? {
            let range = self.segments.range(segment)?;
            match &self.tables {
                None => raw.iter().zip(out).for_each(|(&r, o)| *o = r as f32),
                Some(t) if self.common_mode.is_some() => {
                    let mask = self.mask.as_ref().map(|m| &m[range.clone()]);
                    let cm = self.common_mode.as_ref().unwrap();
                    let po = [&t.po[0][range.clone()], &t.po[1][range.clone()], &t.po[2][range.clone()]];
                    let gm = [&t.gm[0][range.clone()], &t.gm[1][range.clone()], &t.gm[2][range]];
                    calibrate_panel_common_mode(raw, po, gm, mask, cm, out);
                }
                Some(t) => calibrate_panel(
                    raw,
                    [&t.po[0][range.clone()], &t.po[1][range.clone()], &t.po[2][range.clone()]],
                    [&t.gm[0][range.clone()], &t.gm[1][range.clone()], &t.gm[2][range]],
                    out,
                ),
            }
        }
        Ok(())
    }

    /// The default mask of the daq `segments` (1 good), all ones without status constants.
    pub fn mask(&self, segments: &[u32], out: &mut [u8]) -> Result<(), CalibError> {
        super::daq_mask(&self.segments, self.mask.as_deref(), segments, out)
    }
}

/// `po[g] = f32(ped[g] + offset[g])`, in f32 when both are f32, else in f64 then rounded.
fn combined_offsets(peds: &FloatValues, offset: Option<&FloatValues>, per_range: usize) -> [Vec<f32>; 3] {
    let f32_path = all_f32(&[Some(peds), offset]);
    std::array::from_fn(|g| {
        let at = g * per_range;
        (at..at + per_range)
            .map(|i| match (peds, offset) {
                (FloatValues::F32(p), Some(FloatValues::F32(o))) if f32_path => p[i] + o[i],
                (FloatValues::F32(p), None) => p[i],
                (p, Some(o)) => (p.get_f64(i) + o.get_f64(i)) as f32,
                (p, None) => p.get_f64(i) as f32,
            })
            .collect()
    })
}

/// `gm[g] = f32((1/gain[g]) × mask)` with the protected inverse; gain 1 when absent.
fn combined_factors(gain: Option<&FloatValues>, mask: Option<&[u8]>, per_range: usize) -> [Vec<f32>; 3] {
    std::array::from_fn(|g| {
        let at = g * per_range;
        (0..per_range)
            .map(|i| {
                let m = mask.map_or(1u8, |m| m[i]);
                match gain {
                    None => m as f32,
                    Some(FloatValues::F32(v)) => {
                        let x = v[at + i];
                        (if x != 0.0 { 1.0 / x } else { 0.0 }) * m as f32
                    }
                    Some(FloatValues::F64(v)) => {
                        let x = v[at + i];
                        ((if x != 0.0 { 1.0 / x } else { 0.0 }) * m as f64) as f32
                    }
                }
            })
            .collect()
    })
}

/// One panel: `raw`, the three ranges' `po`/`gm` for its pixels, `out`. Pure, allocation-free.
///
/// Chunk by chunk: a chunk without switched pixels streams through the gain-0 tables only; a
/// chunk with some is computed branch-free (bit masks select the range), so both vectorise.
pub fn calibrate_panel(raw: &[u16], po: [&[f32]; 3], gm: [&[f32]; 3], out: &mut [f32]) {
    let n = raw.len();
    assert!(out.len() == n && po.iter().chain(&gm).all(|t| t.len() == n), "panel slices differ in length");
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let len = end - start;
        // Slices of one length: the compiler drops the bounds checks and vectorises.
        let r = &raw[start..end];
        let o = &mut out[start..end][..len];
        let (p0, g0) = (&po[0][start..end][..len], &gm[0][start..end][..len]);
        let gain_bits = r.iter().fold(0u16, |acc, &x| acc | x);
        if gain_bits < 0x4000 {
            for i in 0..len {
                o[i] = (r[i] as f32 - p0[i]) * g0[i];
            }
        } else {
            // The gain code keeps one range's constants; code 10 (bad switch) keeps none, so
            // po = gm = +0 and the output is (adu − 0) × 0 = +0, exactly psana's.
            let (p1, p2) = (&po[1][start..end][..len], &po[2][start..end][..len]);
            let (g1, g2) = (&gm[1][start..end][..len], &gm[2][start..end][..len]);
            for i in 0..len {
                let x = r[i];
                let code = x >> 14;
                let keep0 = ((code == 0) as u32).wrapping_neg();
                let keep1 = ((code == 1) as u32).wrapping_neg();
                let keep2 = ((code == 3) as u32).wrapping_neg();
                let p = (p0[i].to_bits() & keep0) | (p1[i].to_bits() & keep1) | (p2[i].to_bits() & keep2);
                let g = (g0[i].to_bits() & keep0) | (g1[i].to_bits() & keep1) | (g2[i].to_bits() & keep2);
                o[i] = ((x & 0x3fff) as f32 - f32::from_bits(p)) * f32::from_bits(g);
            }
        }
        start = end;
    }
}

/// One panel with common mode: `adu − po[g]`, medians of gain-0 good pixels subtracted from
/// them, then `× gm[g]`; bad switches stay +0.
fn calibrate_panel_common_mode(raw: &[u16], po: [&[f32]; 3], gm: [&[f32]; 3], mask: Option<&[u8]>, cm: &CommonMode, out: &mut [f32]) {
    let range_of = |x: u16| match x >> 14 {
        0 => Some(0),
        1 => Some(1),
        3 => Some(2),
        _ => None,
    };
    let mut selected = vec![false; raw.len()];
    for (i, &x) in raw.iter().enumerate() {
        let adu = (x & 0x3fff) as f32;
        out[i] = match range_of(x) {
            Some(g) => adu - po[g][i],
            None => adu,
        };
        selected[i] = x >> 14 == 0 && mask.is_none_or(|m| m[i] != 0);
    }
    common_mode::apply(cm, BANKS, out, &selected);
    for (i, &x) in raw.iter().enumerate() {
        out[i] = match range_of(x) {
            Some(g) => out[i] * gm[g][i],
            None => 0.0,
        };
    }
}
