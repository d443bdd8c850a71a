//! Opal and other cameras (spec §3.6): `out = (f32(raw) − ped) / gain`, 0 where gain is 0;
//! no mask (a user mask is not applied either: psana's Opal calib has none). Without pedestals
//! `f32(raw)`, without gain `raw − ped` (psana's `opal_base.calib`).

use super::{check_sizes, Fallback};
use crate::constants::{CalibType, DetectorConstants, DetectorKind, FloatValues};
use crate::error::{CalibError, ConstantError};

enum Formula {
    RawAsFloat,
    Subtract(FloatValues),
    SubtractDivide(FloatValues, FloatValues),
}

pub struct CameraCalibrator {
    detector: String,
    pixels: usize,
    formula: Formula,
    fallbacks: Vec<Fallback>,
}

impl CameraCalibrator {
    pub fn new(constants: &DetectorConstants) -> Result<Self, ConstantError> {
        let spec = &constants.spec;
        if spec.kind != DetectorKind::Camera {
            return Err(ConstantError::Other { detector: spec.name.clone(), message: format!("a {} is not a camera", spec.kind) });
        }
        let peds = constants.get(CalibType::Pedestals).map(|c| c.array.to_float());
        let gain = constants.get(CalibType::PixelGain).map(|c| c.array.to_float());
        let (formula, fallbacks) = match (peds, gain) {
            (None, _) => (Formula::RawAsFloat, vec![Fallback::RawAsFloat]),
            (Some(p), None) => (Formula::Subtract(p), vec![Fallback::GainOne]),
            (Some(p), Some(g)) => (Formula::SubtractDivide(p, g), vec![]),
        };
        Ok(CameraCalibrator { detector: spec.name.clone(), pixels: spec.panel_pixels(), formula, fallbacks })
    }

    pub fn detector(&self) -> &str {
        &self.detector
    }

    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// Calibrates one image (`segments` is the camera's one segment number, not used to index).
    pub fn calibrate(&self, segments: &[u32], raw: &[u16], out: &mut [f32]) -> Result<(), CalibError> {
        check_sizes(&self.detector, self.pixels, segments.len().max(1), raw.len(), out.len())?;
        match &self.formula {
            Formula::RawAsFloat => raw.iter().zip(out).for_each(|(&r, o)| *o = r as f32),
            // numpy: `arr -= peds` keeps arr float32 (the f64 difference is rounded into it).
            Formula::Subtract(FloatValues::F32(p)) => {
                raw.iter().zip(p).zip(out).for_each(|((&r, &p), o)| *o = r as f32 - p)
            }
            Formula::Subtract(FloatValues::F64(p)) => {
                raw.iter().zip(p).zip(out).for_each(|((&r, &p), o)| *o = (r as f64 - p) as f32)
            }
            Formula::SubtractDivide(p, g) => subtract_divide(raw, p, g, out),
        }
        Ok(())
    }
}

/// psana's `divide_protected(arr − peds, gain)`: 0 where gain is 0.
fn subtract_divide(raw: &[u16], peds: &FloatValues, gain: &FloatValues, out: &mut [f32]) {
    match (peds, gain) {
        (FloatValues::F32(p), FloatValues::F32(g)) => {
            for (((&r, &p), &g), o) in raw.iter().zip(p).zip(g).zip(out) {
                let d = r as f32 - p;
                *o = if g != 0.0 { d / g } else { 0.0 };
            }
        }
        _ => {
            for (i, (&r, o)) in raw.iter().zip(out).enumerate() {
                let d = match peds {
                    FloatValues::F32(p) => r as f32 - p[i],
                    FloatValues::F64(p) => (r as f64 - p[i]) as f32,
                };
                let g = gain.get_f64(i);
                *o = if g != 0.0 { (d as f64 / g) as f32 } else { 0.0 };
            }
        }
    }
}
