//! psana2's per-pixel calibration (spec §3): a `Calibrator` per detector holds its constants
//! once, laid out per gain range for streaming, and turns one frame `&[u16]` into `&mut [f32]`.

pub mod archon;
pub mod camera;
pub mod common_mode;
pub mod epix10ka;
pub mod epixhr2x2;
pub mod epixm320;
pub mod jungfrau;
pub mod mask;
pub mod real;

use std::fmt;
use std::ops::Range;

use crate::constants::{DetectorConstants, DetectorKind};
use crate::error::{CalibError, ConstantError};

pub use archon::ArchonCalibrator;
pub use camera::CameraCalibrator;
pub use common_mode::CommonMode;
pub use epix10ka::{Epix10kaCalibrator, Epix10kaConfig};
pub use epixm320::Epixm320Calibrator;
pub use jungfrau::JungfrauCalibrator;

/// What psana does when a constant is missing (spec §1.3), for the caller to show once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// No pedestals: calib is the raw value unchanged (Jungfrau: gain bits included).
    RawUnchanged,
    /// No pedestals: nothing subtracted, gain factor and mask still applied (epix10ka).
    NoPedestalSubtraction,
    /// No pedestals: calib is `f32(raw)`, `pixel_gain` not applied (cameras).
    RawAsFloat,
    /// No `pixel_gain`: factor 1.
    GainOne,
    /// No `pixel_offset`: 0 (Jungfrau).
    OffsetZero,
    /// No `pixel_status` nor `status_extra` (nor a user mask): every pixel good.
    MaskAllGood,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fallback::RawUnchanged => "no pedestals: calib returns raw unchanged (as psana)",
            Fallback::NoPedestalSubtraction => "no pedestals: nothing subtracted (as psana)",
            Fallback::RawAsFloat => "no pedestals: calib is raw as float, pixel_gain not applied (as psana)",
            Fallback::GainOne => "no pixel_gain: gain factor 1 (as psana)",
            Fallback::OffsetZero => "no pixel_offset: offset 0 (as psana)",
            Fallback::MaskAllGood => "no pixel_status/status_extra: every pixel good (as psana)",
        })
    }
}

/// The calibrator of one detector.
pub enum Calibrator {
    Jungfrau(JungfrauCalibrator),
    Epix10ka(Epix10kaCalibrator),
    /// The epix10ka formula with the epixhr2x2's panel, config and gain bit (`calib::epixhr2x2`).
    Epixhr2x2(Epix10kaCalibrator),
    Epixm320(Epixm320Calibrator),
    Archon(ArchonCalibrator),
    Camera(CameraCalibrator),
}

impl Calibrator {
    /// The calibrator for the constants' detector type; epix10ka and epixhr2x2 need each daq
    /// segment's config (`Epix10kaConfig::HrAsics` for the epixhr2x2).
    pub fn new(constants: &DetectorConstants, epix_configs: &[(u32, Epix10kaConfig)]) -> Result<Self, ConstantError> {
        Ok(match constants.spec.kind {
            DetectorKind::Jungfrau => Calibrator::Jungfrau(JungfrauCalibrator::new(constants)?),
            DetectorKind::Epix10ka => Calibrator::Epix10ka(Epix10kaCalibrator::new(constants, epix_configs)?),
            DetectorKind::Epixhr2x2 => Calibrator::Epixhr2x2(Epix10kaCalibrator::new(constants, epix_configs)?),
            DetectorKind::Epixm320 => Calibrator::Epixm320(Epixm320Calibrator::new(constants)?),
            DetectorKind::Archon => Calibrator::Archon(ArchonCalibrator::new(constants)?),
            DetectorKind::Camera => Calibrator::Camera(CameraCalibrator::new(constants)?),
        })
    }

    /// Calibrates one frame: `raw` holds the daq `segments` in order, `(nseg, rows, cols)`.
    pub fn calibrate(&self, segments: &[u32], raw: &[u16], out: &mut [f32]) -> Result<(), CalibError> {
        match self {
            Calibrator::Jungfrau(c) => c.calibrate(segments, raw, out),
            Calibrator::Epix10ka(c) | Calibrator::Epixhr2x2(c) => c.calibrate(segments, raw, out),
            Calibrator::Epixm320(c) => c.calibrate(segments, raw, out),
            Calibrator::Archon(c) => c.calibrate(segments, raw, out),
            Calibrator::Camera(c) => c.calibrate(segments, raw, out),
        }
    }

    /// Turns psana's common-mode correction on (`Some` with mode ≠ 0) or off; cameras have none.
    /// Archon: on for any `Some` (psana: any cmpars not None, on by default), off for `None`.
    pub fn set_common_mode(&mut self, cm: Option<CommonMode>) -> Result<(), CalibError> {
        match self {
            Calibrator::Jungfrau(c) => c.set_common_mode(cm),
            Calibrator::Epix10ka(c) | Calibrator::Epixhr2x2(c) => c.set_common_mode(cm),
            Calibrator::Archon(c) => c.set_common_mode(cm),
            Calibrator::Epixm320(_) if cm.is_some_and(|c| c.mode != 0) => {
                return Err(CalibError::Unsupported {
                    detector: "epixm320".into(),
                    message: "psana applies no common mode to the epixM320".into(),
                });
            }
            Calibrator::Epixm320(_) => {}
            Calibrator::Camera(c) if cm.is_some_and(|c| c.mode != 0) => {
                return Err(CalibError::Unsupported {
                    detector: c.detector().to_string(),
                    message: "cameras have no common-mode correction in psana".into(),
                });
            }
            Calibrator::Camera(_) => {}
        }
        Ok(())
    }

    /// psana's default mask for the daq `segments` (cameras and Archon: all good).
    pub fn mask(&self, segments: &[u32], out: &mut [u8]) -> Result<(), CalibError> {
        match self {
            Calibrator::Jungfrau(c) => c.mask(segments, out),
            Calibrator::Epix10ka(c) | Calibrator::Epixhr2x2(c) => c.mask(segments, out),
            Calibrator::Epixm320(c) => c.mask(segments, out),
            Calibrator::Archon(_) | Calibrator::Camera(_) => {
                out.fill(1);
                Ok(())
            }
        }
    }

    pub fn fallbacks(&self) -> &[Fallback] {
        match self {
            Calibrator::Jungfrau(c) => c.fallbacks(),
            Calibrator::Epix10ka(c) | Calibrator::Epixhr2x2(c) => c.fallbacks(),
            Calibrator::Epixm320(c) => c.fallbacks(),
            Calibrator::Archon(c) => c.fallbacks(),
            Calibrator::Camera(c) => c.fallbacks(),
        }
    }
}

/// Where a segment's pixels sit in constants covering `nseg` segments (indexed by number).
pub(crate) struct SegmentIndex {
    pub detector: String,
    /// None: no panel constants held, any segment number is accepted.
    pub nseg: Option<usize>,
    pub panel: usize,
}

impl SegmentIndex {
    pub fn range(&self, segment: u32) -> Result<Range<usize>, CalibError> {
        let s = segment as usize;
        match self.nseg {
            Some(nseg) if s >= nseg => {
                Err(CalibError::SegmentOutOfRange { detector: self.detector.clone(), segment, nseg })
            }
            _ => Ok(s * self.panel..(s + 1) * self.panel),
        }
    }
}

/// Checks raw and out hold `segments` panels; returns the panel size.
pub(crate) fn check_sizes(detector: &str, panel: usize, segments: usize, raw: usize, out: usize) -> Result<usize, CalibError> {
    let expected = segments * panel;
    if raw != expected {
        return Err(CalibError::RawSize { detector: detector.to_string(), found: raw, segments, panel, expected });
    }
    if out != raw {
        return Err(CalibError::OutSize { detector: detector.to_string(), found: out, expected: raw });
    }
    Ok(panel)
}

/// Each daq segment with its panel of `raw` and of `out`, after checking their sizes.
pub(crate) fn panels<'a>(
    detector: &str,
    panel: usize,
    segments: &'a [u32],
    raw: &'a [u16],
    out: &'a mut [f32],
) -> Result<impl Iterator<Item = (u32, &'a [u16], &'a mut [f32])>, CalibError> {
    let panel = check_sizes(detector, panel, segments.len(), raw.len(), out.len())?;
    Ok(segments.iter().zip(raw.chunks_exact(panel)).zip(out.chunks_exact_mut(panel)).map(|((&s, r), o)| (s, r, o)))
}

/// The mask of the daq segments, taken by segment number from the whole detector's mask.
pub(crate) fn daq_mask(index: &SegmentIndex, mask: Option<&[u8]>, segments: &[u32], out: &mut [u8]) -> Result<(), CalibError> {
    let panel = index.panel;
    if out.len() != segments.len() * panel {
        return Err(CalibError::OutSize { detector: index.detector.clone(), found: out.len(), expected: segments.len() * panel });
    }
    for (k, &segment) in segments.iter().enumerate() {
        let range = index.range(segment)?;
        let dst = &mut out[k * panel..(k + 1) * panel];
        match mask {
            Some(m) => dst.copy_from_slice(&m[range]),
            None => dst.fill(1),
        }
    }
    Ok(())
}
