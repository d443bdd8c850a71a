//! epixM320 (spec §3.4): 4 ASICs of 192×384 in one Xtc segment, numbered 0–3 as segments.
//! `out = (f32(raw & 0x7fff) − ped[bit 15]) × mask`, pedestal set 0 or 1 by the gain bit 15;
//! no gain, no common mode. Without pedestals psana returns raw unchanged.

use super::mask::calib_mask;
use super::real::{all_f32, Real};
use super::{Fallback, SegmentIndex};
use crate::constants::{CalibType, DetectorConstants, DetectorKind};
use crate::error::{CalibError, ConstantError};

enum Tables {
    F32([Vec<f32>; 2]),
    F64([Vec<f64>; 2]),
}

pub struct Epixm320Calibrator {
    detector: String,
    segments: SegmentIndex,
    /// Pedestals for bit 15 clear and set, all ASICs; None: raw unchanged.
    peds: Option<Tables>,
    mask: Option<Vec<u8>>,
    fallbacks: Vec<Fallback>,
}

impl Epixm320Calibrator {
    pub fn new(constants: &DetectorConstants) -> Result<Self, ConstantError> {
        let spec = &constants.spec;
        if spec.kind != DetectorKind::Epixm320 {
            return Err(ConstantError::Other { detector: spec.name.clone(), message: format!("a {} is not an epixM320", spec.kind) });
        }
        let segments = SegmentIndex { detector: spec.name.clone(), nseg: constants.nseg(), panel: spec.panel_pixels() };
        let mask = calib_mask(constants)?;
        let mut fallbacks = Vec::new();
        let peds = constants.get(CalibType::Pedestals).map(|c| {
            let v = c.array.to_float();
            let per_range = v.len() / 3;
            if all_f32(&[Some(&v)]) {
                let all = f32::from_values(&v);
                Tables::F32([all[..per_range].to_vec(), all[per_range..2 * per_range].to_vec()])
            } else {
                let all = f64::from_values(&v);
                Tables::F64([all[..per_range].to_vec(), all[per_range..2 * per_range].to_vec()])
            }
        });
        if peds.is_none() {
            fallbacks.push(Fallback::RawUnchanged);
        }
        if mask.is_none() {
            fallbacks.push(Fallback::MaskAllGood);
        }
        Ok(Epixm320Calibrator { detector: spec.name.clone(), segments, peds, mask, fallbacks })
    }

    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// Calibrates the ASICs `segments` (0–3), raw `(n, 192, 384)`.
    pub fn calibrate(&self, segments: &[u32], raw: &[u16], out: &mut [f32]) -> Result<(), CalibError> {
        for (segment, raw, out) in super::panels(&self.detector, self.segments.panel, segments, raw, out)? {
            let range = self.segments.range(segment)?;
            let mask = self.mask.as_ref().map(|m| &m[range.clone()]);
            match &self.peds {
                None => raw.iter().zip(out).for_each(|(&r, o)| *o = r as f32),
                Some(Tables::F32([p0, p1])) => panel_kernel(raw, &p0[range.clone()], &p1[range], mask, out),
                Some(Tables::F64([p0, p1])) => panel_kernel(raw, &p0[range.clone()], &p1[range], mask, out),
            }
        }
        Ok(())
    }

    /// The default mask of the ASICs `segments` (1 good).
    pub fn mask(&self, segments: &[u32], out: &mut [u8]) -> Result<(), CalibError> {
        super::daq_mask(&self.segments, self.mask.as_deref(), segments, out)
    }
}

fn panel_kernel<T: Real>(raw: &[u16], p0: &[T], p1: &[T], mask: Option<&[u8]>, out: &mut [f32]) {
    let n = raw.len();
    let (p0, p1, out) = (&p0[..n], &p1[..n], &mut out[..n]);
    match mask {
        Some(m) => {
            let m = &m[..n];
            for i in 0..n {
                let p = T::select(raw[i] & 0x8000 != 0, p1[i], p0[i]);
                out[i] = ((T::from_u16(raw[i] & 0x7fff) - p) * T::from_u8(m[i])).to_f32();
            }
        }
        None => {
            for i in 0..n {
                let p = T::select(raw[i] & 0x8000 != 0, p1[i], p0[i]);
                out[i] = (T::from_u16(raw[i] & 0x7fff) - p).to_f32();
            }
        }
    }
}
