//! Geometry and image (spec §5) against oracles written in this file from the spec: the spec's
//! row/col tables for Jungfrau 0.5M, coordinates from §5.2–5.3 in plain loops, the facts of §5.5
//! (shapes, ranges, overlaps, holes), and numpy when the project venv has it.

#[path = "common/jungfrau05m.rs"]
mod jungfrau05m;
use jungfrau05m::{jungfrau05m_col, jungfrau05m_row};
use std::path::PathBuf;
use std::process::Command;

use detector::geometry::defaults::{EPIX10KA_QUAD, EPIXM320, JUNGFRAU_05M, JUNGFRAU_16M, JUNGFRAU_1M, JUNGFRAU_4M};
use detector::geometry::{default_geometry, Geometry, ImageOptions, PixelIndices};
use detector::{DetectorKind, GeometryError};

// ---------- the oracle: spec §5.2–5.4 in plain loops, independent of the crate ----------

/// One placement line of a test geometry: x0, y0, z0, then rot+tilt about z, y, x.
struct Level {
    offset: [f64; 3],
    angles: [f64; 3],
}

fn rotate(a: f64, b: f64, degrees: f64) -> (f64, f64) {
    let r = degrees * (std::f64::consts::PI / 180.0);
    let (s, c) = (r.sin(), r.cos());
    (a * c - b * s, b * c + a * s)
}

/// Spec §5.2 for one point through the levels (segment first, then parents up to the top).
fn place(mut x: f64, mut y: f64, mut z: f64, levels: &[&Level]) -> (f64, f64) {
    for level in levels {
        let (x1, y1) = rotate(x, y, level.angles[0]);
        let (z2, x2) = rotate(z, x1, level.angles[1]);
        let (y3, z3) = rotate(y1, z2, level.angles[2]);
        x = x2 + level.offset[0];
        y = y3 + level.offset[1];
        z = z3 + level.offset[2];
    }
    (x, y)
}

/// Spec §5.3 EPIX10KA:V1 column and row centres.
fn epix10ka_centres() -> (Vec<f64>, Vec<f64>) {
    let mut x = Vec::new();
    for c in 0..384 {
        x.push(if c < 192 { -(100.0 * (191 - c) as f64 + 175.0) } else { 100.0 * (c - 192) as f64 + 175.0 });
    }
    let mut y = Vec::new();
    for r in 0..352 {
        y.push(if r < 176 { 100.0 * (175 - r) as f64 + 175.0 } else { -(100.0 * (r - 176) as f64 + 175.0) });
    }
    (x, y)
}

/// Spec §5.4: (row, col) per pixel and the shape, from coordinates in C order.
fn oracle_indices(xs: &[f64], ys: &[f64], p: f64) -> (Vec<u32>, Vec<u32>, (usize, usize)) {
    let mut xmin = f64::INFINITY;
    let mut ymin = f64::INFINITY;
    for i in 0..xs.len() {
        xmin = xmin.min(xs[i]);
        ymin = ymin.min(ys[i]);
    }
    xmin -= p / 2.0;
    ymin -= p / 2.0;
    let mut rows = Vec::new();
    let mut cols = Vec::new();
    for i in 0..xs.len() {
        rows.push(((xs[i] - xmin) / p).trunc() as u32);
        cols.push(((ys[i] - ymin) / p).trunc() as u32);
    }
    let shape = (*rows.iter().max().unwrap() as usize + 1, *cols.iter().max().unwrap() as usize + 1);
    (rows, cols, shape)
}

/// The epix10ka quad of §5.5 (data lines as given there) through the oracle.
fn epix_quad_oracle() -> (Vec<u32>, Vec<u32>, (usize, usize)) {
    let segments = [
        Level { offset: [20248.0, -20908.0, -60.0], angles: [0.0 + -0.26706, 0.0 + -0.26778, 0.0 + 0.06324] },
        Level { offset: [-20144.0, -20823.0, 10.0], angles: [0.0 + -0.00289, 0.0 + -0.00361, 0.0 + 0.25845] },
        Level { offset: [20150.0, 20934.0, -19.0], angles: [0.0 + 0.25623, 0.0 + -0.06640, 0.0 + 0.05466] },
        Level { offset: [-20254.0, 20797.0, 68.0], angles: [0.0 + 0.08590, 0.0 + -0.07868, 0.0 + -0.08667] },
    ];
    // IP's Z0 is already negative, so it is kept; the camera's parent IP is the zero top.
    let camera = Level { offset: [0.0, 0.0, -100000.0], angles: [90.0, 0.0, 0.0] };
    let top = Level { offset: [0.0; 3], angles: [0.0; 3] };
    let (xc, yc) = epix10ka_centres();
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for segment in &segments {
        for &y in &yc {
            for &x in &xc {
                let (px, py) = place(x, y, 0.0, &[segment, &camera, &top]);
                xs.push(px);
                ys.push(py);
            }
        }
    }
    oracle_indices(&xs, &ys, 100.0)
}

fn indices(default: detector::geometry::DefaultGeometry) -> PixelIndices {
    Geometry::from_default(default).unwrap().pixel_indices()
}

// ---------- Jungfrau 0.5M ----------

#[test]
fn jungfrau_module_default_matches_the_spec_table_pixel_by_pixel() {
    let ix = indices(JUNGFRAU_05M);
    assert_eq!(ix.shape, (514, 1030));
    assert_eq!((ix.segments, ix.segment_rows, ix.segment_cols), (1, 512, 1024));
    for r in 0..512u32 {
        for c in 0..1024u32 {
            let i = (r * 1024 + c) as usize;
            assert_eq!((ix.rows[i], ix.cols[i]), (jungfrau05m_row(r as usize) as u32, jungfrau05m_col(c as usize) as u32), "pixel ({r}, {c})");
        }
    }
    // Corners and the wide-pixel columns either side of each ASIC gap.
    let at = |r: usize, c: usize| (ix.rows[r * 1024 + c], ix.cols[r * 1024 + c]);
    assert_eq!(at(0, 0), (513, 0));
    assert_eq!(at(0, 1023), (513, 1029));
    assert_eq!(at(511, 0), (0, 0));
    assert_eq!(at(511, 1023), (0, 1029));
    assert_eq!([at(0, 255).1, at(0, 256).1, at(0, 511).1, at(0, 512).1, at(0, 767).1, at(0, 768).1], [256, 258, 514, 516, 772, 774]);

    let mapper = Geometry::from_default(JUNGFRAU_05M).unwrap().image_mapper(&[0], ImageOptions::default()).unwrap();
    assert_eq!(mapper.hole_bins().count(), 0, "no holes in the 0.5M default");
    let frame: Vec<f32> = (0..512 * 1024).map(|i| i as f32 + 1.0).collect();
    let image = mapper.assemble(&frame).unwrap();
    assert_eq!(image.len(), 514 * 1030);
    assert_eq!(image.iter().filter(|v| **v == 0.0).count(), 5132, "empty bins");
    // Gap lines (rows 255/257, cols 255, 257, 513, 515, 771, 773) are not holes: they stay 0.
    for c in [255usize, 257, 513, 515, 771, 773] {
        assert!((0..514).all(|r| image[r * 1030 + c] == 0.0), "col {c}");
    }
    for r in [255usize, 257] {
        assert!((0..1030).all(|c| image[r * 1030 + c] == 0.0), "row {r}");
    }
    assert_eq!(image[513 * 1030], 1.0, "pixel (0,0) at image (513,0)");
}

// ---------- epix10ka quad ----------

#[test]
fn epix10ka_quad_default_matches_the_oracle_and_the_spec_facts() {
    let ix = indices(EPIX10KA_QUAD);
    let (rows, cols, shape) = epix_quad_oracle();
    assert_eq!(shape, (775, 793));
    assert_eq!(ix.shape, (775, 793));
    assert_eq!(ix.rows, rows);
    assert_eq!(ix.cols, cols);

    let panel = 352 * 384;
    let expected_ranges = [((418, 774), (404, 792)), ((418, 772), (1, 387)), ((0, 355), (404, 791)), ((2, 356), (0, 386))];
    for (s, ranges) in expected_ranges.iter().enumerate() {
        let seg = s * panel..(s + 1) * panel;
        let r = &ix.rows[seg.clone()];
        let c = &ix.cols[seg];
        let found = ((*r.iter().min().unwrap(), *r.iter().max().unwrap()), (*c.iter().min().unwrap(), *c.iter().max().unwrap()));
        assert_eq!(found, (((ranges.0).0, (ranges.0).1), ((ranges.1).0, (ranges.1).1)), "segment {s}");
    }
    // Corners of segment 0 and its wide-pixel columns 191/192 (350 µm apart → 3 or 4 bins).
    let at = |s: usize, r: usize, c: usize| (ix.rows[s * panel + r * 384 + c], ix.cols[s * panel + r * 384 + c]);
    for (r, c) in [(0, 0), (0, 383), (351, 0), (351, 383), (0, 191), (0, 192), (175, 191), (176, 192)] {
        let i = r * 384 + c;
        assert_eq!(at(0, r, c), (rows[i], cols[i]), "segment 0 pixel ({r}, {c})");
    }

    let mut hits = vec![0u32; 775 * 793];
    for i in 0..rows.len() {
        hits[rows[i] as usize * 793 + cols[i] as usize] += 1;
    }
    assert_eq!(hits.iter().filter(|h| **h > 0).count(), 540661);
    assert_eq!(hits.iter().filter(|h| **h == 2).count(), 11);
}

#[test]
fn epix10ka_quad_image_last_pixel_wins_and_holes_take_the_min_of_four_neighbours() {
    let (rows, cols, (nr, nc)) = epix_quad_oracle();
    let frame: Vec<f32> = (0..rows.len()).map(|i| ((i * 7919) % 100_003) as f32 + 1.0).collect();

    // Oracle image: pixels drawn in C order, a later one overwrites.
    let mut expected = vec![0.0f32; nr * nc];
    let mut drawn = vec![false; nr * nc];
    for i in 0..rows.len() {
        let bin = rows[i] as usize * nc + cols[i] as usize;
        expected[bin] = frame[i];
        drawn[bin] = true;
    }
    let pre_fill = expected.clone();
    let mut holes = Vec::new();
    for r in 0..nr {
        for c in 0..nc {
            let full = |rr: usize, cc: usize| drawn[rr * nc + cc];
            let is_hole = !full(r, c)
                && (r == 0 || full(r - 1, c))
                && (r + 1 == nr || full(r + 1, c))
                && (c == 0 || full(r, c - 1))
                && (c + 1 == nc || full(r, c + 1));
            if is_hole {
                holes.push((r, c));
            }
        }
    }
    assert_eq!(holes.len(), 7, "spec §5.5: 7 holes");
    for &(r, c) in &holes {
        assert!(r > 0 && r + 1 < nr && c > 0 && c + 1 < nc);
        let v = |rr: usize, cc: usize| pre_fill[rr * nc + cc];
        expected[r * nc + c] = v(r - 1, c).min(v(r + 1, c)).min(v(r, c - 1).min(v(r, c + 1)));
    }

    let geometry = Geometry::from_default(EPIX10KA_QUAD).unwrap();
    let mapper = geometry.image_mapper(&[0, 1, 2, 3], ImageOptions::default()).unwrap();
    assert_eq!(mapper.shape(), (775, 793));
    let mut found_holes: Vec<usize> = mapper.hole_bins().collect();
    found_holes.sort();
    assert_eq!(found_holes, holes.iter().map(|(r, c)| r * nc + c).collect::<Vec<_>>());
    let image = mapper.assemble(&frame).unwrap();
    assert_eq!(image, expected);

    // Without filling, holes keep the background.
    let plain = geometry.image_mapper(&[0, 1, 2, 3], ImageOptions { fill_holes: false, background: -1.0 }).unwrap();
    let image = plain.assemble(&frame).unwrap();
    for &(r, c) in &holes {
        assert_eq!(image[r * nc + c], -1.0);
    }
}

#[test]
fn a_daq_subset_keeps_the_full_image_shape_and_draws_only_its_segments() {
    let (rows, cols, (nr, nc)) = epix_quad_oracle();
    let panel = 352 * 384;
    let mapper = Geometry::from_default(EPIX10KA_QUAD).unwrap().image_mapper(&[3, 1], ImageOptions::default()).unwrap();
    assert_eq!(mapper.shape(), (775, 793));
    assert_eq!(mapper.frame_len(), 2 * panel);
    let frame: Vec<f32> = (0..2 * panel).map(|i| if i < panel { 3.0 } else { 1.0 }).collect();
    let image = mapper.assemble(&frame).unwrap();
    let mut expected = vec![0.0f32; nr * nc];
    for (position, segment) in [3usize, 1].into_iter().enumerate() {
        for i in 0..panel {
            let k = segment * panel + i;
            expected[rows[k] as usize * nc + cols[k] as usize] = if position == 0 { 3.0 } else { 1.0 };
        }
    }
    // No hole of the full quad lies between segments 1 and 3 only, except where the oracle says.
    let differing = image.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert_eq!(differing, mapper.hole_bins().count());
    assert!(image.iter().all(|v| *v == 0.0 || *v == 1.0 || *v == 3.0));
}

// ---------- a rotated and tilted geometry ----------

const TILTED: &str = "\
# a test geometry: two small matrices in a tilted, rotated frame
# HDR PARENT IND OBJECT IND X0 Y0 Z0 ROT-Z ROT-Y ROT-X TILT-Z TILT-Y TILT-X

FRAME:V1 0 MTRX:V2:3:5:100:100 0   1000.5  -200   30   90   0   0   0.3   1.1  -0.7
FRAME:V1 0 MTRX:V2:3:5:100:100 1  -1200    650.25 -5   270  0   180 -0.2   0.4   2.5
IP:V1    0 FRAME:V1            0   37      -41    5000 180  0   0   1.25 -0.5   0.25
";

fn tilted_oracle() -> (Vec<f64>, Vec<f64>) {
    let seg0 = Level { offset: [1000.5, -200.0, 30.0], angles: [90.0 + 0.3, 0.0 + 1.1, 0.0 + -0.7] };
    let seg1 = Level { offset: [-1200.0, 650.25, -5.0], angles: [270.0 + -0.2, 0.0 + 0.4, 180.0 + 2.5] };
    // Parent `IP…` with Z0 > 0: psana negates it.
    let frame = Level { offset: [37.0, -41.0, -5000.0], angles: [180.0 + 1.25, 0.0 + -0.5, 0.0 + 0.25] };
    let top = Level { offset: [0.0; 3], angles: [0.0; 3] };
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for segment in [&seg0, &seg1] {
        for r in 0..3 {
            for c in 0..5 {
                let x = (c as f64 - 2.0) * 100.0;
                let y = (r as f64 - 1.0) * -100.0;
                let (px, py) = place(x, y, 0.0, &[segment, &frame, &top]);
                xs.push(px);
                ys.push(py);
            }
        }
    }
    (xs, ys)
}

#[test]
fn rotated_and_tilted_geometry_matches_the_oracle_bit_for_bit() {
    let geometry = Geometry::from_text(TILTED, "tilted.data").unwrap();
    assert_eq!(geometry.segment_count(), 2);
    let coords = geometry.pixel_coords();
    let (xs, ys) = tilted_oracle();
    assert_eq!(coords.x, xs);
    assert_eq!(coords.y, ys);
    let (rows, cols, shape) = oracle_indices(&xs, &ys, 100.0);
    let ix = geometry.pixel_indices();
    assert_eq!((ix.rows, ix.cols, ix.shape), (rows, cols, shape));
}

// ---------- numpy as a second oracle ----------

fn venv_python() -> Option<PathBuf> {
    let python = PathBuf::from(std::env::var_os("HOME")?).join(".cache/beamtime/venv/bin/python");
    let ok = python.exists() && Command::new(&python).args(["-c", "import numpy"]).status().ok()?.success();
    ok.then_some(python)
}

/// Spec §5.2–5.4 in numpy (scalar sin/cos from `math`, as psana) for the epix quad and the tilted
/// geometry; prints rows then cols for each.
const NUMPY_ORACLE: &str = r#"
import math, sys
import numpy as np
def rot(a, b, deg):
    r = math.radians(deg); s, c = math.sin(r), math.cos(r)
    return a*c - b*s, b*c + a*s
def place(X, Y, Z, levels):
    for (x0, y0, z0, az, ay, ax) in levels:
        X1, Y1 = rot(X, Y, az); Z2, X2 = rot(Z, X1, ay); Y3, Z3 = rot(Y1, Z2, ax)
        X, Y, Z = X2 + x0, Y3 + y0, Z3 + z0
    return X, Y, Z
def indices(X, Y, p):
    xmin, ymin = X.min() - p/2, Y.min() - p/2
    return np.array((X - xmin)/p, dtype=np.uint64), np.array((Y - ymin)/p, dtype=np.uint64)
c = np.arange(384); r = np.arange(352)
x = np.where(c < 192, -(100*(191 - c) + 175), 100*(c - 192) + 175).astype(np.float64)
y = np.where(r < 176, 100*(175 - r) + 175, -(100*(r - 176) + 175)).astype(np.float64)
X0, Y0 = np.meshgrid(x, y)
segs = [(20248, -20908, -60, -0.26706, -0.26778, 0.06324), (-20144, -20823, 10, -0.00289, -0.00361, 0.25845),
        (20150, 20934, -19, 0.25623, -0.06640, 0.05466), (-20254, 20797, 68, 0.08590, -0.07868, -0.08667)]
parts = [place(X0, Y0, np.zeros_like(X0), [tuple(map(float, s))]) for s in segs]
X = np.concatenate([p[0] for p in parts]); Y = np.concatenate([p[1] for p in parts]); Z = np.concatenate([p[2] for p in parts])
X, Y, Z = place(X, Y, Z, [(0., 0., -100000., 90., 0., 0.), (0., 0., 0., 0., 0., 0.)])
R, C = indices(X, Y, 100.0)
print(' '.join(map(str, R.ravel()))); print(' '.join(map(str, C.ravel())))
xm = (np.arange(5) - 2.0)*100; ym = (np.arange(3) - 1.0)*-100
Xm, Ym = np.meshgrid(xm, ym)
a = place(Xm, Ym, np.zeros_like(Xm), [(1000.5, -200., 30., 90 + 0.3, 0 + 1.1, 0 + -0.7)])
b = place(Xm, Ym, np.zeros_like(Xm), [(-1200., 650.25, -5., 270 + -0.2, 0 + 0.4, 180 + 2.5)])
X = np.concatenate([a[0], b[0]]); Y = np.concatenate([a[1], b[1]]); Z = np.concatenate([a[2], b[2]])
X, Y, Z = place(X, Y, Z, [(37., -41., -5000., 180 + 1.25, 0 + -0.5, 0 + 0.25), (0., 0., 0., 0., 0., 0.)])
R, C = indices(X, Y, 100.0)
print(' '.join(map(str, R.ravel()))); print(' '.join(map(str, C.ravel())))
print(' '.join(repr(float(v)) for v in X.ravel())); print(' '.join(repr(float(v)) for v in Y.ravel()))
"#;

#[test]
fn numpy_oracle_agrees_on_the_epix_quad_and_the_tilted_geometry() {
    let Some(python) = venv_python() else {
        eprintln!("skipped: no python3 with numpy at ~/.cache/beamtime/venv/bin/python");
        return;
    };
    let out = Command::new(python).args(["-c", NUMPY_ORACLE]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let ints = |l: &str| l.split(' ').map(|v| v.parse::<u32>().unwrap()).collect::<Vec<_>>();
    let floats = |l: &str| l.split(' ').map(|v| v.parse::<f64>().unwrap()).collect::<Vec<_>>();

    let quad = indices(EPIX10KA_QUAD);
    assert_eq!(quad.rows, ints(lines[0]));
    assert_eq!(quad.cols, ints(lines[1]));

    let tilted = Geometry::from_text(TILTED, "tilted.data").unwrap();
    let ix = tilted.pixel_indices();
    assert_eq!(ix.rows, ints(lines[2]));
    assert_eq!(ix.cols, ints(lines[3]));
    let coords = tilted.pixel_coords();
    assert_eq!(coords.x, floats(lines[4]));
    assert_eq!(coords.y, floats(lines[5]));
}

// ---------- other defaults: shapes of spec §5.5 ----------

#[test]
fn other_default_geometries_have_psanas_image_shapes() {
    assert_eq!(indices(JUNGFRAU_1M).shape, (1064, 1030));
    assert_eq!(indices(JUNGFRAU_4M).shape, (2203, 2299));
    assert_eq!(indices(JUNGFRAU_16M).shape, (4432, 4216));
    assert_eq!(indices(JUNGFRAU_16M).segments, 32);
    let m320 = indices(EPIXM320);
    assert_eq!((m320.shape, m320.segments, m320.segment_rows, m320.segment_cols), ((384, 768), 4, 192, 384));
    // Each epixm320 ASIC fills its own 192×384 block without gaps.
    let mut hits = vec![0u8; 384 * 768];
    for i in 0..m320.rows.len() {
        hits[m320.rows[i] as usize * 768 + m320.cols[i] as usize] += 1;
    }
    assert!(hits.iter().all(|h| *h == 1));
}

#[test]
fn default_geometry_is_chosen_per_detector_kind_and_segment_count() {
    assert_eq!(default_geometry(DetectorKind::Jungfrau, 0), Some(JUNGFRAU_05M));
    assert_eq!(default_geometry(DetectorKind::Jungfrau, 1), Some(JUNGFRAU_1M));
    assert_eq!(default_geometry(DetectorKind::Jungfrau, 7), Some(JUNGFRAU_4M));
    assert_eq!(default_geometry(DetectorKind::Jungfrau, 8), Some(JUNGFRAU_16M));
    assert_eq!(default_geometry(DetectorKind::Epix10ka, 3), Some(EPIX10KA_QUAD));
    assert_eq!(default_geometry(DetectorKind::Epixm320, 3), Some(EPIXM320));
    assert_eq!(default_geometry(DetectorKind::Camera, 0), None);
}

// ---------- errors ----------

fn syntax_error(text: &str) -> (usize, String) {
    match Geometry::from_text(text, "geo.data").unwrap_err() {
        GeometryError::Syntax { origin, line, message } => {
            assert_eq!(origin, "geo.data");
            (line, message)
        }
        other => panic!("expected a syntax error, got {other}"),
    }
}

#[test]
fn bad_geometry_text_is_a_typed_error_naming_the_line() {
    let good = "CAMERA 0 EPIX10KA:V1 0 0 0 0 0 0 0 0 0 0\n";
    let (line, message) = syntax_error(&format!("# comment\n\n{good}CAMERA 0 EPIX10KA:V1 1 0 0 0 0 0 0 0 0\n"));
    assert_eq!(line, 4);
    assert!(message.contains("expected 13 fields") && message.contains("found 12"), "{message}");

    let (line, message) = syntax_error(&format!("{good}CAMERA 0 EPIX10KA:V1 1 0 0 zero 0 0 0 0 0 0\n"));
    assert_eq!(line, 2);
    assert!(message.contains("Z0") && message.contains("zero"), "{message}");

    let (line, message) = syntax_error(&format!("{good}CAMERA x EPIX10KA:V1 1 0 0 0 0 0 0 0 0 0\n"));
    assert_eq!(line, 2);
    assert!(message.contains("PARENT_IND"), "{message}");

    // An indented `#` is not a comment for psana.
    let (line, _) = syntax_error(&format!("{good}  # indented comment\n"));
    assert_eq!(line, 2);

    let error = Geometry::from_text(&format!("{good}CAMERA 0 EPIX10KA:V1 1 0 0 nan 0 0 0 0 0 0\n"), "geo.data").unwrap_err();
    assert!(error.to_string().starts_with("geo.data:2: field 7 Z0"), "{error}");
}

#[test]
fn structural_errors_name_the_problem() {
    let unknown = "CAMERA 0 SOMETHING:V9 0 0 0 0 0 0 0 0 0 0\n";
    let error = Geometry::from_text(unknown, "geo.data").unwrap_err();
    assert!(matches!(error, GeometryError::Structure { .. }));
    assert!(error.to_string().contains("line 1: SOMETHING:V9 0 has no children and is not a known segment model"), "{error}");

    let two_tops = "A 0 EPIX10KA:V1 0 0 0 0 0 0 0 0 0 0\nB 0 EPIX10KA:V1 1 0 0 0 0 0 0 0 0 0\n";
    assert!(Geometry::from_text(two_tops, "g").unwrap_err().to_string().contains("several top objects (A 0, B 0)"));

    let mixed = "C 0 EPIX10KA:V1 0 0 0 0 0 0 0 0 0 0\nC 0 JUNGFRAU:V2 1 0 0 0 0 0 0 0 0 0\n";
    assert!(Geometry::from_text(mixed, "g").unwrap_err().to_string().contains("one detector has one panel shape"));

    assert!(matches!(Geometry::from_text("# nothing\n", "g"), Err(GeometryError::Structure { .. })));
    assert!(matches!(
        Geometry::from_file(std::path::Path::new("/nonexistent/geometry.data")),
        Err(GeometryError::Io { .. })
    ));
}

#[test]
fn mapper_rejects_frames_and_segments_that_do_not_fit() {
    let geometry = Geometry::from_default(JUNGFRAU_05M).unwrap();
    let error = geometry.image_mapper(&[1], ImageOptions::default()).unwrap_err();
    assert!(error.to_string().contains("segment 1 is not in the geometry (1 segments"), "{error}");
    let mapper = geometry.image_mapper(&[0], ImageOptions::default()).unwrap();
    let error = mapper.assemble(&[0.0; 10]).unwrap_err();
    assert!(error.to_string().contains("frame has 10 values"), "{error}");
}
