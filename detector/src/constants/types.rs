//! Constant types, their dtypes, and the shapes psana expects per detector (spec §1.1–1.2).

use std::fmt;

/// A calibration constant type (psana's `ctype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CalibType {
    Pedestals,
    PixelGain,
    PixelOffset,
    PixelRms,
    PixelStatus,
    StatusExtra,
    PixelMask,
    CommonMode,
    Geometry,
}

impl CalibType {
    pub const ALL: [CalibType; 9] = [
        CalibType::Pedestals,
        CalibType::PixelGain,
        CalibType::PixelOffset,
        CalibType::PixelRms,
        CalibType::PixelStatus,
        CalibType::StatusExtra,
        CalibType::PixelMask,
        CalibType::CommonMode,
        CalibType::Geometry,
    ];

    /// psana's name, also the calib-dir folder and the `cdb get` file suffix.
    pub fn name(self) -> &'static str {
        match self {
            CalibType::Pedestals => "pedestals",
            CalibType::PixelGain => "pixel_gain",
            CalibType::PixelOffset => "pixel_offset",
            CalibType::PixelRms => "pixel_rms",
            CalibType::PixelStatus => "pixel_status",
            CalibType::StatusExtra => "status_extra",
            CalibType::PixelMask => "pixel_mask",
            CalibType::CommonMode => "common_mode",
            CalibType::Geometry => "geometry",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        CalibType::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The dtype psana stores the constant with (spec §1.1); `None` for the geometry text.
    pub fn dtype(self) -> Option<Dtype> {
        match self {
            CalibType::Pedestals | CalibType::PixelGain | CalibType::PixelOffset | CalibType::PixelRms => {
                Some(Dtype::F32)
            }
            CalibType::PixelStatus | CalibType::StatusExtra => Some(Dtype::U64),
            CalibType::PixelMask => Some(Dtype::U8),
            CalibType::CommonMode => Some(Dtype::F64),
            CalibType::Geometry => None,
        }
    }

    /// Whether the constant has one array per gain range on its first axis.
    fn per_gain_range(self) -> bool {
        matches!(
            self,
            CalibType::Pedestals | CalibType::PixelGain | CalibType::PixelOffset | CalibType::PixelRms
        )
    }
}

impl fmt::Display for CalibType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Element types a constant array may be stored with (numpy names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    U8,
    U16,
    U32,
    U64,
    I16,
    I32,
    I64,
}

impl Dtype {
    pub fn numpy_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
        }
    }

    pub fn from_numpy_name(name: &str) -> Option<Self> {
        [Dtype::F32, Dtype::F64, Dtype::U8, Dtype::U16, Dtype::U32, Dtype::U64, Dtype::I16, Dtype::I32, Dtype::I64]
            .into_iter()
            .find(|d| d.numpy_name() == name)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.numpy_name())
    }
}

/// The detector families psana2 calibrates (spec §1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DetectorKind {
    Jungfrau,
    Epix10ka,
    Epixhr2x2,
    Epixm320,
    Archon,
    /// Opal, Piranha and other cameras: one `(rows, cols)` image, `(raw − ped)/gain`.
    Camera,
}

impl DetectorKind {
    /// From the LCLS-II `detType` of the Names (psana's detector-class prefix).
    pub fn from_det_type(det_type: &str) -> Option<Self> {
        Some(match det_type {
            "jungfrau" | "jungfrauemu" => DetectorKind::Jungfrau,
            "epix10ka" | "epix" | "epix10ka2m" | "epixquad" => DetectorKind::Epix10ka,
            "epixhr2x2" | "epixhr" => DetectorKind::Epixhr2x2,
            "epixm320" | "epixm" => DetectorKind::Epixm320,
            "archon" => DetectorKind::Archon,
            "opal" | "piranha4" | "alvium" | "axis" => DetectorKind::Camera,
            _ => return None,
        })
    }

    /// Gain ranges on the first axis of multi-gain constants; `None` for single-gain detectors.
    pub fn gain_ranges(self) -> Option<usize> {
        match self {
            DetectorKind::Jungfrau | DetectorKind::Epixm320 => Some(3),
            DetectorKind::Epix10ka | DetectorKind::Epixhr2x2 => Some(7),
            DetectorKind::Archon | DetectorKind::Camera => None,
        }
    }

    /// The panel (rows, cols) one segment has, when the type fixes it.
    pub fn fixed_panel(self) -> Option<(usize, usize)> {
        match self {
            DetectorKind::Jungfrau => Some((512, 1024)),
            DetectorKind::Epix10ka => Some((352, 384)),
            DetectorKind::Epixhr2x2 => Some((288, 384)),
            DetectorKind::Epixm320 => Some((192, 384)),
            DetectorKind::Archon | DetectorKind::Camera => None,
        }
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DetectorKind::Jungfrau => "jungfrau",
            DetectorKind::Epix10ka => "epix10ka",
            DetectorKind::Epixhr2x2 => "epixhr2x2",
            DetectorKind::Epixm320 => "epixm320",
            DetectorKind::Archon => "archon",
            DetectorKind::Camera => "camera",
        })
    }
}

/// One detector as calibration sees it: its name (for errors and the calib dir), its family and
/// the shape of one segment's raw array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectorSpec {
    /// The LCLS-II detector name, e.g. `jungfrau`, `epixquad`.
    pub name: String,
    pub kind: DetectorKind,
    /// (rows, cols) of one segment (cameras and Archon: the whole image).
    pub panel: (usize, usize),
}

impl DetectorSpec {
    /// A detector whose type fixes the panel shape (Jungfrau, epix…).
    pub fn new(name: impl Into<String>, kind: DetectorKind) -> Option<Self> {
        Some(DetectorSpec { name: name.into(), kind, panel: kind.fixed_panel()? })
    }

    /// A camera or Archon, whose panel shape comes from its raw array.
    pub fn with_panel(name: impl Into<String>, kind: DetectorKind, panel: (usize, usize)) -> Self {
        DetectorSpec { name: name.into(), kind, panel }
    }

    pub fn panel_pixels(&self) -> usize {
        self.panel.0 * self.panel.1
    }

    /// The shape psana expects for `ctype` when the constants cover `nseg` segments.
    pub fn expected_shape(&self, ctype: CalibType, nseg: usize) -> ExpectedShape {
        let (r, c) = self.panel;
        let Some(ranges) = self.kind.gain_ranges() else {
            return match ctype {
                CalibType::CommonMode => ExpectedShape::OneDim,
                CalibType::Geometry => ExpectedShape::Text,
                _ => ExpectedShape::Exactly(vec![r, c]),
            };
        };
        match ctype {
            CalibType::CommonMode => ExpectedShape::OneDim,
            CalibType::Geometry => ExpectedShape::Text,
            // Status is deployed per gain range; a per-segment one is ANDed as it is (§4).
            CalibType::PixelStatus | CalibType::StatusExtra => {
                ExpectedShape::OneOf(vec![vec![ranges, nseg, r, c], vec![nseg, r, c]])
            }
            CalibType::PixelMask => ExpectedShape::Exactly(vec![nseg, r, c]),
            t if t.per_gain_range() => ExpectedShape::Exactly(vec![ranges, nseg, r, c]),
            _ => unreachable!("every ctype is covered above"),
        }
    }

    /// How many segments a constant of `shape` covers (`shape[-3]`, psana's `shape_as_daq`);
    /// `None` for single-image detectors and non-panel constants.
    pub fn segments_in(&self, ctype: CalibType, shape: &[usize]) -> Option<usize> {
        let panel_constant = !matches!(ctype, CalibType::CommonMode | CalibType::Geometry);
        (self.kind.gain_ranges().is_some() && panel_constant && shape.len() >= 3).then(|| shape[shape.len() - 3])
    }
}

/// What shape a constant must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedShape {
    Exactly(Vec<usize>),
    OneOf(Vec<Vec<usize>>),
    /// Any 1-D array (`common_mode` parameters).
    OneDim,
    /// Not an array (`geometry`).
    Text,
}

impl ExpectedShape {
    pub fn accepts(&self, shape: &[usize]) -> bool {
        match self {
            ExpectedShape::Exactly(s) => s == shape,
            ExpectedShape::OneOf(all) => all.iter().any(|s| s == shape),
            ExpectedShape::OneDim => shape.len() == 1,
            ExpectedShape::Text => false,
        }
    }

    /// The candidate shapes (none for 1-D and text).
    pub fn candidates(&self) -> &[Vec<usize>] {
        match self {
            ExpectedShape::Exactly(s) => std::slice::from_ref(s),
            ExpectedShape::OneOf(all) => all,
            _ => &[],
        }
    }
}

impl fmt::Display for ExpectedShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedShape::Exactly(s) => f.write_str(&shape_str(s)),
            ExpectedShape::OneOf(all) => {
                let s: Vec<String> = all.iter().map(|s| shape_str(s)).collect();
                f.write_str(&s.join(" or "))
            }
            ExpectedShape::OneDim => f.write_str("(n,)"),
            ExpectedShape::Text => f.write_str("text"),
        }
    }
}

/// A shape the way numpy prints it: `(3, 1, 512, 1024)`, `(4,)`.
pub fn shape_str(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    }
}
