//! The object tree of a geometry file and pixel coordinates (spec §5.1–5.2): each object is placed
//! in its parent's frame; segments are the leaves named by a segment model; children keep file order.

use std::path::Path;

use crate::error::GeometryError;
use crate::geometry::segments::SegmentModel;
use crate::geometry::text::{parse_geometry_text, GeometryLine};

/// An object's placement in its parent's frame.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Placement {
    pub x0: f64,
    pub y0: f64,
    pub z0: f64,
    /// Rotation + tilt about z, y, x, degrees (psana's `do_tilt=True`).
    pub angle_z: f64,
    pub angle_y: f64,
    pub angle_x: f64,
}

impl Placement {
    fn from_line(line: &GeometryLine) -> Self {
        Placement {
            x0: line.x0,
            y0: line.y0,
            z0: line.z0,
            angle_z: line.rot_z + line.tilt_z,
            angle_y: line.rot_y + line.tilt_y,
            angle_x: line.rot_x + line.tilt_x,
        }
    }

    /// Rotates about z, then y, then x, then translates — in place, in psana's exact operation
    /// order (image indices of wide pixels sit on bin edges, so rounding matters; no FMA).
    pub fn transform(&self, x: &mut [f64], y: &mut [f64], z: &mut [f64]) {
        let (sz, cz) = sin_cos_degrees(self.angle_z);
        let (sy, cy) = sin_cos_degrees(self.angle_y);
        let (sx, cx) = sin_cos_degrees(self.angle_x);
        for ((x, y), z) in x.iter_mut().zip(y.iter_mut()).zip(z.iter_mut()) {
            let x1 = *x * cz - *y * sz;
            let y1 = *y * cz + *x * sz;
            let z2 = *z * cy - x1 * sy;
            let x2 = x1 * cy + *z * sy;
            let y3 = y1 * cx - z2 * sx;
            let z3 = z2 * cx + y1 * sx;
            *x = x2 + self.x0;
            *y = y3 + self.y0;
            *z = z3 + self.z0;
        }
    }
}

/// Python's `math.radians` then libm's sin and cos.
fn sin_cos_degrees(degrees: f64) -> (f64, f64) {
    let radians = degrees * (std::f64::consts::PI / 180.0);
    (radians.sin(), radians.cos())
}

#[derive(Clone, Debug)]
struct GeometryObject {
    name: String,
    index: i64,
    placement: Placement,
    model: Option<SegmentModel>,
    children: Vec<usize>,
    line: usize,
}

/// A parsed geometry: one tree whose leaves are the detector's segments in psana's order.
#[derive(Clone, Debug)]
pub struct Geometry {
    objects: Vec<GeometryObject>,
    top: usize,
    /// Leaves depth-first in file order = segment numbers 0, 1, …
    segments: Vec<usize>,
    origin: String,
}

/// Pixel centres of every segment, `(segments, rows, cols)` in C order, µm, psana's frame.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelCoords {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub z: Vec<f64>,
    pub segments: usize,
    pub rows: usize,
    pub cols: usize,
    /// The first segment's pixel scale: psana's image bin size (µm).
    pub pixel_scale: f64,
}

impl Geometry {
    /// Reads a geometry file (psana's text format, e.g. a `geometry` constant).
    pub fn from_file(path: &Path) -> Result<Self, GeometryError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| GeometryError::Io { path: path.to_path_buf(), message: e.to_string() })?;
        Self::from_text(&text, &path.display().to_string())
    }

    /// Parses geometry text; `origin` (file name or constant name) prefixes errors.
    pub fn from_text(text: &str, origin: &str) -> Result<Self, GeometryError> {
        Self::from_lines(&parse_geometry_text(text, origin)?, origin)
    }

    /// Builds the tree: an object's parent is the first line defining (PARENT, PARENT_IND); a
    /// parent never defined becomes the top object with a zero placement.
    pub fn from_lines(lines: &[GeometryLine], origin: &str) -> Result<Self, GeometryError> {
        let structure = |message: String| GeometryError::Structure { origin: origin.to_string(), message };
        if lines.is_empty() {
            return Err(structure("no data lines".into()));
        }
        let mut objects: Vec<GeometryObject> = lines
            .iter()
            .map(|line| GeometryObject {
                name: line.object.clone(),
                index: line.object_index,
                placement: Placement::from_line(line),
                model: SegmentModel::from_name(&line.object),
                children: Vec::new(),
                line: line.line,
            })
            .collect();
        let mut undefined_parents: Vec<(String, i64)> = Vec::new();
        for (child, line) in lines.iter().enumerate() {
            let defined = lines.iter().position(|l| l.object == line.parent && l.object_index == line.parent_index);
            let parent = match defined {
                Some(parent) => parent,
                None => {
                    let key = (line.parent.clone(), line.parent_index);
                    match undefined_parents.iter().position(|k| *k == key) {
                        Some(k) => lines.len() + k,
                        None => {
                            undefined_parents.push(key);
                            lines.len() + undefined_parents.len() - 1
                        }
                    }
                }
            };
            if parent >= objects.len() {
                let (name, index) = undefined_parents[parent - lines.len()].clone();
                objects.push(GeometryObject {
                    name,
                    index,
                    placement: Placement::default(),
                    model: None,
                    children: Vec::new(),
                    line: 0,
                });
            }
            objects[parent].children.push(child);
        }
        // psana silently keeps only the last top object; several tops mean segments would vanish.
        let top = match undefined_parents.len() {
            1 => lines.len(),
            0 => return Err(structure("no top object: every parent is defined, so the objects form a cycle".into())),
            _ => {
                let names: Vec<String> = undefined_parents.iter().map(|(n, i)| format!("{n} {i}")).collect();
                return Err(structure(format!("several top objects ({}): expected one tree", names.join(", "))));
            }
        };
        let mut segments = Vec::new();
        let mut visiting = vec![false; objects.len()];
        collect_segments(&objects, top, &mut segments, &mut visiting, origin)?;
        let reached = visiting.iter().filter(|v| **v).count();
        if reached != objects.len() {
            let stray = (0..lines.len()).find(|&i| !visiting[i]).map(|i| lines[i].line).unwrap_or(0);
            return Err(structure(format!("line {stray}: object is not connected to the top object (a cycle)")));
        }
        if segments.is_empty() {
            return Err(structure("no segment objects (known models: JUNGFRAU:V2, EPIX10KA:V1, EPIXHR2X2:V1, EPIXHR1X4:V1, EPIXMASIC:V1, MTRX:V2:R:C:pr:pc)".into()));
        }
        let first = objects[segments[0]].model.expect("segments have models");
        for &s in &segments {
            let model = objects[s].model.expect("segments have models");
            if (model.rows(), model.cols()) != (first.rows(), first.cols()) {
                return Err(structure(format!(
                    "line {}: segment {} is {}×{}, the first segment {}×{}: one detector has one panel shape",
                    objects[s].line,
                    objects[s].name,
                    model.rows(),
                    model.cols(),
                    first.rows(),
                    first.cols()
                )));
            }
        }
        Ok(Geometry { objects, top, segments, origin: origin.to_string() })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of segments (leaves) in the geometry.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Segment models in segment order.
    pub fn segment_models(&self) -> Vec<SegmentModel> {
        self.segments.iter().map(|&s| self.objects[s].model.expect("segments have models")).collect()
    }

    /// Pixel centres of all segments in psana's frame: each segment's local centres, transformed
    /// by its own placement and then by each ancestor's up to the top.
    pub fn pixel_coords(&self) -> PixelCoords {
        let (x, y, z) = self.object_coords(self.top);
        let model = self.objects[self.segments[0]].model.expect("segments have models");
        PixelCoords {
            x,
            y,
            z,
            segments: self.segments.len(),
            rows: model.rows(),
            cols: model.cols(),
            pixel_scale: model.pixel_scale(),
        }
    }

    fn object_coords(&self, object: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let this = &self.objects[object];
        let (mut x, mut y, mut z) = match this.model {
            Some(model) => {
                let (xc, yc) = (model.x_centers(), model.y_centers());
                let x: Vec<f64> = yc.iter().flat_map(|_| xc.iter().copied()).collect();
                let y: Vec<f64> = yc.iter().flat_map(|&yr| std::iter::repeat_n(yr, xc.len())).collect();
                let z = vec![0.0; x.len()];
                (x, y, z)
            }
            None => {
                let (mut x, mut y, mut z) = (Vec::new(), Vec::new(), Vec::new());
                for &child in &this.children {
                    let (cx, cy, cz) = self.object_coords(child);
                    x.extend(cx);
                    y.extend(cy);
                    z.extend(cz);
                }
                (x, y, z)
            }
        };
        this.placement.transform(&mut x, &mut y, &mut z);
        (x, y, z)
    }
}

fn collect_segments(
    objects: &[GeometryObject],
    object: usize,
    segments: &mut Vec<usize>,
    visiting: &mut [bool],
    origin: &str,
) -> Result<(), GeometryError> {
    visiting[object] = true;
    let this = &objects[object];
    let structure = |message: String| GeometryError::Structure { origin: origin.to_string(), message };
    match (this.model, this.children.is_empty()) {
        (Some(_), true) => segments.push(object),
        (Some(_), false) => {
            return Err(structure(format!(
                "line {}: {} {} is a segment model but has children",
                this.line, this.name, this.index
            )))
        }
        (None, true) => {
            return Err(structure(format!(
                "line {}: {} {} has no children and is not a known segment model",
                this.line, this.name, this.index
            )))
        }
        (None, false) => {
            for &child in &this.children {
                collect_segments(objects, child, segments, visiting, origin)?;
            }
        }
    }
    Ok(())
}
