//! One detector's constants, read from files and checked against the shapes psana expects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::array::NdArray;
use super::calibdir::DetectorDir;
use super::types::{shape_str, CalibType, DetectorSpec, ExpectedShape};
use super::{ndarrio, npy};
use crate::error::{ConstantError, ReadError};

/// A constant array and the file it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    pub array: NdArray,
    pub path: PathBuf,
}

/// The constants of one detector for one run. Arrays cover all `nseg` segments of the detector
/// (indexed by segment number); ctypes absent here are psana's fallbacks (see `calib::Fallback`).
#[derive(Clone, Debug)]
pub struct DetectorConstants {
    pub spec: DetectorSpec,
    arrays: BTreeMap<CalibType, Constant>,
    geometry: Option<(String, PathBuf)>,
    /// A user's mask (psana's `umask`, 1 good / 0 bad), ANDed into the calib mask.
    user_mask: Option<Constant>,
}

impl DetectorConstants {
    pub fn new(spec: DetectorSpec) -> Self {
        DetectorConstants { spec, arrays: BTreeMap::new(), geometry: None, user_mask: None }
    }

    pub fn get(&self, ctype: CalibType) -> Option<&Constant> {
        self.arrays.get(&ctype)
    }

    /// The geometry text and its file.
    pub fn geometry(&self) -> Option<(&str, &Path)> {
        self.geometry.as_ref().map(|(t, p)| (t.as_str(), p.as_path()))
    }

    /// The ctypes held.
    pub fn ctypes(&self) -> impl Iterator<Item = CalibType> + '_ {
        self.arrays.keys().copied().chain(self.geometry.as_ref().map(|_| CalibType::Geometry))
    }

    /// Segments the constants cover (`shape[-3]` of the first panel constant; psana takes it
    /// from `pedestals`); `None` for single-image detectors or when nothing is held.
    pub fn nseg(&self) -> Option<usize> {
        self.arrays.iter().find_map(|(&c, k)| self.spec.segments_in(c, &k.array.shape))
    }

    /// Reads one constant file (`.npy` by extension, anything else as NDArrIO text; `geometry`
    /// as text) and adds it, checking its shape.
    pub fn load_file(&mut self, ctype: CalibType, path: &Path) -> Result<(), ConstantError> {
        if ctype == CalibType::Geometry {
            let text = std::fs::read_to_string(path).map_err(|source| self.unreadable(ctype, path, ReadError::Io {
                path: path.to_path_buf(),
                source,
            }))?;
            self.geometry = Some((text, path.to_path_buf()));
            return Ok(());
        }
        let read = if path.extension().is_some_and(|e| e == "npy") {
            npy::read_npy(path)
        } else {
            ndarrio::read_text(path)
        };
        let array = read.map_err(|e| self.unreadable(ctype, path, e))?;
        self.insert(ctype, array, path.to_path_buf())
    }

    /// The user's mask, if one was given.
    pub fn user_mask(&self) -> Option<&Constant> {
        self.user_mask.as_ref()
    }

    /// Reads a user mask file (`.npy` or NDArrIO text), shaped like `pixel_mask`
    /// (`(nseg, rows, cols)`); nonzero is good. It joins the default mask as psana's `umask`.
    pub fn load_user_mask(&mut self, path: &Path) -> Result<(), ConstantError> {
        let read = if path.extension().is_some_and(|e| e == "npy") { npy::read_npy(path) } else { ndarrio::read_text(path) };
        let array = read.map_err(|e| self.unreadable(CalibType::PixelMask, path, e))?;
        self.set_user_mask(array, path.to_path_buf())
    }

    /// Sets the user mask from an array; `path` names its origin in errors.
    pub fn set_user_mask(&mut self, array: NdArray, path: PathBuf) -> Result<(), ConstantError> {
        let array = self.fit_shape(CalibType::PixelMask, array, self.nseg(), &path)?;
        self.user_mask = Some(Constant { array, path });
        Ok(())
    }

    /// Sets the geometry text; `origin` names where it came from.
    pub fn insert_geometry(&mut self, text: String, origin: PathBuf) {
        self.geometry = Some((text, origin));
    }

    /// Adds an array read elsewhere; `path` names its origin in errors.
    pub fn insert(&mut self, ctype: CalibType, array: NdArray, path: PathBuf) -> Result<(), ConstantError> {
        // Once one panel constant is held, the others must cover as many segments.
        let array = self.fit_shape(ctype, array, self.nseg(), &path)?;
        if ctype == CalibType::CommonMode && array.shape.len() != 1 {
            return Err(self.shape_error(ctype, &path, &array.shape, ExpectedShape::OneDim));
        }
        self.arrays.insert(ctype, Constant { array, path });
        Ok(())
    }

    /// Reads every ctype psana would find in a calib dir for `run` (spec §2.2). `source` is the
    /// LCLS-II detector name or a DetInfo string. Pedestals are required: a calib dir without a
    /// pedestals file for this run is an error rather than psana's silent raw output; the other
    /// ctypes may be absent (fallbacks).
    pub fn from_calib_dir(
        spec: DetectorSpec,
        root: &Path,
        source: &str,
        run: u32,
        max_segment: u32,
    ) -> Result<Self, ConstantError> {
        let dir = DetectorDir::find(root, &spec.name, spec.kind, source, max_segment)?;
        let mut set = DetectorConstants::new(spec);
        // Pedestals first: their segment count is the one the others must match.
        for ctype in CalibType::ALL {
            match dir.file_for_run(ctype, run)? {
                Some(path) => set.load_file(ctype, &path)?,
                None if ctype == CalibType::Pedestals => {
                    return Err(ConstantError::NoFileForRun {
                        detector: set.spec.name.clone(),
                        ctype,
                        run,
                        dir: dir.path.join(ctype.name()),
                    });
                }
                None => {}
            }
        }
        Ok(set)
    }

    /// Reads constants given one by one (`--calib pedestals=FILE`, or `cdb::scan_exports`).
    pub fn from_files<'a>(
        spec: DetectorSpec,
        files: impl IntoIterator<Item = (CalibType, &'a Path)>,
    ) -> Result<Self, ConstantError> {
        let mut files: Vec<_> = files.into_iter().collect();
        files.sort_by_key(|&(c, _)| c);
        let mut set = DetectorConstants::new(spec);
        for (ctype, path) in files {
            set.load_file(ctype, path)?;
        }
        Ok(set)
    }

    /// The array in psana's shape: as it is when it fits, or reshaped when it is the flat table
    /// of an NDArrIO file without shape metadata (rows of the panel's last axis).
    fn fit_shape(&self, ctype: CalibType, mut array: NdArray, nseg: Option<usize>, path: &Path) -> Result<NdArray, ConstantError> {
        let (_, cols) = self.spec.panel;
        let panel = self.spec.panel_pixels();
        let segments_guess = nseg.unwrap_or_else(|| {
            let per_seg = self.spec.kind.gain_ranges().unwrap_or(1) * panel;
            if per_seg > 0 && array.len().is_multiple_of(per_seg) { array.len() / per_seg } else { 1 }
        });
        let expected = self.spec.expected_shape(ctype, segments_guess.max(1));
        if expected.accepts(&array.shape) {
            return Ok(array);
        }
        let flat_table = match array.shape.as_slice() {
            [_] => true,
            [_, c] => *c == cols,
            _ => false,
        };
        if flat_table
            && let Some(target) = expected.candidates().iter().find(|s| s.iter().product::<usize>() == array.len())
        {
            array.shape = target.clone();
            return Ok(array);
        }
        Err(self.shape_error(ctype, path, &array.shape, expected))
    }

    fn shape_error(&self, ctype: CalibType, path: &Path, found: &[usize], expected: ExpectedShape) -> ConstantError {
        ConstantError::Shape {
            detector: self.spec.name.clone(),
            ctype,
            path: path.to_path_buf(),
            found: shape_str(found),
            expected,
        }
    }

    fn unreadable(&self, ctype: CalibType, path: &Path, source: ReadError) -> ConstantError {
        let nseg = self.nseg().unwrap_or(1);
        ConstantError::Unreadable {
            detector: self.spec.name.clone(),
            ctype,
            path: path.to_path_buf(),
            expected: self.spec.expected_shape(ctype, nseg),
            source: Box::new(source),
        }
    }
}
