//! psana's LCLS-I calib directory (spec §2.2):
//! `<calib>/<Group>/<source>/<ctype>/<begin>-<end|end>.data`, and which file serves a run.

use std::path::{Path, PathBuf};

use super::types::{CalibType, DetectorKind};
use crate::error::ConstantError;

/// The largest run number a file name may carry; `end` means this.
pub const RUN_MAX: u32 = 9999;

/// `<Group>` for a DetInfo-style source (`MfxEndstation.0:Jungfrau.0`), psana1's table.
pub fn group_for_detinfo(source: &str) -> Option<&'static str> {
    const TABLE: [(&str, &str); 11] = [
        (":Jungfrau.", "Jungfrau::CalibV1"),
        (":Epix10ka2M.", "Epix10ka2M::CalibV1"),
        (":Epix10kaQuad.", "Epix10kaQuad::CalibV1"),
        (":Epix10ka.", "Epix10ka::CalibV1"),
        (":Epix10k.", "Epix10ka::CalibV1"),
        (":Epix100a.", "Epix100a::CalibV1"),
        (":Opal1000.", "Camera::CalibV1"),
        (":Opal4000.", "Camera::CalibV1"),
        (":Opal8000.", "Camera::CalibV1"),
        (":Rayonix.", "Camera::CalibV1"),
        (":Zyla.", "Camera::CalibV1"),
    ];
    TABLE.iter().find(|(key, _)| source.contains(key)).map(|&(_, group)| group)
}

/// `<Group>` candidates for an LCLS-II detector, most likely first (project choice, spec §2.2):
/// an epix10ka is a single panel, a quad or a 2M by its highest segment number.
pub fn groups_for_kind(kind: DetectorKind, max_segment: u32) -> Vec<&'static str> {
    match kind {
        DetectorKind::Jungfrau => vec!["Jungfrau::CalibV1"],
        DetectorKind::Epix10ka => {
            let by_size = match max_segment {
                0 => ["Epix10ka::CalibV1", "Epix10kaQuad::CalibV1", "Epix10ka2M::CalibV1"],
                1..=3 => ["Epix10kaQuad::CalibV1", "Epix10ka2M::CalibV1", "Epix10ka::CalibV1"],
                _ => ["Epix10ka2M::CalibV1", "Epix10kaQuad::CalibV1", "Epix10ka::CalibV1"],
            };
            by_size.to_vec()
        }
        DetectorKind::Epixhr2x2 => vec!["EpixHR2x2::CalibV1"],
        DetectorKind::Epixm320 => vec!["EpixM320::CalibV1"],
        DetectorKind::Archon => vec!["Archon::CalibV1"],
        DetectorKind::Camera => vec!["Camera::CalibV1"],
    }
}

/// The validity range in a calib file name `<begin>-<end|end>.data`; `None` for anything else
/// (other extensions, `HISTORY`, backups `7-end.data-2024…`, numbers above 9999).
pub fn parse_file_name(name: &str) -> Option<(u32, u32)> {
    let stem = name.strip_suffix(".data")?;
    let (begin, end) = stem.split_once('-')?;
    let number = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>().ok().filter(|&n| n <= RUN_MAX)
    };
    let begin = number(begin)?;
    let end = if end == "end" { RUN_MAX } else { number(end)? };
    Some((begin, end))
}

/// psana's choice among `<begin>-<end>.data` names for `run` (clamped to 9999): among files with
/// `begin ≤ run ≤ end` the largest begin, on a tie the smallest end.
pub fn choose_file<'a>(names: impl IntoIterator<Item = &'a str>, run: u32) -> Option<&'a str> {
    let run = run.min(RUN_MAX);
    names
        .into_iter()
        .filter_map(|n| parse_file_name(n).map(|(b, e)| (b, e, n)))
        .filter(|&(b, e, _)| b <= run && run <= e)
        .max_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)).then(y.2.cmp(x.2)))
        .map(|(_, _, n)| n)
}

/// One detector's folder in a calib dir: `<calib>/<Group>/<source>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectorDir {
    pub path: PathBuf,
}

impl DetectorDir {
    /// Finds the detector's folder: `source` is the LCLS-II detector name or a DetInfo string
    /// (whose device type picks the group); the first candidate group that has it wins.
    pub fn find(
        root: &Path,
        detector: &str,
        kind: DetectorKind,
        source: &str,
        max_segment: u32,
    ) -> Result<DetectorDir, ConstantError> {
        let groups = match group_for_detinfo(source) {
            Some(group) => vec![group],
            None => groups_for_kind(kind, max_segment),
        };
        for group in &groups {
            let path = root.join(group).join(source);
            if path.is_dir() {
                return Ok(DetectorDir { path });
            }
        }
        let looked_for = groups.iter().map(|g| format!("{g}/{source}")).collect::<Vec<_>>().join(", ");
        Err(ConstantError::NoDetectorDir { detector: detector.to_string(), root: root.to_path_buf(), looked_for })
    }

    /// The file serving `run` for `ctype`, `None` when the ctype folder is absent or has none.
    pub fn file_for_run(&self, ctype: CalibType, run: u32) -> Result<Option<PathBuf>, ConstantError> {
        let dir = self.path.join(ctype.name());
        if !dir.is_dir() {
            return Ok(None);
        }
        let listing = std::fs::read_dir(&dir)
            .map_err(|e| ConstantError::Listing { path: dir.clone(), message: e.to_string() })?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|e| ConstantError::Listing { path: dir.clone(), message: e.to_string() })?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(choose_file(names.iter().map(String::as_str), run).map(|n| dir.join(n)))
    }
}

/// Where psana1 would deploy a constant: `<root>/<group>/<source>/<ctype>/<begin>-<end|end>.data`.
pub fn deploy_path(root: &Path, group: &str, source: &str, ctype: CalibType, begin: u32, end: Option<u32>) -> PathBuf {
    let name = match end {
        Some(e) => format!("{begin}-{e}.data"),
        None => format!("{begin}-end.data"),
    };
    root.join(group).join(source).join(ctype.name()).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(parse_file_name("7-end.data"), Some((7, 9999)));
        assert_eq!(parse_file_name("0007-12.data"), Some((7, 12)));
        assert_eq!(parse_file_name("7-end.data-2024-01-01T10:00:00"), None);
        assert_eq!(parse_file_name("HISTORY"), None);
        assert_eq!(parse_file_name("7-end.npy"), None);
        assert_eq!(parse_file_name("10000-end.data"), None);
        assert_eq!(parse_file_name("7-8-9.data"), None);
        assert_eq!(parse_file_name("-5.data"), None);
        assert_eq!(parse_file_name("+7-end.data"), None);
    }

    #[test]
    fn choice() {
        let names = ["0-end.data", "5-end.data", "5-20.data", "5-10.data", "30-40.data", "HISTORY"];
        assert_eq!(choose_file(names, 7), Some("5-10.data"), "largest begin, then smallest end");
        assert_eq!(choose_file(names, 15), Some("5-20.data"));
        assert_eq!(choose_file(names, 25), Some("5-end.data"));
        assert_eq!(choose_file(names, 35), Some("30-40.data"));
        assert_eq!(choose_file(names, 3), Some("0-end.data"));
        assert_eq!(choose_file(names, 123456), Some("5-end.data"), "runs above 9999 count as 9999");
        assert_eq!(choose_file(["5-10.data"], 4), None);
        assert_eq!(choose_file(["5-10.data", "05-10.data"], 6), Some("05-10.data"), "same range: a stable choice");
    }
}
