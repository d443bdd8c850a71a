//! Area-detector calibration as psana2 does it (`shared/spec/calibration.md`): constants from
//! files, and per-pixel formulas over raw `u16` slices into `f32`.

pub mod calib;
pub mod constants;
pub mod error;
pub mod geometry;
pub mod settings;
pub mod setup;

pub use calib::{Calibrator, CommonMode, Epix10kaConfig, Fallback};
pub use constants::{CalibType, DetectorConstants, DetectorKind, DetectorSpec};
pub use error::{CalibError, ConstantError, GeometryError, ReadError};
