//! Calibration constants: types and shapes, file readers, where files are found, one detector's set.

pub mod array;
pub mod cache;
pub mod calibdir;
pub mod cdb;
pub mod ndarrio;
pub mod npy;
pub mod pickle;
pub mod set;
pub mod types;

pub use array::{Elements, FloatValues, NdArray};
pub use set::{Constant, DetectorConstants};
pub use types::{CalibType, DetectorKind, DetectorSpec, Dtype, ExpectedShape};
