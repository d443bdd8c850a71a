//! `.npy` files as `np.save` writes them (`cdb get`'s exact copy, spec §2.4), read with `npyz`.
//! C order only: a Fortran-ordered array is refused rather than silently transposed.

use std::io::Cursor;
use std::path::Path;

use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar};

use super::array::{Elements, NdArray};
use super::types::Dtype;
use crate::error::ReadError;

pub fn read_npy(path: &Path) -> Result<NdArray, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    parse_npy(&bytes, path)
}

/// Parses the bytes of a `.npy` file; `path` only names the origin in errors.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<NdArray, ReadError> {
    let err = |offset: u64, message: String| ReadError::Npy { path: path.to_path_buf(), offset, message };
    if let Some(shape) = declared_shape(bytes) {
        if shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).is_none() {
            return Err(err(8, format!("shape {shape:?} has more than 2^64 elements")));
        }
    }
    let mut cursor = Cursor::new(bytes);
    let header = NpyHeader::from_reader(&mut cursor).map_err(|e| err(0, format!("not a valid .npy header: {e}")))?;
    let data_at = cursor.position();
    let npy = NpyFile::with_header(header, cursor);
    let header = npy.header();
    if header.order() == Order::Fortran {
        return Err(err(0, "array is in Fortran order; save it with np.ascontiguousarray (C order)".into()));
    }
    let DType::Plain(type_str) = header.dtype() else {
        return Err(err(0, format!("dtype {} is a record or sub-array type, not a plain number", header.dtype().descr())));
    };
    let dtype = match (type_str.type_char(), type_str.size_field()) {
        (TypeChar::Float, 4) => Dtype::F32,
        (TypeChar::Float, 8) => Dtype::F64,
        (TypeChar::Uint | TypeChar::Bool, 1) => Dtype::U8,
        (TypeChar::Uint, 2) => Dtype::U16,
        (TypeChar::Uint, 4) => Dtype::U32,
        (TypeChar::Uint, 8) => Dtype::U64,
        (TypeChar::Int, 2) => Dtype::I16,
        (TypeChar::Int, 4) => Dtype::I32,
        (TypeChar::Int, 8) => Dtype::I64,
        _ => return Err(err(0, format!("dtype '{type_str}' is not one of f4 f8 u1 u2 u4 u8 i2 i4 i8"))),
    };
    let shape: Vec<usize> = header.shape().iter().map(|&d| d as usize).collect();
    let count = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    let need = count.and_then(|n| n.checked_mul(type_str.size_field()));
    let have = bytes.len() as u64 - data_at;
    match need {
        Some(need) if need <= have => {}
        _ => {
            return Err(err(
                data_at,
                format!(
                    "shape {shape:?} of '{type_str}' needs {} data bytes, the file has {have} (truncated?)",
                    need.map_or("more than 2^64".to_string(), |n| n.to_string())
                ),
            ));
        }
    }
    let read_err = |e: std::io::Error| err(data_at, format!("reading data: {e}"));
    let data = match dtype {
        Dtype::F32 => Elements::F32(npy.into_vec().map_err(read_err)?),
        Dtype::F64 => Elements::F64(npy.into_vec().map_err(read_err)?),
        Dtype::U8 if type_str.type_char() == TypeChar::Bool => {
            Elements::U8(npy.into_vec::<bool>().map_err(read_err)?.into_iter().map(u8::from).collect())
        }
        Dtype::U8 => Elements::U8(npy.into_vec().map_err(read_err)?),
        Dtype::U16 => Elements::U16(npy.into_vec().map_err(read_err)?),
        Dtype::U32 => Elements::U32(npy.into_vec().map_err(read_err)?),
        Dtype::U64 => Elements::U64(npy.into_vec().map_err(read_err)?),
        Dtype::I16 => Elements::I16(npy.into_vec().map_err(read_err)?),
        Dtype::I32 => Elements::I32(npy.into_vec().map_err(read_err)?),
        Dtype::I64 => Elements::I64(npy.into_vec().map_err(read_err)?),
    };
    Ok(NdArray::new(shape, data))
}

/// The `'shape'` tuple of the header, looked at before `npyz` parses it: `npyz` multiplies the
/// dimensions unchecked, which panics in debug builds on a corrupt header.
fn declared_shape(bytes: &[u8]) -> Option<Vec<u64>> {
    let (len_at, len_size) = match bytes.get(6)? {
        1 => (8, 2),
        _ => (8, 4),
    };
    let len_bytes = bytes.get(len_at..len_at + len_size)?;
    let len = len_bytes.iter().rev().fold(0usize, |n, &b| (n << 8) | b as usize);
    let start = len_at + len_size;
    let header = std::str::from_utf8(bytes.get(start..start.checked_add(len)?)?).ok()?;
    let after = &header[header.find("'shape'")? + "'shape'".len()..];
    let inner = &after[after.find('(')? + 1..];
    let inner = &inner[..inner.find(')')?];
    inner.split(',').map(str::trim).filter(|f| !f.is_empty()).map(|f| f.trim_end_matches('L').parse().ok()).collect()
}
