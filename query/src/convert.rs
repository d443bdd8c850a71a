//! Arrow (arrow-rs, what `xtc` produces) ⇄ polars.
//!
//! Into polars through the Arrow C Data Interface: arrow-rs exports each column, polars-arrow
//! imports it, the buffers are shared, not copied (an area detector's frames are megabytes per
//! event: an IPC round trip cost two copies of each and most of a worker's time). Out of polars
//! as Arrow IPC stream bytes, the format apache-arrow (JS) and arrow-rs read. Names (dots and
//! colons included), every integer and float width, `Utf8`, `Timestamp(ns, UTC)` (→
//! `Datetime(ns, "UTC")`), `FixedSizeList` (→ `Array`) and `List` survive, and so do null
//! bitmaps. Not kept: field metadata (array shapes, enum labels) and non-nullable flags —
//! polars has no place for them and writes every field back as nullable.

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use polars::prelude::*;

use crate::error::{QueryError, Result};

/// Record batches → one polars `DataFrame` (rechunked: one chunk per column).
///
/// Batches may change schema part-way (a run with a second Configure, or an array column whose
/// length starts to vary); rows are then concatenated under the union of the columns, missing
/// values as nulls and `Array` widened to `List` where the kinds differ.
pub fn batches_to_df(batches: &[RecordBatch]) -> Result<DataFrame> {
    let mut b = DfBuilder::new();
    for batch in batches {
        b.push(batch.clone())?;
    }
    b.finish()
}

/// Builds a DataFrame from record batches as they arrive, so that a reader's batches can be
/// dropped one by one: memory peaks at the table plus [`DfBuilder::FLUSH_BYTES`] of Arrow data
/// (and a copy of the table while it is rechunked at the end).
pub struct DfBuilder {
    /// Converted frames; consecutive ones have different schemas.
    done: Vec<DataFrame>,
    /// Batches of one schema waiting for conversion.
    pending: Vec<RecordBatch>,
    pending_bytes: usize,
    flush_bytes: usize,
}

impl Default for DfBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DfBuilder {
    /// Arrow data converted per IPC round trip.
    pub const FLUSH_BYTES: usize = 64 << 20;

    pub fn new() -> Self {
        Self::with_flush_bytes(Self::FLUSH_BYTES)
    }

    /// Converts whenever this many bytes of Arrow data are pending (at least one batch).
    pub fn with_flush_bytes(flush_bytes: usize) -> Self {
        DfBuilder { done: Vec::new(), pending: Vec::new(), pending_bytes: 0, flush_bytes }
    }

    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        if self.pending.first().is_some_and(|p| p.schema() != batch.schema()) {
            self.flush()?;
        }
        self.pending_bytes += batch.get_array_memory_size();
        self.pending.push(batch);
        if self.pending_bytes >= self.flush_bytes {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let df = group_to_df(&self.pending)?;
        self.pending.clear();
        self.pending_bytes = 0;
        match self.done.last_mut() {
            Some(last) if **last.schema() == **df.schema() => {
                last.vstack_mut_owned(df)?;
            },
            _ => self.done.push(df),
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<DataFrame> {
        self.flush()?;
        let mut df = match self.done.len() {
            0 => DataFrame::empty(),
            1 => self.done.pop().unwrap_or_default(),
            _ => concat_relaxed(self.done)?,
        };
        df.rechunk_mut_par();
        Ok(df)
    }
}

/// Batches that share one schema → a DataFrame (one chunk per batch), sharing their buffers.
fn group_to_df(batches: &[RecordBatch]) -> Result<DataFrame> {
    let schema = batches[0].schema();
    let height = batches.iter().map(RecordBatch::num_rows).sum();
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let mut chunks = Vec::with_capacity(batches.len());
            let mut polars_field = None;
            for b in batches {
                let (f, array) = import_column(field, b.column(i))?;
                polars_field.get_or_insert(f);
                chunks.push(array);
            }
            let polars_field = polars_field.expect("one batch at least");
            Ok(Series::try_from((&polars_field, chunks))?.into_column())
        })
        .collect::<Result<Vec<Column>>>()?;
    Ok(DataFrame::new(height, columns)?)
}

/// One arrow-rs column as polars-arrow's field and array, through the C Data Interface.
fn import_column(
    field: &arrow_schema::Field,
    array: &arrow_array::ArrayRef,
) -> Result<(polars_arrow::datatypes::Field, Box<dyn polars_arrow::array::Array>)> {
    let ffi_schema = arrow_schema::ffi::FFI_ArrowSchema::try_from(field).map_err(|e| QueryError::Sql(format!("{}: {e}", field.name())))?;
    let ffi_array = arrow_data::ffi::FFI_ArrowArray::new(&array.to_data());
    // SAFETY: both pairs are the C Data Interface's `ArrowSchema`/`ArrowArray` structs, #[repr(C)]
    // with the same fields in the same order (checked by size below); moving them transfers
    // ownership to polars-arrow, whose drop calls the release callbacks arrow-rs set, which free
    // arrow-rs' references to the shared buffers.
    const _: () = assert!(std::mem::size_of::<arrow_schema::ffi::FFI_ArrowSchema>() == std::mem::size_of::<polars_arrow::ffi::ArrowSchema>());
    const _: () = assert!(std::mem::size_of::<arrow_data::ffi::FFI_ArrowArray>() == std::mem::size_of::<polars_arrow::ffi::ArrowArray>());
    let schema: polars_arrow::ffi::ArrowSchema = unsafe { std::mem::transmute(ffi_schema) };
    let c_array: polars_arrow::ffi::ArrowArray = unsafe { std::mem::transmute(ffi_array) };
    // SAFETY: valid structs just exported by arrow-rs.
    let pfield = unsafe { polars_arrow::ffi::import_field_from_c(&schema) }?;
    let parray = unsafe { polars_arrow::ffi::import_array_from_c(c_array, pfield.dtype().clone()) }?;
    Ok((pfield, parray))
}

/// Vertical concatenation of frames whose columns differ (a "diagonal, relaxed" concat; the
/// polars feature for it is not enabled, and this is the only place that needs it).
fn concat_relaxed(parts: Vec<DataFrame>) -> Result<DataFrame> {
    let mut target: Vec<(PlSmallStr, DataType)> = Vec::new();
    for df in &parts {
        for (name, dt) in df.schema().iter() {
            match target.iter_mut().find(|(n, _)| n == name) {
                None => target.push((name.clone(), dt.clone())),
                Some((_, t)) if t == dt => {},
                Some((n, t)) => *t = widen(n, t, dt)?,
            }
        }
    }
    let mut out: Option<DataFrame> = None;
    for df in parts {
        let h = df.height();
        let cols = target
            .iter()
            .map(|(name, dt)| match df.column(name) {
                Ok(c) if c.dtype() == dt => Ok(c.clone()),
                Ok(c) => c.cast(dt),
                Err(_) => Ok(Column::full_null(name.clone(), h, dt)),
            })
            .collect::<PolarsResult<Vec<_>>>()?;
        let df = DataFrame::new(h, cols)?;
        match &mut out {
            None => out = Some(df),
            Some(o) => {
                o.vstack_mut_owned(df)?;
            },
        }
    }
    Ok(out.unwrap_or_default())
}

/// The type both `a` and `b` cast to without loss of meaning (polars' own supertype function
/// is not exported by the `polars` crate).
fn widen(name: &str, a: &DataType, b: &DataType) -> Result<DataType> {
    use DataType::*;
    let inner = |d: &DataType| match d {
        Array(i, _) | List(i) => Some((**i).clone()),
        _ => None,
    };
    Ok(match (a, b) {
        _ if a == b => a.clone(),
        (Null, t) | (t, Null) => t.clone(),
        _ if inner(a).is_some() && inner(b).is_some() => {
            let (ia, ib) = (inner(a).unwrap_or(Null), inner(b).unwrap_or(Null));
            List(Box::new(widen(name, &ia, &ib)?))
        },
        _ if a.is_float() && b.is_primitive_numeric() || b.is_float() && a.is_primitive_numeric() => Float64,
        _ if a.is_unsigned_integer() && b.is_unsigned_integer() => UInt64,
        _ if a.is_integer() && b.is_integer() => Int64,
        (String, _) | (_, String) => String,
        _ => return Err(QueryError::Sql(format!("column {name:?} changes type from {a} to {b} between batches"))),
    })
}

/// A DataFrame → Arrow IPC stream bytes that apache-arrow (JS) and arrow-rs read: polars'
/// oldest compatibility level writes `LargeUtf8`/`LargeBinary` instead of the view types.
pub fn df_to_ipc_stream(df: &mut DataFrame) -> Result<Vec<u8>> {
    df_to_ipc_stream_with(df, &[])
}

/// The same with schema-level metadata (key, value): what the widgets read beside the types.
pub fn df_to_ipc_stream_with(df: &mut DataFrame, metadata: &[(String, String)]) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(df.estimated_size() + 4096);
    let mut w = IpcStreamWriter::new(&mut buf).with_compat_level(CompatLevel::oldest());
    if !metadata.is_empty() {
        let m: polars_arrow::datatypes::Metadata = metadata
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect();
        w.set_custom_schema_metadata(Arc::new(m));
    }
    w.finish(df)?;
    Ok(buf)
}

/// Arrow IPC stream bytes → arrow-rs record batches (widgets, tests).
pub fn ipc_stream_to_batches(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    reader.collect::<Result<Vec<_>, _>>().map_err(QueryError::from)
}

/// One line: `3000 rows × 12 columns: timestamp u64, time datetime[ns, UTC], …`.
pub fn describe(df: &DataFrame) -> String {
    let cols: Vec<String> = df.schema().iter().map(|(n, d)| format!("{n} {d}")).collect();
    format!("{} rows × {} columns: {}", df.height(), df.width(), cols.join(", "))
}
