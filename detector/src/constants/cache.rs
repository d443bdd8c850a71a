//! psana2's calibration cache (spec §2.5): `/dev/shm/calibconst.pkl`, a pickle of
//! `{"det_info": {det_name: uniqueid}, "calib_const": {det_name: {ctype: (data, doc)}}}`
//! written by `calib_prefetch` on DAQ monitoring nodes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::pickle::{unpickle, Value};
use super::set::DetectorConstants;
use super::types::{CalibType, DetectorSpec};
use crate::error::ConstantError;

/// Where psana reads the cache (its directory is hard-coded).
pub const CALIB_CACHE_PATH: &str = "/dev/shm/calibconst.pkl";

/// A read calibration cache.
pub struct CalibCache {
    path: PathBuf,
    /// `det_name → uniqueid` of the run the constants were fetched for.
    pub det_info: BTreeMap<String, String>,
    calib_const: Value,
}

impl CalibCache {
    pub fn read(path: &Path) -> Result<Self, ConstantError> {
        let err = |message: String| ConstantError::Cache { path: path.to_path_buf(), message };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let root = unpickle(&bytes).map_err(|(at, m)| err(format!("byte {at}: {m}")))?;
        let det_info = match root.get("det_info") {
            Some(Value::Dict(items)) => items
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                .collect(),
            _ => return Err(err("no 'det_info' dict: not a psana calibration cache".into())),
        };
        let calib_const = match root.get("calib_const") {
            Some(v @ Value::Dict(_)) => v.clone(),
            _ => return Err(err("no 'calib_const' dict: not a psana calibration cache".into())),
        };
        Ok(CalibCache { path: path.to_path_buf(), det_info, calib_const })
    }

    /// psana ≥ 4.1.13's rule: the cache serves a run when its `det_info` contains every
    /// `(det_name, uniqueid)` of the run's detectors (more entries are fine).
    pub fn serves(&self, run_detectors: &[(&str, &str)]) -> bool {
        run_detectors.iter().all(|(name, id)| self.det_info.get(*name).is_some_and(|held| held == id))
    }

    /// The detector names with constants in the cache.
    pub fn detectors(&self) -> Vec<&str> {
        match &self.calib_const {
            Value::Dict(items) => items.iter().filter_map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// `det_name`'s constants, checked against the shapes `spec` expects; ctypes beamtime does
    /// not use (`pixel_max`…) are skipped. `doc` dicts are not kept.
    pub fn detector_constants(&self, spec: DetectorSpec, det_name: &str) -> Result<DetectorConstants, ConstantError> {
        let err = |message: String| ConstantError::Cache { path: self.path.clone(), message };
        let Some(Value::Dict(ctypes)) = self.calib_const.get(det_name) else {
            return Err(err(format!("no constants for detector '{det_name}' (it has: {})", self.detectors().join(", "))));
        };
        let mut entries: Vec<(CalibType, &Value)> = Vec::new();
        for (name, entry) in ctypes {
            let Some(ctype) = name.as_str().and_then(CalibType::from_name) else { continue };
            let Value::Tuple(pair) = entry.as_ref() else {
                return Err(err(format!("{det_name}/{ctype}: entry is not a (data, doc) tuple")));
            };
            let data = pair.first().ok_or_else(|| err(format!("{det_name}/{ctype}: empty entry")))?;
            entries.push((ctype, data.as_ref()));
        }
        // Pedestals first: their segment count is the one the others must match.
        entries.sort_by_key(|(c, _)| *c);
        let mut set = DetectorConstants::new(spec);
        for (ctype, data) in entries {
            let origin = PathBuf::from(format!("{}[{det_name}][{ctype}]", self.path.display()));
            match data {
                Value::Array(a) => set.insert(ctype, a.clone(), origin)?,
                Value::Str(text) if ctype == CalibType::Geometry => set.insert_geometry(text.clone(), origin),
                other => return Err(err(format!("{det_name}/{ctype}: data is {other:?}, not an array"))),
            }
        }
        Ok(set)
    }
}
