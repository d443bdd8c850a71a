//! psana's default geometries (spec §5.5, `pscalib/geometry/data/geometry-def-*.data`, data lines
//! only), used when a detector has no `geometry` constant.

use crate::constants::DetectorKind;

/// A default geometry: psana's file name and its data lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultGeometry {
    pub name: &'static str,
    pub text: &'static str,
}

pub const JUNGFRAU_05M: DefaultGeometry =
    DefaultGeometry { name: "geometry-def-jungfrau05M.data", text: include_str!("data/geometry-def-jungfrau05M.data") };
pub const JUNGFRAU_1M: DefaultGeometry =
    DefaultGeometry { name: "geometry-def-jungfrau1M.data", text: include_str!("data/geometry-def-jungfrau1M.data") };
pub const JUNGFRAU_4M: DefaultGeometry =
    DefaultGeometry { name: "geometry-def-jungfrau4M.data", text: include_str!("data/geometry-def-jungfrau4M.data") };
pub const JUNGFRAU_16M: DefaultGeometry =
    DefaultGeometry { name: "geometry-def-jungfrau16M.data", text: include_str!("data/geometry-def-jungfrau16M.data") };
pub const EPIX10KA_QUAD: DefaultGeometry = DefaultGeometry {
    name: "geometry-def-epix10kaquad.data",
    text: include_str!("data/geometry-def-epix10kaquad.data"),
};
pub const EPIXM320: DefaultGeometry =
    DefaultGeometry { name: "geometry-def-epixm320.data", text: include_str!("data/geometry-def-epixm320.data") };

/// The default psana picks for a detector whose largest daq segment number is `max_segment`:
/// Jungfrau by total module count (1, 2, 8 or 32 from the largest segment number, as
/// `jungfrau_segments_tot`), epix10ka the quad, epixm320 its 4 ASICs. `None` where beamtime has no
/// default (epixhr2x2, Archon, cameras: a camera's image is its frame).
pub fn default_geometry(kind: DetectorKind, max_segment: u32) -> Option<DefaultGeometry> {
    match kind {
        DetectorKind::Jungfrau => Some(match max_segment {
            0 => JUNGFRAU_05M,
            1 => JUNGFRAU_1M,
            2..=7 => JUNGFRAU_4M,
            _ => JUNGFRAU_16M,
        }),
        DetectorKind::Epix10ka => Some(EPIX10KA_QUAD),
        DetectorKind::Epixm320 => Some(EPIXM320),
        DetectorKind::Epixhr2x2 | DetectorKind::Archon | DetectorKind::Camera => None,
    }
}
