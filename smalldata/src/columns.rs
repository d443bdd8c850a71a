//! A DataFrame's columns as smalldata datasets, by psana2's rules: one dataset per column,
//! dotted names as groups (`gasdet.energy` → `gasdet/energy`), a row per event of the
//! column's shape (fixed-size arrays keep theirs), and psana's missing values for nulls.

use polars::prelude::*;

use crate::SaveError;

/// psana's missing value for integers; floats use NaN.
pub const MISSING_INT: i64 = -99999;

/// The keys psana's Python hands over as `int` (so datasets of int64 there).
const PYTHON_INTS: [&str; 3] = ["timestamp", "run", "step"];

/// One column's values for a batch of rows, flattened row after row.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Calls `$body` with `$v` bound to the typed vector of a [`Values`].
macro_rules! with_values {
    ($values:expr, $v:ident => $body:expr) => {
        match $values {
            Values::I8($v) => $body,
            Values::I16($v) => $body,
            Values::I32($v) => $body,
            Values::I64($v) => $body,
            Values::U8($v) => $body,
            Values::U16($v) => $body,
            Values::U32($v) => $body,
            Values::U64($v) => $body,
            Values::F32($v) => $body,
            Values::F64($v) => $body,
        }
    };
}
pub(crate) use with_values;

impl Values {
    /// Fills `range` with the missing value. Integers that cannot hold -99999 hold it as HDF5
    /// converts it (the virtual datasets' fill value): clipped to the type's range.
    fn set_missing(&mut self, range: std::ops::Range<usize>) {
        match self {
            Values::I8(v) => v[range].fill(i8::MIN),
            Values::I16(v) => v[range].fill(i16::MIN),
            Values::I32(v) => v[range].fill(MISSING_INT as i32),
            Values::I64(v) => v[range].fill(MISSING_INT),
            Values::U8(v) => v[range].fill(0),
            Values::U16(v) => v[range].fill(0),
            Values::U32(v) => v[range].fill(0),
            Values::U64(v) => v[range].fill(0),
            Values::F32(v) => v[range].fill(f32::NAN),
            Values::F64(v) => v[range].fill(f64::NAN),
        }
    }

    /// `n` missing values of the same type.
    pub fn missing_like(&self, n: usize) -> Values {
        let mut out = match self {
            Values::I8(_) => Values::I8(vec![0; n]),
            Values::I16(_) => Values::I16(vec![0; n]),
            Values::I32(_) => Values::I32(vec![0; n]),
            Values::I64(_) => Values::I64(vec![0; n]),
            Values::U8(_) => Values::U8(vec![0; n]),
            Values::U16(_) => Values::U16(vec![0; n]),
            Values::U32(_) => Values::U32(vec![0; n]),
            Values::U64(_) => Values::U64(vec![0; n]),
            Values::F32(_) => Values::F32(vec![0.0; n]),
            Values::F64(_) => Values::F64(vec![0.0; n]),
        };
        out.set_missing(0..n);
        out
    }
}

/// One column of a batch as a dataset: its path in the file, the shape of one row, the rows.
#[derive(Clone, Debug)]
pub struct DatasetRows {
    pub path: String,
    pub shape: Vec<usize>,
    pub values: Values,
}

/// The dataset path of a column: dots and slashes make groups.
pub fn dataset_path(column: &str) -> String {
    column.split(['.', '/']).filter(|p| !p.is_empty()).collect::<Vec<_>>().join("/")
}

/// The type a column is stored as: psana's Python ints for `timestamp`, `run` and `step`;
/// booleans as int8 0/1 (psana's files have no boolean datasets: no missing value); times
/// and durations as their integer count; fixed-size arrays of any of these.
pub fn stored_dtype(name: &str, dtype: &DataType) -> Result<DataType, String> {
    Ok(match dtype {
        d if PYTHON_INTS.contains(&name) && d.is_integer() => DataType::Int64,
        DataType::Boolean => DataType::Int8,
        DataType::Null => DataType::Float64,
        d @ (DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64) => d.clone(),
        DataType::Datetime(..) | DataType::Duration(_) | DataType::Time => DataType::Int64,
        DataType::Date => DataType::Int32,
        DataType::Array(inner, width) => DataType::Array(Box::new(stored_dtype("", inner)?), *width),
        DataType::List(_) => {
            return Err("holds lists of varying length; HDF5 smalldata needs a fixed shape per event (save as .parquet, or make it a fixed-size array)".into());
        }
        other => return Err(format!("is {other}; HDF5 smalldata holds numbers and fixed-size arrays of numbers")),
    })
}

/// A column's rows as a dataset (its type from [`stored_dtype`], nulls as missing values).
pub fn dataset_rows(column: &Column) -> Result<DatasetRows, SaveError> {
    let name = column.name().as_str();
    let bad = |why: String| SaveError::Column { column: name.to_string(), why };
    let stored = stored_dtype(name, column.dtype()).map_err(bad)?;
    let series = column.as_materialized_series();
    let series = if series.dtype() == &stored { series.clone() } else { cast(series, &stored).map_err(|e| bad(e.to_string()))? };
    let (shape, values) = flatten(&series).map_err(bad)?;
    Ok(DatasetRows { path: dataset_path(name), shape, values })
}

/// Casts to the stored type: temporal types through their integer representation.
fn cast(series: &Series, to: &DataType) -> PolarsResult<Series> {
    let physical = series.to_physical_repr().into_owned();
    physical.cast(to)
}

/// A numeric series (or fixed-size array, recursively) as a row shape and flat values.
fn flatten(series: &Series) -> Result<(Vec<usize>, Values), String> {
    let n = series.len();
    if let DataType::Array(_, width) = series.dtype() {
        let ca = series.array().map_err(|e| e.to_string())?;
        let inner = ca.get_inner();
        if inner.len() != n * width {
            return Err(format!("array of {n} rows of {width} holds {} values", inner.len()));
        }
        let (tail, mut values) = flatten(&inner)?;
        if ca.null_count() > 0 {
            let per: usize = width * tail.iter().product::<usize>();
            for (i, valid) in ca.is_not_null().iter().enumerate() {
                if valid != Some(true) {
                    values.set_missing(i * per..(i + 1) * per);
                }
            }
        }
        let mut shape = vec![*width];
        shape.extend(tail);
        return Ok((shape, values));
    }
    fn numbers<T>(series: &Series, missing: T::Native) -> Result<Vec<T::Native>, String>
    where
        T: PolarsNumericType,
    {
        let ca = series.unpack::<T>().map_err(|e| e.to_string())?;
        Ok(if ca.null_count() == 0 {
            ca.into_no_null_iter().collect()
        } else {
            ca.iter().map(|v| v.unwrap_or(missing)).collect()
        })
    }
    let values = match series.dtype() {
        DataType::Int8 => Values::I8(numbers::<Int8Type>(series, i8::MIN)?),
        DataType::Int16 => Values::I16(numbers::<Int16Type>(series, i16::MIN)?),
        DataType::Int32 => Values::I32(numbers::<Int32Type>(series, MISSING_INT as i32)?),
        DataType::Int64 => Values::I64(numbers::<Int64Type>(series, MISSING_INT)?),
        DataType::UInt8 => Values::U8(numbers::<UInt8Type>(series, 0)?),
        DataType::UInt16 => Values::U16(numbers::<UInt16Type>(series, 0)?),
        DataType::UInt32 => Values::U32(numbers::<UInt32Type>(series, 0)?),
        DataType::UInt64 => Values::U64(numbers::<UInt64Type>(series, 0)?),
        DataType::Float32 => Values::F32(numbers::<Float32Type>(series, f32::NAN)?),
        DataType::Float64 => Values::F64(numbers::<Float64Type>(series, f64::NAN)?),
        other => return Err(format!("is {other} inside an array; HDF5 smalldata holds numbers")),
    };
    Ok((Vec::new(), values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_nulls_and_types_follow_psana() {
        assert_eq!(dataset_path("gasdet.raw.energy"), "gasdet/raw/energy");
        assert_eq!(dataset_path("a/b"), "a/b");
        let ts = Column::new("timestamp".into(), [5u64, 6]);
        let d = dataset_rows(&ts).unwrap();
        assert_eq!((d.path.as_str(), d.values), ("timestamp", Values::I64(vec![5, 6])));
        let x = Column::new("x.y".into(), [Some(1.5f32), None]);
        let d = dataset_rows(&x).unwrap();
        assert_eq!(d.path, "x/y");
        let Values::F32(v) = d.values else { panic!() };
        assert_eq!(v[0], 1.5);
        assert!(v[1].is_nan());
        let n = Column::new("n".into(), [Some(3i32), None]);
        assert_eq!(dataset_rows(&n).unwrap().values, Values::I32(vec![3, -99999]));
        let b = Column::new("ok".into(), [true, false]);
        assert_eq!(dataset_rows(&b).unwrap().values, Values::I8(vec![1, 0]));
        let s = Column::new("label".into(), ["a", "b"]);
        let e = dataset_rows(&s).unwrap_err().to_string();
        assert!(e.contains("column `label` is str"), "{e}");
    }

    #[test]
    fn fixed_size_arrays_keep_their_shape_and_null_rows_are_missing() {
        let inner = Series::new("v".into(), [1u16, 2, 3, 4, 5, 6]);
        let arr = inner.reshape_array(&[ReshapeDimension::Infer, ReshapeDimension::new(3)]).unwrap();
        let mask = BooleanChunked::new("m".into(), [true, false]);
        let arr = arr.zip_with(&mask, &Series::full_null("v".into(), 2, arr.dtype())).unwrap();
        let d = dataset_rows(&Column::from(arr.with_name("img".into()))).unwrap();
        assert_eq!(d.shape, vec![3]);
        assert_eq!(d.values, Values::U16(vec![1, 2, 3, 0, 0, 0]));
    }
}
