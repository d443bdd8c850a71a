//! Files `cdb get` exports (spec §2.4): `clb-<exp>-<det>-r<run:04d>-<ctype>.{npy,data,meta}`.
//! The `.npy` is exact and preferred; the `.data` is NDArrIO text rounded to `%.3f`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::types::CalibType;
use crate::error::ConstantError;

/// What a `cdb get` file name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportName {
    pub experiment: String,
    pub detector: String,
    pub run: u32,
    pub ctype: CalibType,
    pub extension: String,
}

/// Parses `clb-<exp>-<det>-r<NNNN>-<ctype>.<ext>`; the detector name may contain dashes.
pub fn parse_export_name(name: &str) -> Option<ExportName> {
    let (stem, extension) = name.rsplit_once('.')?;
    let rest = stem.strip_prefix("clb-")?;
    let (head, ctype) = rest.rsplit_once('-')?;
    let ctype = CalibType::from_name(ctype)?;
    let (head, run) = head.rsplit_once('-')?;
    let run = run.strip_prefix('r')?;
    if run.is_empty() || !run.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (experiment, detector) = head.split_once('-')?;
    Some(ExportName {
        experiment: experiment.to_string(),
        detector: detector.to_string(),
        run: run.parse().ok()?,
        ctype,
        extension: extension.to_string(),
    })
}

/// The exported constant files in `dir`, one per ctype (`.npy` over `.data`), optionally only
/// those of `detector`. Two exports of one ctype (another run or detector) are an error: the
/// caller names the one it means with `--calib <ctype>=FILE`.
pub fn scan_exports(dir: &Path, detector: Option<&str>) -> Result<BTreeMap<CalibType, PathBuf>, ConstantError> {
    let listing_err = |e: std::io::Error| ConstantError::Listing { path: dir.to_path_buf(), message: e.to_string() };
    let mut found: BTreeMap<CalibType, (ExportName, PathBuf)> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(listing_err)? {
        let entry = entry.map_err(listing_err)?;
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Some(export) = parse_export_name(&name) else { continue };
        if !matches!(export.extension.as_str(), "npy" | "data") || detector.is_some_and(|d| d != export.detector) {
            continue;
        }
        let path = entry.path();
        match found.get(&export.ctype) {
            None => {
                found.insert(export.ctype, (export, path));
            }
            Some((held, held_path)) => {
                let same_prefix =
                    held.experiment == export.experiment && held.detector == export.detector && held.run == export.run;
                if !same_prefix {
                    return Err(ConstantError::Listing {
                        path: dir.to_path_buf(),
                        message: format!(
                            "two exports of {}: {} and {}; give the one you mean with --calib {}=FILE",
                            export.ctype,
                            held_path.display(),
                            path.display(),
                            export.ctype
                        ),
                    });
                }
                if export.extension == "npy" {
                    found.insert(export.ctype, (export, path));
                }
            }
        }
    }
    Ok(found.into_iter().map(|(c, (_, p))| (c, p)).collect())
}

/// The `.meta` beside an export: `'%12s: %s' % (key, value)` lines.
pub fn read_meta(path: &Path) -> Result<BTreeMap<String, String>, ConstantError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConstantError::Listing { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_names() {
        let n = parse_export_name("clb-mfx101332224-jungfrau_000003-r0007-pixel_status.npy").unwrap();
        assert_eq!(n.experiment, "mfx101332224");
        assert_eq!(n.detector, "jungfrau_000003");
        assert_eq!(n.run, 7);
        assert_eq!(n.ctype, CalibType::PixelStatus);
        assert_eq!(n.extension, "npy");
        let n = parse_export_name("clb-ueddaq02-epix-quad-r0109-pedestals.data").unwrap();
        assert_eq!(n.detector, "epix-quad");
        assert!(parse_export_name("clb-x-y-r0001-nonsense.npy").is_none());
        assert!(parse_export_name("7-end.data").is_none());
    }
}
