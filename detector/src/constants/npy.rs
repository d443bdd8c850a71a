//! `.npy` files as `np.save` writes them (`cdb get`'s exact copy, spec §2.4; format: numpy's
//! NEP 1, versions 1–3). Read here rather than with a crate: the one that fits (`npyz`) pulls a
//! parser generator whose build dependencies change how the polars stack is compiled, which
//! rebuilds it (40 minutes on 2 cores) for a 100-line format.
//! C order only: a Fortran-ordered array is refused rather than silently transposed.

use std::path::Path;

use super::array::{Elements, NdArray};
use super::types::Dtype;
use crate::error::ReadError;

const MAGIC: &[u8] = b"\x93NUMPY";

pub fn read_npy(path: &Path) -> Result<NdArray, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    parse_npy(&bytes, path)
}

/// The header's three keys.
struct Header {
    /// numpy's type string: byte order (`<`, `>`, `|`, `=`), kind, size (`<f4`).
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// Parses the bytes of a `.npy` file; `path` only names the origin in errors.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<NdArray, ReadError> {
    let err = |offset: u64, message: String| ReadError::Npy { path: path.to_path_buf(), offset, message };
    if bytes.get(..6) != Some(MAGIC) {
        return Err(err(0, "not a valid .npy header (no \\x93NUMPY magic)".into()));
    }
    let (len_size, version) = match bytes.get(6) {
        Some(1) => (2usize, 1),
        Some(v @ (2 | 3)) => (4, *v),
        Some(v) => return Err(err(6, format!("not a valid .npy header (format version {v}; numpy writes 1, 2, 3)"))),
        None => return Err(err(6, "not a valid .npy header (truncated before the version)".into())),
    };
    let len_bytes = bytes.get(8..8 + len_size).ok_or_else(|| err(8, "not a valid .npy header (truncated in its length)".into()))?;
    let header_len = len_bytes.iter().rev().fold(0usize, |n, &b| (n << 8) | b as usize);
    let start = 8 + len_size;
    let header_bytes = start
        .checked_add(header_len)
        .and_then(|end| bytes.get(start..end))
        .ok_or_else(|| err(8, format!("not a valid .npy header ({header_len} bytes in a {}-byte file)", bytes.len())))?;
    let text = if version == 3 { std::str::from_utf8(header_bytes).ok() } else { Some(header_bytes).filter(|b| b.is_ascii()).map(|b| std::str::from_utf8(b).unwrap()) };
    let text = text.ok_or_else(|| err(start as u64, "not a valid .npy header (not text)".into()))?;
    let header = parse_header(text).map_err(|m| err(start as u64, format!("not a valid .npy header ({m}): {}", text.trim())))?;
    if header.fortran_order {
        return Err(err(0, "array is in Fortran order; save it with np.ascontiguousarray (C order)".into()));
    }
    let descr = header.descr.as_str();
    let (order, kind_size) = descr.split_at(1.min(descr.len()));
    let big_endian = match order {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => return Err(err(start as u64, format!("dtype '{descr}' has no byte order"))),
    };
    let dtype = match kind_size {
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        "u1" | "b1" => Dtype::U8,
        "u2" => Dtype::U16,
        "u4" => Dtype::U32,
        "u8" => Dtype::U64,
        "i2" => Dtype::I16,
        "i4" => Dtype::I32,
        "i8" => Dtype::I64,
        _ => return Err(err(start as u64, format!("dtype '{descr}' is not one of f4 f8 u1 u2 u4 u8 i2 i4 i8 b1"))),
    };
    let size: u64 = kind_size[1..].parse().unwrap();
    let data_at = (start + header_len) as u64;
    let count = header.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
    let need = count.and_then(|n| n.checked_mul(size));
    let have = bytes.len() as u64 - data_at;
    let shape: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
    let need = match need {
        Some(need) if need <= have => need as usize,
        _ => {
            return Err(err(
                data_at,
                format!(
                    "shape {shape:?} of '{descr}' needs {} data bytes, the file has {have} (truncated?)",
                    need.map_or("more than 2^64".to_string(), |n| n.to_string())
                ),
            ));
        }
    };
    let data = &bytes[data_at as usize..data_at as usize + need];
    macro_rules! decode {
        ($t:ty, $n:expr) => {
            data.chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().unwrap();
                    if big_endian { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }
                })
                .collect()
        };
    }
    let elements = match dtype {
        Dtype::F32 => Elements::F32(decode!(f32, 4)),
        Dtype::F64 => Elements::F64(decode!(f64, 8)),
        Dtype::U8 if kind_size == "b1" => Elements::U8(data.iter().map(|&b| u8::from(b != 0)).collect()),
        Dtype::U8 => Elements::U8(data.to_vec()),
        Dtype::U16 => Elements::U16(decode!(u16, 2)),
        Dtype::U32 => Elements::U32(decode!(u32, 4)),
        Dtype::U64 => Elements::U64(decode!(u64, 8)),
        Dtype::I16 => Elements::I16(decode!(i16, 2)),
        Dtype::I32 => Elements::I32(decode!(i32, 4)),
        Dtype::I64 => Elements::I64(decode!(i64, 8)),
    };
    Ok(NdArray::new(shape, elements))
}

/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 512, 1024), }` — the dict literal
/// numpy writes (keys in any order, spaces and a trailing comma allowed).
fn parse_header(text: &str) -> Result<Header, String> {
    let body = text.trim().strip_prefix('{').and_then(|t| t.trim_end().strip_suffix('}')).ok_or("not a {…} dict")?;
    let value_after = |key: &str| -> Result<&str, String> {
        let at = body.find(&format!("'{key}'")).or_else(|| body.find(&format!("\"{key}\""))).ok_or(format!("no '{key}'"))?;
        let rest = &body[at + key.len() + 2..];
        Ok(rest.trim_start().strip_prefix(':').ok_or(format!("no ':' after '{key}'"))?.trim_start())
    };
    let descr = value_after("descr")?;
    let quote = descr.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or("descr is not a string (a record dtype?)")?;
    let descr = &descr[1..];
    let descr = descr[..descr.find(quote).ok_or("unterminated descr")?].to_string();
    let fortran = value_after("fortran_order")?;
    let fortran_order = if fortran.starts_with("True") {
        true
    } else if fortran.starts_with("False") {
        false
    } else {
        return Err("fortran_order is neither True nor False".into());
    };
    let shape = value_after("shape")?.strip_prefix('(').ok_or("shape is not a tuple")?;
    let shape = &shape[..shape.find(')').ok_or("unterminated shape")?];
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| f.trim_end_matches('L').parse::<u64>().map_err(|_| format!("shape dimension '{f}' is not a number")))
        .collect::<Result<Vec<u64>, String>>()?;
    Ok(Header { descr, fortran_order, shape })
}
