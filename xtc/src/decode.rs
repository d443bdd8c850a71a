//! ShapesData decoding (spec §8–§10): every field of one ShapesData as a borrowed [`Value`].

use crate::dgram::{type_id, u16_at, u32_at, u64_at, Node, XtcHeader, XTC_HEADER_SIZE};
use crate::error::FormatError;
use crate::names::{DataType, Name, Names, MAX_RANK};

/// A decoded field, borrowing array and string bytes from the datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// ENUMVAL: the value of an enum field `var:Type`.
    Enum(i32),
    /// ENUMDICT: the integer value of the label `Label:Type`.
    EnumDict(i32),
    /// CHARSTR: the bytes before the first NUL.
    Str(&'a [u8]),
    Array(ArrayView<'a>),
}

impl Value<'_> {
    /// The value as f64, for scalars.
    pub fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            Value::U8(v) => v as f64,
            Value::U16(v) => v as f64,
            Value::U32(v) => v as f64,
            Value::U64(v) => v as f64,
            Value::I8(v) => v as f64,
            Value::I16(v) => v as f64,
            Value::I32(v) | Value::Enum(v) | Value::EnumDict(v) => v as f64,
            Value::I64(v) => v as f64,
            Value::F32(v) => v as f64,
            Value::F64(v) => v,
            _ => return None,
        })
    }
    /// The value as i128 for integer scalars (exact for every integer type).
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v as i128,
            Value::U16(v) => v as i128,
            Value::U32(v) => v as i128,
            Value::U64(v) => v as i128,
            Value::I8(v) => v as i128,
            Value::I16(v) => v as i128,
            Value::I32(v) | Value::Enum(v) | Value::EnumDict(v) => v as i128,
            Value::I64(v) => v as i128,
            _ => return None,
        })
    }
}

/// A C-ordered array inside a datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArrayView<'a> {
    pub dtype: DataType,
    pub rank: u32,
    pub shape: [u32; MAX_RANK as usize],
    /// Exactly `len() * dtype.size()` little-endian bytes, unaligned.
    pub bytes: &'a [u8],
}

impl<'a> ArrayView<'a> {
    pub fn dims(&self) -> &[u32] {
        &self.shape[..self.rank as usize]
    }
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// Element `i` as a scalar [`Value`].
    pub fn get(&self, i: usize) -> Value<'a> {
        read_scalar(self.dtype, self.bytes, i * self.dtype.size())
    }
}

#[inline(always)]
pub(crate) fn read_scalar<'a>(dtype: DataType, b: &'a [u8], at: usize) -> Value<'a> {
    match dtype {
        DataType::U8 => Value::U8(b[at]),
        DataType::U16 => Value::U16(u16_at(b, at)),
        DataType::U32 => Value::U32(u32_at(b, at)),
        DataType::U64 => Value::U64(u64_at(b, at)),
        DataType::I8 => Value::I8(b[at] as i8),
        DataType::I16 => Value::I16(u16_at(b, at) as i16),
        DataType::I32 => Value::I32(u32_at(b, at) as i32),
        DataType::I64 => Value::I64(u64_at(b, at) as i64),
        DataType::F32 => Value::F32(f32::from_bits(u32_at(b, at))),
        DataType::F64 => Value::F64(f64::from_bits(u64_at(b, at))),
        DataType::CharStr => Value::U8(b[at]),
        DataType::EnumVal => Value::Enum(u32_at(b, at) as i32),
        DataType::EnumDict => Value::EnumDict(u32_at(b, at) as i32),
    }
}

/// The Shapes and Data payloads of one ShapesData, found in either order (spec §8).
#[derive(Clone, Copy, Debug)]
pub struct ShapesData<'a> {
    pub names_id: u32,
    /// Shapes payload (without header); empty when the Shapes child is absent.
    pub shapes: &'a [u8],
    pub shapes_at: usize,
    /// Data payload (without header).
    pub data: &'a [u8],
    pub data_at: usize,
}

impl<'a> ShapesData<'a> {
    pub fn parse(node: &Node<'a>) -> Result<Self, FormatError> {
        let b = node.bytes;
        let mut pos = XTC_HEADER_SIZE;
        let mut shapes = None;
        let mut data = None;
        while pos < b.len() {
            if b.len() - pos < XTC_HEADER_SIZE {
                return Err(FormatError::new(node.at + pos, "ShapesData ends inside a child Xtc header"));
            }
            let h = XtcHeader::parse(&b[pos..]);
            let extent = h.extent as usize;
            if extent < XTC_HEADER_SIZE || extent > b.len() - pos {
                return Err(FormatError::new(node.at + pos + 8, format!("ShapesData child extent {extent} does not fit")));
            }
            let payload = (&b[pos + XTC_HEADER_SIZE..pos + extent], node.at + pos + XTC_HEADER_SIZE);
            match h.type_id() {
                type_id::SHAPES if shapes.is_none() => shapes = Some(payload),
                type_id::DATA if data.is_none() => data = Some(payload),
                _ => {}
            }
            pos += extent;
        }
        let (shapes, shapes_at) = shapes.unwrap_or((&[], node.at));
        let (data, data_at) = data.unwrap_or((&[], node.at));
        Ok(ShapesData { names_id: node.header.src, shapes, shapes_at, data, data_at })
    }

    /// Calls `f(index, name, value)` for every field of `names`, in Name order.
    #[inline]
    pub fn for_each_field(&self, names: &Names, f: impl FnMut(usize, &Name, Value<'a>)) -> Result<(), FormatError> {
        self.for_each_field_upto(names, names.fields.len(), f)
    }

    /// Like `for_each_field` for the first `n` fields only (the rest are not looked at).
    #[inline]
    pub fn for_each_field_upto(
        &self,
        names: &Names,
        n: usize,
        mut f: impl FnMut(usize, &Name, Value<'a>),
    ) -> Result<(), FormatError> {
        let data = self.data;
        let mut off = 0usize;
        let mut k = 0usize;
        for (i, name) in names.fields.iter().enumerate().take(n) {
            let size = name.dtype.size();
            if name.rank == 0 {
                if data.len() - off < size {
                    return Err(self.overrun(names, name, off, size));
                }
                f(i, name, read_scalar(name.dtype, data, off));
                off += size;
                continue;
            }
            let s = k * 20;
            if self.shapes.len() < s + 20 {
                return Err(FormatError::new(
                    self.shapes_at,
                    format!(
                        "{}.{}: field '{}' is array number {} but Shapes holds only {}",
                        names.det_name, names.alg_name, name.name, k + 1, self.shapes.len() / 20
                    ),
                ));
            }
            k += 1;
            let mut shape = [0u32; MAX_RANK as usize];
            let mut n: u64 = 1;
            for (d, slot) in shape.iter_mut().enumerate().take(name.rank as usize) {
                *slot = u32_at(self.shapes, s + 4 * d);
                n = n.saturating_mul(*slot as u64);
            }
            let nbytes = n.saturating_mul(size as u64);
            if nbytes > (data.len() - off) as u64 {
                return Err(self.overrun(names, name, off, nbytes.min(usize::MAX as u64) as usize));
            }
            let bytes = &data[off..off + nbytes as usize];
            off += nbytes as usize;
            if name.dtype == DataType::CharStr {
                let Some(end) = bytes.iter().position(|&c| c == 0) else {
                    return Err(FormatError::new(
                        self.data_at + off - bytes.len(),
                        format!("{}.{}: unterminated string in field '{}'", names.det_name, names.alg_name, name.name),
                    ));
                };
                f(i, name, Value::Str(&bytes[..end]));
            } else {
                f(i, name, Value::Array(ArrayView { dtype: name.dtype, rank: name.rank, shape, bytes }));
            }
        }
        Ok(())
    }

    fn overrun(&self, names: &Names, name: &Name, off: usize, need: usize) -> FormatError {
        FormatError::new(
            self.data_at + off,
            format!(
                "{}.{}: field '{}' needs {} bytes but Data has {} left",
                names.det_name, names.alg_name, name.name, need, self.data.len() - off
            ),
        )
    }
}
