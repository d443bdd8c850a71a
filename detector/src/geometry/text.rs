//! psana's geometry text format (spec §5.1): one object per data line, 13 whitespace-separated
//! fields; `#` in the first column starts a comment, empty lines are skipped.

use crate::error::GeometryError;

/// One data line: an object placed in its parent's frame (µm, degrees).
#[derive(Clone, Debug, PartialEq)]
pub struct GeometryLine {
    /// 1-based line number in the text, for errors.
    pub line: usize,
    pub parent: String,
    pub parent_index: i64,
    pub object: String,
    pub object_index: i64,
    pub x0: f64,
    pub y0: f64,
    /// Already negated when the parent is `IP…` and the file gave a positive value (psana's rule).
    pub z0: f64,
    pub rot_z: f64,
    pub rot_y: f64,
    pub rot_x: f64,
    pub tilt_z: f64,
    pub tilt_y: f64,
    pub tilt_x: f64,
}

const FIELD_NAMES: [&str; 13] = [
    "PARENT", "PARENT_IND", "OBJECT", "OBJECT_IND", "X0", "Y0", "Z0", "ROT_Z", "ROT_Y", "ROT_X", "TILT_Z",
    "TILT_Y", "TILT_X",
];

/// Parses the data lines of a geometry text; `origin` (a file name) prefixes every error.
pub fn parse_geometry_text(text: &str, origin: &str) -> Result<Vec<GeometryLine>, GeometryError> {
    let mut lines = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = number + 1;
        // psana only treats `#` in the first column as a comment: an indented one is a bad data line.
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let syntax = |message: String| GeometryError::Syntax { origin: origin.to_string(), line, message };
        let fields: Vec<&str> = raw.split_whitespace().collect();
        if fields.len() != 13 {
            return Err(syntax(format!(
                "expected 13 fields (PARENT PARENT_IND OBJECT OBJECT_IND X0 Y0 Z0 ROT_Z ROT_Y ROT_X TILT_Z TILT_Y TILT_X), found {}",
                fields.len()
            )));
        }
        let index = |i: usize| {
            fields[i].parse::<i64>().map_err(|_| {
                syntax(format!("field {} {}: {:?} is not an integer", i + 1, FIELD_NAMES[i], fields[i]))
            })
        };
        let number = |i: usize| match fields[i].parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(value),
            _ => Err(syntax(format!("field {} {}: {:?} is not a finite number", i + 1, FIELD_NAMES[i], fields[i]))),
        };
        let parent = fields[0].to_string();
        let z0 = number(6)?;
        lines.push(GeometryLine {
            line,
            z0: if parent.starts_with("IP") && z0 > 0.0 { -z0 } else { z0 },
            parent,
            parent_index: index(1)?,
            object: fields[2].to_string(),
            object_index: index(3)?,
            x0: number(4)?,
            y0: number(5)?,
            rot_z: number(7)?,
            rot_y: number(8)?,
            rot_x: number(9)?,
            tilt_z: number(10)?,
            tilt_y: number(11)?,
            tilt_x: number(12)?,
        });
    }
    Ok(lines)
}
