//! From "this detector, this run" to a ready calibrator and image mapper: where the constants
//! come from ([`CalibSource`]: psana's calib dir, `cdb get` exports, psana2's cache pickle, single
//! files, a user mask, common-mode parameters) and what psana's fallbacks were, said once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::calib::{Calibrator, CommonMode, Epix10kaConfig};
use crate::constants::cache::CalibCache;
use crate::constants::cdb::scan_exports;
use crate::constants::{CalibType, DetectorConstants, DetectorKind, DetectorSpec};
use crate::geometry::defaults::default_geometry;
use crate::geometry::image::{ImageMapper, ImageOptions, PixelIndices};
use crate::geometry::tree::Geometry;
use crate::settings::{CalibSetting, CalibValue};

/// Where a process finds constants: a calib dir and the `--calib` settings. Cache pickles are
/// read once.
pub struct CalibSource {
    pub calib_dir: Option<PathBuf>,
    pub settings: Vec<CalibSetting>,
    caches: HashMap<PathBuf, Result<Arc<CalibCache>, String>>,
}

/// One detector ready for one run: its calibrator, psana's fallbacks and the constants' origin
/// (`notices`), and its image mappers, made when first asked for.
pub struct PreparedDetector {
    pub spec: DetectorSpec,
    pub calibrator: Calibrator,
    pub notices: Vec<String>,
    geometry_text: Option<(String, String)>,
    indices: Option<Result<Arc<PixelIndices>, String>>,
    /// Per list of daq segments in the frame.
    mappers: HashMap<Vec<u32>, Arc<ImageMapper>>,
    /// The good image bins, per list of daq segments (made once: the mask does not change).
    coverages: HashMap<Vec<u32>, Arc<Vec<bool>>>,
}

impl CalibSource {
    pub fn new(calib_dir: Option<PathBuf>, settings: Vec<CalibSetting>) -> Self {
        CalibSource { calib_dir, settings, caches: HashMap::new() }
    }

    /// Whether any constants are given at all.
    pub fn is_empty(&self) -> bool {
        self.calib_dir.is_none() && self.settings.is_empty()
    }

    /// The calibrator of `spec`'s detector for `run`; `max_segment` picks the calib-dir group
    /// and default geometry, `epix` holds each epix10ka or epixhr2x2 segment's config.
    pub fn prepare(
        &mut self,
        spec: &DetectorSpec,
        run: u32,
        max_segment: u32,
        epix: &[(u32, Epix10kaConfig)],
    ) -> Result<PreparedDetector, String> {
        let det = spec.name.as_str();
        let (mut constants, origin) = self.constants(spec, run, max_segment)?;
        let mut notices = vec![format!("{det} run {run}: constants from {origin}")];
        let mut cmpars = None;
        // Constants first, pedestals leading (their segment count is the one the others must
        // match), then the user mask.
        let mut applying: Vec<&CalibSetting> = self.settings.iter().filter(|s| s.applies_to(det)).collect();
        applying.sort_by_key(|s| match &s.value {
            CalibValue::Constant(ctype, _) => (0, Some(*ctype)),
            _ => (1, None),
        });
        for s in applying {
            match &s.value {
                CalibValue::Constant(ctype, path) => constants.load_file(*ctype, path).map_err(|e| e.to_string())?,
                CalibValue::Mask(path) => constants.load_user_mask(path).map_err(|e| e.to_string())?,
                CalibValue::CommonMode(p) => cmpars = Some(p.clone()),
                CalibValue::Cache(_) | CalibValue::Exports(_) => {}
            }
        }
        let wanted = match spec.kind {
            DetectorKind::Epix10ka => Some("asicPixelConfig + trbit, or cbitsConfig"),
            DetectorKind::Epixhr2x2 => Some("asicPixelConfig + trbit"),
            _ => None,
        };
        if let Some(wanted) = wanted
            && epix.is_empty()
        {
            return Err(format!(
                "`{det}.raw.calib`: the Configure has no {} config record for {det} ({wanted}): the gain modes are unknown",
                spec.kind
            ));
        }
        let mut calibrator = Calibrator::new(&constants, epix).map_err(|e| e.to_string())?;
        if let Some(p) = cmpars {
            let cm = match p.first() {
                None | Some(0.0) => None,
                _ => Some(CommonMode::from_params(&p).map_err(|e| format!("{det}: {e}"))?),
            };
            calibrator.set_common_mode(cm).map_err(|e| e.to_string())?;
            if let Some(cm) = cm {
                notices.push(format!("{det}: common mode cmpars {p:?} (alg {}, mode {})", cm.alg, cm.mode));
            }
        }
        notices.extend(calibrator.fallbacks().iter().map(|f| format!("{det} run {run}: {f}")));
        let geometry_text = constants.geometry().map(|(t, p)| (t.to_string(), p.display().to_string()));
        Ok(PreparedDetector { spec: spec.clone(), calibrator, notices, geometry_text, indices: None, mappers: HashMap::new(), coverages: HashMap::new() })
    }

    /// The detector's constants: the settings' cache or exports, else the calib dir; with only
    /// single files, those alone. Returns where they came from.
    fn constants(&mut self, spec: &DetectorSpec, run: u32, max_segment: u32) -> Result<(DetectorConstants, String), String> {
        let det = spec.name.as_str();
        let applying: Vec<&CalibSetting> = self.settings.iter().filter(|s| s.applies_to(det)).collect();
        let named = |f: fn(&CalibValue) -> Option<&PathBuf>| applying.iter().find_map(|s| f(&s.value).cloned());
        if let Some(path) = named(|v| if let CalibValue::Cache(p) = v { Some(p) } else { None }) {
            let cache = self
                .caches
                .entry(path.clone())
                .or_insert_with(|| CalibCache::read(&path).map(Arc::new).map_err(|e| e.to_string()))
                .clone()?;
            let constants = cache.detector_constants(spec.clone(), det).map_err(|e| e.to_string())?;
            return Ok((constants, format!("psana's calibration cache {}", path.display())));
        }
        if let Some(dir) = named(|v| if let CalibValue::Exports(p) = v { Some(p) } else { None }) {
            let files = scan_exports(&dir, Some(det)).map_err(|e| e.to_string())?;
            if !files.contains_key(&CalibType::Pedestals) {
                return Err(format!("{det}: no pedestals among the `cdb get` exports in {}", dir.display()));
            }
            let constants =
                DetectorConstants::from_files(spec.clone(), files.iter().map(|(c, p)| (*c, p.as_path()))).map_err(|e| e.to_string())?;
            return Ok((constants, format!("`cdb get` exports in {}", dir.display())));
        }
        let has_files = applying.iter().any(|s| matches!(s.value, CalibValue::Constant(..)));
        match &self.calib_dir {
            Some(root) => {
                let constants =
                    DetectorConstants::from_calib_dir(spec.clone(), root, det, run, max_segment).map_err(|e| e.to_string())?;
                Ok((constants, format!("the calib dir {}", root.display())))
            }
            None if has_files => Ok((DetectorConstants::new(spec.clone()), "--calib files".to_string())),
            None => Err(format!(
                "`{det}.raw.calib` needs calibration constants: give --calib-dir DIR (or --calib pedestals=FILE, cache=FILE, exports=DIR) to beamtime run, or %source … --calib-dir DIR"
            )),
        }
    }
}

impl PreparedDetector {
    /// The image bins that hold a good pixel of a frame of `segments` (psana's default mask and
    /// the user mask): what radial profiles average over.
    pub fn image_coverage(&mut self, segments: &[u32]) -> Result<Arc<Vec<bool>>, String> {
        // (The bin size, for q, is the mapper's: `mapper(segments)?.pixel_size_um()`.)
        if let Some(c) = self.coverages.get(segments) {
            return Ok(c.clone());
        }
        let mapper = self.mapper(segments)?;
        let mut good = vec![0u8; mapper.frame_len()];
        self.calibrator.mask(segments, &mut good).map_err(|e| e.to_string())?;
        let coverage = Arc::new(mapper.coverage(&good));
        self.coverages.insert(segments.to_vec(), coverage.clone());
        Ok(coverage)
    }

    /// The image mapper for a frame holding `segments` (daq numbers, in frame order).
    pub fn mapper(&mut self, segments: &[u32]) -> Result<Arc<ImageMapper>, String> {
        if let Some(m) = self.mappers.get(segments) {
            return Ok(m.clone());
        }
        let spec = &self.spec;
        let max_segment = segments.iter().copied().max().unwrap_or(0);
        let geometry_text = &self.geometry_text;
        let indices = self
            .indices
            .get_or_insert_with(|| {
                let geometry = match geometry_text {
                    Some((text, origin)) => Geometry::from_text(text, origin),
                    None => {
                        let default = default_geometry(spec.kind, max_segment).ok_or_else(|| {
                            format!("{}: no geometry constant and psana has no default geometry for a {}", spec.name, spec.kind)
                        })?;
                        Geometry::from_text(default.text, default.name)
                    }
                }
                .map_err(|e| e.to_string())?;
                Ok(Arc::new(PixelIndices::from_coords(&geometry.pixel_coords())))
            })
            .clone()?;
        if indices.segment_pixels() != spec.panel_pixels() {
            return Err(format!(
                "the geometry's segments have {}×{} pixels, the detector's panels {}×{}",
                indices.segment_rows, indices.segment_cols, spec.panel.0, spec.panel.1
            ));
        }
        let mapper = Arc::new(ImageMapper::new(&indices, segments, ImageOptions::default()).map_err(|e| e.to_string())?);
        self.mappers.insert(segments.to_vec(), mapper.clone());
        Ok(mapper)
    }
}

impl Epix10kaConfig {
    /// A segment's config from its Configure record, given a lookup of its integer fields.
    /// epix10ka: raw 3.0.1 has `cbitsConfig`, 2.0.1 `asicPixelConfig` `(4,176,192)` and `trbit`;
    /// epixhr2x2: `asicPixelConfig` (110592 flat) and `trbit`. `None` when neither, or for
    /// other detector kinds.
    pub fn from_fields(kind: DetectorKind, field: impl Fn(&str) -> Option<Vec<i64>>) -> Option<Self> {
        let trbit = || {
            let t = field("trbit").unwrap_or_default();
            std::array::from_fn(|i| t.get(i).copied().unwrap_or(0) as u8)
        };
        match kind {
            DetectorKind::Epix10ka => {
                if let Some(cbits) = field("cbitsConfig") {
                    return Some(Epix10kaConfig::Panel { cbits: cbits.into_iter().map(|v| v as u8).collect() });
                }
                let pca = field("asicPixelConfig")?;
                Some(Epix10kaConfig::Asics { asic_pixel_config: pca.into_iter().map(|v| v as u8).collect(), trbit: trbit() })
            }
            DetectorKind::Epixhr2x2 => {
                let pca = field("asicPixelConfig")?;
                Some(Epix10kaConfig::HrAsics { asic_pixel_config: pca.into_iter().map(|v| v as u8).collect(), trbit: trbit() })
            }
            _ => None,
        }
    }
}
