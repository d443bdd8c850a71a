//! Segment models (spec §5.3): a segment's rows × cols and its local pixel centres in µm.
//! `x` runs along columns, `y` along rows, `z = 0`; `X[r,c] = x[c]`, `Y[r,c] = y[r]`.
//! Every centre is a multiple of 12.5 µm, so each is exact in f64 whatever the evaluation order.

/// A segment model psana knows by name in a geometry file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SegmentModel {
    /// `JUNGFRAU:V2`: 512×1024, 75 µm, 2×4 ASICs of 256×256 whose border pixels are 150 µm wide.
    JungfrauV2,
    /// `EPIX10KA:V1`: 352×384, 100 µm, 225 µm wide pixels next to the central cross.
    Epix10kaV1,
    /// `EPIXHR2X2:V1`: 288×384, as epix10ka with 144 rows per half.
    Epixhr2x2V1,
    /// `EPIXHR1X4:V1`: 144×768, 100 µm.
    Epixhr1x4V1,
    /// `MTRX:V2:R:C:pr:pc` (and `EPIXMASIC:V1` = `MTRX:V2:192:384:50:50`): a plain matrix.
    Matrix { rows: usize, cols: usize, row_pitch: f64, col_pitch: f64 },
}

impl SegmentModel {
    /// The model a geometry object name stands for; `None` for containers (`CAMERA`, `IP`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "JUNGFRAU:V2" => SegmentModel::JungfrauV2,
            "EPIX10KA:V1" => SegmentModel::Epix10kaV1,
            "EPIXHR2X2:V1" => SegmentModel::Epixhr2x2V1,
            "EPIXHR1X4:V1" => SegmentModel::Epixhr1x4V1,
            "EPIXMASIC:V1" => SegmentModel::Matrix { rows: 192, cols: 384, row_pitch: 50.0, col_pitch: 50.0 },
            _ => return Self::matrix_from_name(name),
        })
    }

    fn matrix_from_name(name: &str) -> Option<Self> {
        let fields: Vec<&str> = name.strip_prefix("MTRX:V2:")?.split(':').collect();
        let [rows, cols, row_pitch, col_pitch] = fields[..] else { return None };
        let (rows, cols) = (rows.parse().ok()?, cols.parse().ok()?);
        let (row_pitch, col_pitch): (f64, f64) = (row_pitch.parse().ok()?, col_pitch.parse().ok()?);
        let valid = rows > 0 && cols > 0 && row_pitch > 0.0 && col_pitch > 0.0;
        valid.then_some(SegmentModel::Matrix { rows, cols, row_pitch, col_pitch })
    }

    pub fn rows(&self) -> usize {
        match *self {
            SegmentModel::JungfrauV2 => 512,
            SegmentModel::Epix10kaV1 => 352,
            SegmentModel::Epixhr2x2V1 => 288,
            SegmentModel::Epixhr1x4V1 => 144,
            SegmentModel::Matrix { rows, .. } => rows,
        }
    }

    pub fn cols(&self) -> usize {
        match *self {
            SegmentModel::JungfrauV2 => 1024,
            SegmentModel::Epix10kaV1 | SegmentModel::Epixhr2x2V1 => 384,
            SegmentModel::Epixhr1x4V1 => 768,
            SegmentModel::Matrix { cols, .. } => cols,
        }
    }

    /// The pixel scale size psana bins the image with (µm).
    pub fn pixel_scale(&self) -> f64 {
        match *self {
            SegmentModel::JungfrauV2 => 75.0,
            SegmentModel::Epix10kaV1 | SegmentModel::Epixhr2x2V1 | SegmentModel::Epixhr1x4V1 => 100.0,
            SegmentModel::Matrix { row_pitch, col_pitch, .. } => row_pitch.min(col_pitch),
        }
    }

    /// Column centres `x[c]`, µm.
    pub fn x_centers(&self) -> Vec<f64> {
        match *self {
            SegmentModel::JungfrauV2 => (0..1024).map(jungfrau_x).collect(),
            SegmentModel::Epix10kaV1 | SegmentModel::Epixhr2x2V1 => (0..384).map(|c| epix_x(c, 192)).collect(),
            SegmentModel::Epixhr1x4V1 => {
                let right: Vec<f64> = (0..192)
                    .map(|j| 100.0 * j as f64 + 175.0)
                    .chain((0..192).map(|j| 100.0 * j as f64 + 19725.0))
                    .collect();
                right.iter().rev().map(|x| -x).chain(right.iter().copied()).collect()
            }
            SegmentModel::Matrix { cols, col_pitch, .. } => {
                (0..cols).map(|c| (c as f64 - (cols as f64 - 1.0) / 2.0) * col_pitch).collect()
            }
        }
    }

    /// Row centres `y[r]`, µm.
    pub fn y_centers(&self) -> Vec<f64> {
        match *self {
            SegmentModel::JungfrauV2 => (0..512).map(jungfrau_y).collect(),
            SegmentModel::Epix10kaV1 => (0..352).map(|r| epix_y(r, 176)).collect(),
            SegmentModel::Epixhr2x2V1 => (0..288).map(|r| epix_y(r, 144)).collect(),
            SegmentModel::Epixhr1x4V1 => {
                let upper: Vec<f64> = (0..72).map(|i| 100.0 * i as f64 - 50.0).collect();
                upper.iter().rev().copied().chain(upper.iter().map(|y| -y)).collect()
            }
            SegmentModel::Matrix { rows, row_pitch, .. } => {
                (0..rows).map(|r| (r as f64 - (rows as f64 - 1.0) / 2.0) * -row_pitch).collect()
            }
        }
    }
}

/// Jungfrau columns: four ASICs of 256 with a 2-pixel gap; the pixels either side of a gap are
/// 150 µm wide, so their centres move 37.5 µm into it.
fn jungfrau_x(c: usize) -> f64 {
    const ASIC_START: [f64; 4] = [-514.5, -256.5, 1.5, 259.5];
    let centre = (ASIC_START[c / 256] + (c % 256) as f64) * 75.0;
    match c {
        255 | 511 | 767 => centre + 37.5,
        256 | 512 | 768 => centre - 37.5,
        _ => centre,
    }
}

fn jungfrau_y(r: usize) -> f64 {
    const ASIC_START: [f64; 2] = [-256.5, 1.5];
    let centre = (ASIC_START[r / 256] + (r % 256) as f64) * 75.0;
    match r {
        255 => centre + 37.5,
        256 => centre - 37.5,
        _ => centre,
    }
}

/// epix columns: 100 µm pixels, the two next to the centre 225 µm wide (centres ±175 µm).
fn epix_x(c: usize, half: usize) -> f64 {
    if c < half {
        -(100.0 * (half - 1 - c) as f64 + 175.0)
    } else {
        100.0 * (c - half) as f64 + 175.0
    }
}

/// epix rows: row 0 at the top (+y).
fn epix_y(r: usize, half: usize) -> f64 {
    if r < half {
        100.0 * (half - 1 - r) as f64 + 175.0
    } else {
        -(100.0 * (r - half) as f64 + 175.0)
    }
}
