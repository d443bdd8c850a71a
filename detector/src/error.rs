//! Errors: reading one file, a detector's constants, calibrating a frame.

use std::path::PathBuf;

use crate::constants::types::{CalibType, ExpectedShape};

/// A constant file that cannot be read: always names the file, and the line or byte offset.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// NDArrIO text: a bad value, header or row (line numbers from 1).
    #[error("{path}:{line}: {message}")]
    Text { path: PathBuf, line: usize, message: String },
    /// `.npy`: a bad header, an unsupported dtype or order, or fewer data bytes than the shape needs.
    #[error("{path} (byte {offset}): {message}")]
    Npy { path: PathBuf, offset: u64, message: String },
}

/// A detector's constant that is missing, mis-shaped or unreadable.
#[derive(Debug, thiserror::Error)]
pub enum ConstantError {
    /// The source names the file (and line or byte).
    #[error("{detector}: {ctype}: {source} (expected shape {expected})")]
    Unreadable { detector: String, ctype: CalibType, path: PathBuf, expected: ExpectedShape, source: Box<ReadError> },
    #[error("{detector}: {ctype} in {path} has shape {found}, expected {expected}")]
    Shape { detector: String, ctype: CalibType, path: PathBuf, found: String, expected: ExpectedShape },
    #[error("{detector}: status_extra in {path} has {found} values but pixel_status has {expected} (psana requires equal sizes)")]
    StatusExtraSize { detector: String, path: PathBuf, found: usize, expected: usize },
    #[error("{detector}: no {ctype} file for run {run} in {dir} (files are <begin>-<end|end>.data with begin ≤ run ≤ end)")]
    NoFileForRun { detector: String, ctype: CalibType, run: u32, dir: PathBuf },
    #[error("{detector}: calib dir {root} has no folder for this detector (looked for {looked_for})")]
    NoDetectorDir { detector: String, root: PathBuf, looked_for: String },
    #[error("{path}: {message}")]
    Listing { path: PathBuf, message: String },
    /// psana's calibration cache pickle.
    #[error("calibration cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("{detector}: {message}")]
    Other { detector: String, message: String },
}

/// A frame that cannot be calibrated with the constants held.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CalibError {
    #[error("{detector}: segment {segment} is not covered by the constants ({nseg} segments, 0–{last})", last = nseg.saturating_sub(1))]
    SegmentOutOfRange { detector: String, segment: u32, nseg: usize },
    #[error("{detector}: raw has {found} values for {segments} segment(s) of {panel} pixels, expected {expected}")]
    RawSize { detector: String, found: usize, segments: usize, panel: usize, expected: usize },
    #[error("{detector}: output has {found} values, raw has {expected}")]
    OutSize { detector: String, found: usize, expected: usize },
    #[error("{detector}: config of segment {segment}: {message}")]
    Config { detector: String, segment: u32, message: String },
    #[error("{detector}: {message}")]
    Unsupported { detector: String, message: String },
}

/// A geometry that cannot be read or used (spec §5): names the file (or its origin) and the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GeometryError {
    /// psana's geometry text: a line that is not 13 fields of the right types (lines from 1).
    #[error("{origin}:{line}: {message}")]
    Syntax { origin: String, line: usize, message: String },
    /// A well-formed file whose objects do not make one tree of known segments.
    #[error("{origin}: {message}")]
    Structure { origin: String, message: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    /// A frame or segment list that does not fit the geometry.
    #[error("image: {message}")]
    Frame { message: String },
}
