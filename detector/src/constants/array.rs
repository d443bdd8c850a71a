//! An n-dimensional constant array in C order, keeping the dtype it was stored with (spec §1.1).

use super::types::{shape_str, Dtype};

/// The elements of a constant, in the dtype of its file.
#[derive(Clone, Debug, PartialEq)]
pub enum Elements {
    F32(Vec<f32>),
    F64(Vec<f64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

macro_rules! each_elements {
    ($e:expr, $v:ident => $body:expr) => {
        match $e {
            Elements::F32($v) => $body,
            Elements::F64($v) => $body,
            Elements::U8($v) => $body,
            Elements::U16($v) => $body,
            Elements::U32($v) => $body,
            Elements::U64($v) => $body,
            Elements::I16($v) => $body,
            Elements::I32($v) => $body,
            Elements::I64($v) => $body,
        }
    };
}

impl Elements {
    pub fn len(&self) -> usize {
        each_elements!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> Dtype {
        match self {
            Elements::F32(_) => Dtype::F32,
            Elements::F64(_) => Dtype::F64,
            Elements::U8(_) => Dtype::U8,
            Elements::U16(_) => Dtype::U16,
            Elements::U32(_) => Dtype::U32,
            Elements::U64(_) => Dtype::U64,
            Elements::I16(_) => Dtype::I16,
            Elements::I32(_) => Dtype::I32,
            Elements::I64(_) => Dtype::I64,
        }
    }

    /// Values parsed as Python floats, cast like numpy's `astype` (floats round, integers
    /// truncate toward zero).
    pub fn from_f64(dtype: Dtype, values: Vec<f64>) -> Self {
        match dtype {
            Dtype::F64 => Elements::F64(values),
            Dtype::F32 => Elements::F32(values.into_iter().map(|v| v as f32).collect()),
            Dtype::U8 => Elements::U8(values.into_iter().map(|v| v as u8).collect()),
            Dtype::U16 => Elements::U16(values.into_iter().map(|v| v as u16).collect()),
            Dtype::U32 => Elements::U32(values.into_iter().map(|v| v as u32).collect()),
            Dtype::U64 => Elements::U64(values.into_iter().map(|v| v as u64).collect()),
            Dtype::I16 => Elements::I16(values.into_iter().map(|v| v as i16).collect()),
            Dtype::I32 => Elements::I32(values.into_iter().map(|v| v as i32).collect()),
            Dtype::I64 => Elements::I64(values.into_iter().map(|v| v as i64).collect()),
        }
    }
}

/// A constant array: shape and C-ordered elements.
#[derive(Clone, Debug, PartialEq)]
pub struct NdArray {
    pub shape: Vec<usize>,
    pub data: Elements,
}

/// A float constant at the precision it was stored with: calibration computes in f32 for f32
/// constants (psana's numpy float32 and C++ `float`) and in f64 otherwise.
#[derive(Clone, Debug, PartialEq)]
pub enum FloatValues {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl FloatValues {
    pub fn len(&self) -> usize {
        match self {
            FloatValues::F32(v) => v.len(),
            FloatValues::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` widened to f64 (exact for f32).
    #[inline]
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            FloatValues::F32(v) => v[i] as f64,
            FloatValues::F64(v) => v[i],
        }
    }

    pub fn is_f32(&self) -> bool {
        matches!(self, FloatValues::F32(_))
    }
}

impl NdArray {
    pub fn new(shape: Vec<usize>, data: Elements) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        NdArray { shape, data }
    }

    pub fn dtype(&self) -> Dtype {
        self.data.dtype()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// `(3, 1, 512, 1024) float32`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", shape_str(&self.shape), self.dtype())
    }

    /// Float values: f32 and f64 as they are, integers widened to f64 (numpy promotes int32
    /// and wider with float32 to float64; the narrow ones are exact either way).
    pub fn to_float(&self) -> FloatValues {
        match &self.data {
            Elements::F32(v) => FloatValues::F32(v.clone()),
            Elements::F64(v) => FloatValues::F64(v.clone()),
            #[allow(clippy::unnecessary_cast)]
            other => FloatValues::F64(each_elements!(other, v => v.iter().map(|&x| x as f64).collect())),
        }
    }

    /// Values as u64 the way psana casts status (`astype(uint64)`): integers wrap like numpy,
    /// floats truncate (negative and NaN give 0 here, where numpy's result is undefined).
    #[allow(clippy::unnecessary_cast)] // the macro casts every element type, u64 included
    pub fn to_u64(&self) -> Vec<u64> {
        each_elements!(&self.data, v => v.iter().map(|&x| x as u64).collect())
    }

    /// Values as f64 (common-mode parameters).
    #[allow(clippy::unnecessary_cast)] // the macro casts every element type, f64 included
    pub fn to_f64(&self) -> Vec<f64> {
        each_elements!(&self.data, v => v.iter().map(|&x| x as f64).collect())
    }
}
