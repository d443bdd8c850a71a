//! psana's NDArrIO text format (spec §2.3): `#` comment header with SHAPE/DATATYPE (or
//! DTYPE/DIM:n), then one line per row of the array viewed as `(size / last_dim, last_dim)`.

use std::io::Write;
use std::path::Path;

use super::array::{Elements, NdArray};
use super::types::Dtype;
use crate::error::ReadError;

/// Reads an NDArrIO text file. Without shape metadata the array is the table as read: 2-D, or
/// 1-D when the file has one data line (the caller reshapes, see `set::fit_shape`).
pub fn read_text(path: &Path) -> Result<NdArray, ReadError> {
    let text = std::fs::read(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    let text = String::from_utf8(text).map_err(|e| ReadError::Text {
        path: path.to_path_buf(),
        line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count(),
        message: "not UTF-8 text".into(),
    })?;
    parse_text(&text, path)
}

/// Metadata from the comment lines, psana's `_metadata_from_comments`.
#[derive(Default)]
struct Header {
    datatype: Option<String>,
    dtype: Option<String>,
    shape: Option<Vec<usize>>,
    dims: Vec<usize>,
}

/// Parses NDArrIO text; `path` only names the origin in errors.
pub fn parse_text(text: &str, path: &Path) -> Result<NdArray, ReadError> {
    let err = |line: usize, message: String| ReadError::Text { path: path.to_path_buf(), line, message };
    let mut header = Header::default();
    let mut values: Vec<f64> = Vec::new();
    let mut rows = 0usize;
    let mut row_len: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with('#') {
            read_comment(line, &mut header).map_err(|m| err(lineno, m))?;
            continue;
        }
        let before = values.len();
        for field in line.split_whitespace() {
            let v: f64 = field
                .parse()
                .map_err(|_| err(lineno, format!("'{field}' is not a number (row {})", rows + 1)))?;
            values.push(v);
        }
        let n = values.len() - before;
        match row_len {
            None => row_len = Some(n),
            Some(expected) if expected != n => {
                return Err(err(lineno, format!("row {} has {n} values, the rows before have {expected}", rows + 1)));
            }
            _ => {}
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(err(text.lines().count().max(1), "no data rows".into()));
    }
    let dtype_name = header.datatype.or(header.dtype);
    let dtype = match dtype_name.as_deref() {
        None => Dtype::F32,
        Some(name) => Dtype::from_numpy_name(name)
            .ok_or_else(|| err(1, format!("DATATYPE '{name}' is not a supported numpy dtype")))?,
    };
    let shape = match header.shape.or((!header.dims.is_empty()).then_some(header.dims)) {
        Some(shape) => {
            let size: usize = shape.iter().product();
            if size != values.len() {
                return Err(err(
                    1,
                    format!("header shape {shape:?} needs {size} values, the file has {} ({rows} rows)", values.len()),
                ));
            }
            shape
        }
        None if rows == 1 => vec![values.len()],
        None => vec![rows, row_len.unwrap_or(0)],
    };
    Ok(NdArray::new(shape, Elements::from_f64(dtype, values)))
}

/// One `#` line: only `#␠KEY␠value` is metadata (`rec.split(' ', 2)`); anything else is a comment.
fn read_comment(line: &str, header: &mut Header) -> Result<(), String> {
    let mut fields = line.splitn(3, ' ');
    let (Some(_hash), Some(key), Some(value)) = (fields.next(), fields.next(), fields.next()) else {
        return Ok(());
    };
    let value = value.trim();
    match key {
        "DATATYPE" => header.datatype = Some(value.to_string()),
        "DTYPE" => header.dtype = Some(value.to_string()),
        "SHAPE" => header.shape = Some(parse_tuple(value).ok_or_else(|| format!("SHAPE '{value}' is not a tuple of sizes"))?),
        k if k.starts_with("DIM:") => {
            header.dims.push(value.parse().map_err(|_| format!("{k} '{value}' is not a size"))?)
        }
        _ => {}
    }
    Ok(())
}

/// A Python tuple of non-negative integers: `(3,1,512,1024)`, `(4,)`, `()`.
fn parse_tuple(s: &str) -> Option<Vec<usize>> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    inner.split(',').map(str::trim).filter(|f| !f.is_empty()).map(|f| f.parse().ok()).collect()
}

/// Writes `array` in NDArrIO text with psana's header, formatting values so they read back
/// exactly (shortest round-trip decimal, integers as integers) instead of psana's lossy `%.1f`.
pub fn write_text(path: &Path, array: &NdArray, comments: &[&str]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for c in comments {
        writeln!(out, "# {c}")?;
    }
    let shape = &array.shape;
    let shape_text = match shape.as_slice() {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")),
    };
    writeln!(out, "\n# FILE_NAME   {}", path.display())?;
    writeln!(out, "# SHAPE       {shape_text}")?;
    writeln!(out, "# DATATYPE    {}", array.dtype())?;
    writeln!(out, "\n# DTYPE       {}", array.dtype())?;
    writeln!(out, "# NDIM        {}", shape.len())?;
    for (i, d) in shape.iter().enumerate() {
        writeln!(out, "# DIM:{i}       {d}")?;
    }
    writeln!(out)?;
    let row = shape.last().copied().unwrap_or(1).max(1);
    macro_rules! rows {
        ($v:expr) => {
            for chunk in $v.chunks(row) {
                let mut first = true;
                for x in chunk {
                    if !first {
                        out.write_all(b" ")?;
                    }
                    first = false;
                    write!(out, "{x}")?;
                }
                out.write_all(b"\n")?;
            }
        };
    }
    match &array.data {
        Elements::F32(v) => rows!(v),
        Elements::F64(v) => rows!(v),
        Elements::U8(v) => rows!(v),
        Elements::U16(v) => rows!(v),
        Elements::U32(v) => rows!(v),
        Elements::U64(v) => rows!(v),
        Elements::I16(v) => rows!(v),
        Elements::I32(v) => rows!(v),
        Elements::I64(v) => rows!(v),
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_literals() {
        assert_eq!(parse_tuple("(3,1,512,1024)"), Some(vec![3, 1, 512, 1024]));
        assert_eq!(parse_tuple("(4,)"), Some(vec![4]));
        assert_eq!(parse_tuple("(2, 3)"), Some(vec![2, 3]));
        assert_eq!(parse_tuple("3,4"), None);
        assert_eq!(parse_tuple("(a,4)"), None);
    }

    #[test]
    fn u64_values_above_f64_precision_are_rounded_like_psana() {
        // psana parses every value as a Python float, so 2^53 + 1 reads back as 2^53.
        let a = parse_text("# DATATYPE    uint64\n9007199254740993\n", Path::new("x")).unwrap();
        assert_eq!(a.data, Elements::U64(vec![9007199254740992]));
    }
}
