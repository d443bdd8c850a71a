//! The `events` table (the project README, "The events table"): every L1Accept, event-built across
//! streams, becomes one row of Arrow record batches.
//!
//! Columns: `timestamp` (u64, `sec << 32 | nsec`), `time` (UTC), `run`, `step`, `pulse_id`,
//! `damage` (OR of the streams' root damage); one column per decoded L1 field named
//! `<det>.<alg>.<field>` (`<det>_<seg>` for segments > 0; enums under the part before `:`);
//! arrays as fixed-size lists (variable lists if their length changes within a run); the
//! current `scan.<var>` (BeginStep) and `epics.<pv>` (latest SlowUpdate) repeated on each row.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, ListArray, PrimitiveArray, RecordBatch, TimestampNanosecondArray,
};
use arrow_buffer::{BooleanBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType as ArrowType, Field, Schema, SchemaRef, TimeUnit};

use crate::decode::{ArrayView, ShapesData, Value};
use crate::dgram::{type_id, unix_nanos, walk, Dgram, TransitionId};
use crate::error::{FormatError, Result};
use crate::names::{DataType, IdMap, Name, Names};
use crate::run::RunReader;
use crate::source::Source;
use crate::stream::StreamState;

/// Detectors that carry run bookkeeping, not per-event data (spec §12).
const TRANSITION_DETECTORS: [&str; 6] = ["runinfo", "chunkinfo", "smdinfo", "epicsinfo", "scan", "epics"];

#[derive(Clone, Debug)]
pub struct TableOptions {
    /// Rows per record batch.
    pub batch_size: usize,
    /// Arrays with more elements than this are left out of the table (e.g. full camera frames).
    pub max_array_len: usize,
    /// The run number to use when a BeginRun carries no `runinfo`.
    pub run_hint: Option<u32>,
    /// Only these detector/scan/epics columns (the fixed columns always come); detectors
    /// with no projected field are not decoded at all. A name ending in `*` is a prefix
    /// (`epics.*`); `<det>_*.<alg>.<field>` is that field of every segment > 0 of `<det>`.
    /// `None` = every column.
    pub columns: Option<Vec<String>>,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions { batch_size: 65_536, max_array_len: 1 << 20, run_hint: None, columns: None }
    }
}

fn projected(columns: &[String], name: &str) -> bool {
    columns.iter().any(|c| c == name || c.strip_suffix('*').is_some_and(|prefix| name.starts_with(prefix)) || any_segment(c, name))
}

/// `name` is `<det>_<n>.<rest>` for the pattern `<det>_*.<rest>`.
fn any_segment(pattern: &str, name: &str) -> bool {
    let Some((det, rest)) = pattern.split_once("_*.") else { return false };
    let Some(tail) = name.strip_prefix(det).and_then(|t| t.strip_prefix('_')) else { return false };
    let Some((segment, field)) = tail.split_once('.') else { return false };
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) && field == rest
}

/// Typed column storage; values are appended row by row.
#[derive(Debug)]
enum Store {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

macro_rules! each_store {
    ($s:expr, $v:ident => $e:expr) => {
        match $s {
            Store::U8($v) => $e,
            Store::U16($v) => $e,
            Store::U32($v) => $e,
            Store::U64($v) => $e,
            Store::I8($v) => $e,
            Store::I16($v) => $e,
            Store::I32($v) => $e,
            Store::I64($v) => $e,
            Store::F32($v) => $e,
            Store::F64($v) => $e,
        }
    };
}

impl Store {
    fn new(dtype: DataType) -> Store {
        match dtype {
            DataType::U8 | DataType::CharStr => Store::U8(Vec::new()),
            DataType::U16 => Store::U16(Vec::new()),
            DataType::U32 => Store::U32(Vec::new()),
            DataType::U64 => Store::U64(Vec::new()),
            DataType::I8 => Store::I8(Vec::new()),
            DataType::I16 => Store::I16(Vec::new()),
            DataType::I32 | DataType::EnumVal | DataType::EnumDict => Store::I32(Vec::new()),
            DataType::I64 => Store::I64(Vec::new()),
            DataType::F32 => Store::F32(Vec::new()),
            DataType::F64 => Store::F64(Vec::new()),
        }
    }

    fn len(&self) -> usize {
        each_store!(self, v => v.len())
    }

    fn push_default(&mut self, n: usize) {
        each_store!(self, v => v.resize(v.len() + n, Default::default()))
    }

    /// Appends `n` copies of a scalar of the matching type; false when the types differ.
    fn push_repeat(&mut self, v: &Value, n: usize) -> bool {
        macro_rules! rep {
            ($s:expr, $x:expr) => {
                $s.resize($s.len() + n, $x)
            };
        }
        match (self, *v) {
            (Store::U8(s), Value::U8(x)) => rep!(s, x),
            (Store::U16(s), Value::U16(x)) => rep!(s, x),
            (Store::U32(s), Value::U32(x)) => rep!(s, x),
            (Store::U64(s), Value::U64(x)) => rep!(s, x),
            (Store::I8(s), Value::I8(x)) => rep!(s, x),
            (Store::I16(s), Value::I16(x)) => rep!(s, x),
            (Store::I32(s), Value::I32(x) | Value::Enum(x) | Value::EnumDict(x)) => rep!(s, x),
            (Store::I64(s), Value::I64(x)) => rep!(s, x),
            (Store::F32(s), Value::F32(x)) => rep!(s, x),
            (Store::F64(s), Value::F64(x)) => rep!(s, x),
            _ => return false,
        }
        true
    }

    /// Appends a scalar of the matching type; false when the types do not match.
    #[inline]
    fn push(&mut self, v: &Value) -> bool {
        match (self, *v) {
            (Store::U8(s), Value::U8(x)) => s.push(x),
            (Store::U16(s), Value::U16(x)) => s.push(x),
            (Store::U32(s), Value::U32(x)) => s.push(x),
            (Store::U64(s), Value::U64(x)) => s.push(x),
            (Store::I8(s), Value::I8(x)) => s.push(x),
            (Store::I16(s), Value::I16(x)) => s.push(x),
            (Store::I32(s), Value::I32(x) | Value::Enum(x) | Value::EnumDict(x)) => s.push(x),
            (Store::I64(s), Value::I64(x)) => s.push(x),
            (Store::F32(s), Value::F32(x)) => s.push(x),
            (Store::F64(s), Value::F64(x)) => s.push(x),
            _ => return false,
        }
        true
    }

    /// Appends all elements of an array of the matching type.
    fn extend(&mut self, a: &ArrayView) -> bool {
        macro_rules! le {
            ($v:expr, $t:ty) => {{
                const N: usize = std::mem::size_of::<$t>();
                $v.extend(a.bytes.chunks_exact(N).map(|c| <$t>::from_le_bytes(c.try_into().unwrap())))
            }};
        }
        match (self, a.dtype) {
            (Store::U8(v), DataType::U8) => v.extend_from_slice(a.bytes),
            (Store::U16(v), DataType::U16) => le!(v, u16),
            (Store::U32(v), DataType::U32) => le!(v, u32),
            (Store::U64(v), DataType::U64) => le!(v, u64),
            (Store::I8(v), DataType::I8) => le!(v, i8),
            (Store::I16(v), DataType::I16) => le!(v, i16),
            (Store::I32(v), DataType::I32 | DataType::EnumVal | DataType::EnumDict) => le!(v, i32),
            (Store::I64(v), DataType::I64) => le!(v, i64),
            (Store::F32(v), DataType::F32) => le!(v, f32),
            (Store::F64(v), DataType::F64) => le!(v, f64),
            _ => return false,
        }
        true
    }

    /// Moves the values out, leaving an empty store with the same capacity reserved so the
    /// next batch does not grow (and page-fault) its way up again.
    fn take(&mut self) -> Store {
        macro_rules! t {
            ($variant:ident, $v:expr) => {{
                let cap = $v.len();
                Store::$variant(std::mem::replace($v, Vec::with_capacity(cap)))
            }};
        }
        match self {
            Store::U8(v) => t!(U8, v),
            Store::U16(v) => t!(U16, v),
            Store::U32(v) => t!(U32, v),
            Store::U64(v) => t!(U64, v),
            Store::I8(v) => t!(I8, v),
            Store::I16(v) => t!(I16, v),
            Store::I32(v) => t!(I32, v),
            Store::I64(v) => t!(I64, v),
            Store::F32(v) => t!(F32, v),
            Store::F64(v) => t!(F64, v),
        }
    }

    fn into_array(self, nulls: Option<NullBuffer>) -> ArrayRef {
        fn p<T: arrow_array::ArrowPrimitiveType>(v: Vec<T::Native>, n: Option<NullBuffer>) -> ArrayRef {
            Arc::new(PrimitiveArray::<T>::new(ScalarBuffer::from(v), n))
        }
        match self {
            Store::U8(v) => p::<UInt8Type>(v, nulls),
            Store::U16(v) => p::<UInt16Type>(v, nulls),
            Store::U32(v) => p::<UInt32Type>(v, nulls),
            Store::U64(v) => p::<UInt64Type>(v, nulls),
            Store::I8(v) => p::<Int8Type>(v, nulls),
            Store::I16(v) => p::<Int16Type>(v, nulls),
            Store::I32(v) => p::<Int32Type>(v, nulls),
            Store::I64(v) => p::<Int64Type>(v, nulls),
            Store::F32(v) => p::<Float32Type>(v, nulls),
            Store::F64(v) => p::<Float64Type>(v, nulls),
        }
    }
}

fn arrow_type(dtype: DataType) -> ArrowType {
    match dtype {
        DataType::U8 => ArrowType::UInt8,
        DataType::U16 => ArrowType::UInt16,
        DataType::U32 => ArrowType::UInt32,
        DataType::U64 => ArrowType::UInt64,
        DataType::I8 => ArrowType::Int8,
        DataType::I16 => ArrowType::Int16,
        DataType::I32 | DataType::EnumVal | DataType::EnumDict => ArrowType::Int32,
        DataType::I64 => ArrowType::Int64,
        DataType::F32 => ArrowType::Float32,
        DataType::F64 => ArrowType::Float64,
        DataType::CharStr => ArrowType::Utf8,
    }
}

#[derive(Debug)]
enum Kind {
    Scalar,
    Str(StringBuilder),
    Array {
        offsets: Vec<i32>,
        /// Length locked by the first value seen in the run; `varying` once another differs.
        len: Option<usize>,
        shape: Option<Vec<u32>>,
        varying: bool,
    },
}

/// How a scan/epics column holds its value between updates.
#[derive(Clone, Debug)]
enum Sticky {
    Num(Value<'static>),
    Str(String),
}

#[derive(Debug)]
struct Column {
    name: String,
    dtype: DataType,
    kind: Kind,
    /// Element or scalar values.
    store: Store,
    valid: Vec<bool>,
    /// Repeated on every row (scan and epics values); `None` until first set.
    sticky: Option<Option<Sticky>>,
    metadata: HashMap<String, String>,
}

impl Column {
    fn new(name: String, field: &Name, sticky: bool, metadata: HashMap<String, String>) -> Self {
        let kind = match (field.dtype, field.rank) {
            (DataType::CharStr, _) => Kind::Str(StringBuilder::new()),
            (_, 0) => Kind::Scalar,
            _ => Kind::Array { offsets: vec![0], len: None, shape: None, varying: false },
        };
        Column {
            name,
            dtype: field.dtype,
            kind,
            store: Store::new(field.dtype),
            valid: Vec::new(),
            sticky: sticky.then_some(None),
            metadata,
        }
    }

    fn rows(&self) -> usize {
        self.valid.len()
    }

    /// Sets this row's value; false when the value does not fit the column.
    #[inline]
    fn set(&mut self, v: &Value) -> bool {
        let ok = match (&mut self.kind, v) {
            (Kind::Scalar, v) => self.store.push(v),
            (Kind::Str(b), Value::Str(s)) => {
                match std::str::from_utf8(s) {
                    Ok(s) => b.append_value(s),
                    Err(_) => b.append_value(String::from_utf8_lossy(s)),
                }
                true
            }
            (Kind::Array { offsets, len, shape, varying }, Value::Array(a)) => {
                if !self.store.extend(a) {
                    return false;
                }
                let n = a.len();
                match len {
                    None => {
                        *len = Some(n);
                        *shape = Some(a.dims().to_vec());
                    }
                    Some(l) if *l != n => *varying = true,
                    _ => {}
                }
                offsets.push(self.store.len() as i32);
                true
            }
            _ => false,
        };
        if ok {
            self.valid.push(true);
        }
        ok
    }

    /// Ends the rows up to `rows` this column got no value in: nulls, or the sticky value.
    /// Called lazily (before the next value, at a sticky change, at the end of a batch), so
    /// a column missing from many events is filled in one go.
    fn fill_to(&mut self, rows: usize) {
        let n = rows.saturating_sub(self.rows());
        if n == 0 {
            return;
        }
        let filled = match (&self.sticky, &mut self.kind) {
            (Some(Some(Sticky::Num(v))), Kind::Scalar) => self.store.push_repeat(v, n),
            (Some(Some(Sticky::Str(s))), Kind::Str(b)) => {
                for _ in 0..n {
                    b.append_value(s);
                }
                true
            }
            _ => false,
        };
        if filled {
            self.valid.resize(rows, true);
            return;
        }
        match &mut self.kind {
            Kind::Scalar => self.store.push_default(n),
            Kind::Str(b) => b.append_nulls(n),
            Kind::Array { offsets, .. } => {
                let at = self.store.len() as i32;
                offsets.resize(offsets.len() + n, at);
            }
        }
        self.valid.resize(rows, false);
    }

    fn field(&self) -> Field {
        let dt = match &self.kind {
            Kind::Scalar | Kind::Str(_) => arrow_type(self.dtype),
            Kind::Array { len, varying, .. } => {
                let item = Arc::new(Field::new("item", arrow_type(self.dtype), false));
                match (len, varying) {
                    // A zero-length fixed-size list has no defined row count: keep those variable.
                    (Some(l), false) if *l > 0 => ArrowType::FixedSizeList(item, *l as i32),
                    _ => ArrowType::List(item),
                }
            }
        };
        let mut md = self.metadata.clone();
        if let Kind::Array { shape: Some(s), varying: false, .. } = &self.kind {
            md.insert("shape".into(), s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","));
        }
        Field::new(&self.name, dt, true).with_metadata(md)
    }

    /// Moves this batch's values out as an Arrow array.
    fn finish(&mut self) -> ArrayRef {
        let rows = self.valid.len();
        let valid = std::mem::replace(&mut self.valid, Vec::with_capacity(rows));
        let nulls = if valid.iter().all(|&v| v) { None } else { Some(NullBuffer::new(BooleanBuffer::from(valid))) };
        match &mut self.kind {
            Kind::Scalar => self.store.take().into_array(nulls),
            Kind::Str(b) => Arc::new(b.finish()),
            Kind::Array { offsets, len, varying, .. } => {
                let values = self.store.take().into_array(None);
                let offs = std::mem::replace(offsets, vec![0]);
                let item = Arc::new(Field::new("item", arrow_type(self.dtype), false));
                match (*len, *varying) {
                    (Some(l), false) if l > 0 => {
                        // Null rows hold no elements in the variable layout: pad them.
                        let values = if nulls.is_some() { pad_fixed(&values, &offs, l) } else { values };
                        Arc::new(FixedSizeListArray::new(item, l as i32, values, nulls))
                    }
                    _ => Arc::new(ListArray::new(item, OffsetBuffer::new(ScalarBuffer::from(offs)), values, nulls)),
                }
            }
        }
    }
}

/// Re-lays variable-length rows (nulls empty) as fixed-size rows of `len` (nulls zero-filled).
fn pad_fixed(values: &ArrayRef, offsets: &[i32], len: usize) -> ArrayRef {
    let mut idx: Vec<Option<u32>> = Vec::with_capacity((offsets.len() - 1) * len);
    for w in offsets.windows(2) {
        if (w[1] - w[0]) as usize == len {
            idx.extend((w[0] as u32..w[1] as u32).map(Some));
        } else {
            idx.extend(std::iter::repeat_n(None, len));
        }
    }
    take_or_zero(values, &idx)
}

/// Gathers `values[i]` for each index, zero where the index is None (a tiny `take` for
/// primitive arrays, without the arrow-select dependency).
fn take_or_zero(values: &ArrayRef, indices: &[Option<u32>]) -> ArrayRef {
    macro_rules! take_prim {
        ($t:ty) => {{
            let src = values.as_any().downcast_ref::<PrimitiveArray<$t>>().unwrap();
            let v: Vec<<$t as arrow_array::ArrowPrimitiveType>::Native> =
                indices.iter().map(|i| i.map(|i| src.value(i as usize)).unwrap_or_default()).collect();
            Arc::new(PrimitiveArray::<$t>::new(ScalarBuffer::from(v), None)) as ArrayRef
        }};
    }
    match values.data_type() {
        ArrowType::UInt8 => take_prim!(UInt8Type),
        ArrowType::UInt16 => take_prim!(UInt16Type),
        ArrowType::UInt32 => take_prim!(UInt32Type),
        ArrowType::UInt64 => take_prim!(UInt64Type),
        ArrowType::Int8 => take_prim!(Int8Type),
        ArrowType::Int16 => take_prim!(Int16Type),
        ArrowType::Int32 => take_prim!(Int32Type),
        ArrowType::Int64 => take_prim!(Int64Type),
        ArrowType::Float32 => take_prim!(Float32Type),
        _ => take_prim!(Float64Type),
    }
}

/// Where each field of one Names goes.
#[derive(Debug)]
struct Route {
    /// The Names itself (one map lookup per ShapesData finds both).
    names: Arc<Names>,
    /// Column index per field (None: not in the table).
    columns: Vec<Option<usize>>,
    /// Field index of `timing.pulseId`, copied into `pulse_id`.
    pulse_id: Option<usize>,
    /// Fields after this many are not needed (projection).
    needed: usize,
}

/// One record batch of the events table.
#[derive(Debug)]
pub struct EventBatch {
    pub batch: RecordBatch,
    /// The schema differs from the previous batch's (a new Configure, or a type change).
    pub new_schema: bool,
}

/// Builds `events` record batches from built events (see [`RunReader`]).
pub struct EventsBuilder {
    opts: TableOptions,
    timestamps: Vec<u64>,
    runs: Vec<Option<u32>>,
    steps: Vec<Option<u32>>,
    pulse_ids: Vec<Option<u64>>,
    damages: Vec<u16>,
    columns: Vec<Column>,
    by_name: HashMap<String, usize>,
    /// Per stream, NamesId → route, for L1 data.
    /// Every NamesId of the stream's Configure: `None` for those whose fields are not wanted
    /// (projected away, scan/epics, configuration), so one lookup also tells a corrupt NamesId.
    routes: Vec<IdMap<Option<Route>>>,
    /// Per stream, NamesId → column indices of scan/epics fields.
    sticky_routes: Vec<IdMap<Vec<Option<usize>>>>,
    run: Option<u32>,
    step: Option<u32>,
    pulse_id: Option<u64>,
    last_schema: Option<SchemaRef>,
    /// Datagram bytes behind the current rows.
    batch_bytes: usize,
}

const MAX_BATCH_BYTES: usize = 64 << 20;

impl EventsBuilder {
    pub fn new(opts: TableOptions) -> Self {
        EventsBuilder {
            opts,
            timestamps: Vec::new(),
            runs: Vec::new(),
            steps: Vec::new(),
            pulse_ids: Vec::new(),
            damages: Vec::new(),
            columns: Vec::new(),
            by_name: HashMap::new(),
            routes: Vec::new(),
            sticky_routes: Vec::new(),
            run: None,
            step: None,
            pulse_id: None,
            last_schema: None,
            batch_bytes: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.timestamps.len()
    }

    /// Full at `batch_size` rows, or earlier when the rows' datagrams passed 64 MiB: keeps list
    /// offsets and memory bounded with large arrays (a batch's calibrated frames and image are
    /// twice its raw bytes each; 64 Jungfrau modules per batch).
    pub fn is_full(&self) -> bool {
        self.rows() >= self.opts.batch_size || self.batch_bytes >= MAX_BATCH_BYTES
    }

    /// Takes a Configure's schema for all member streams, replacing the columns. The caller
    /// must `finish` the rows of the old schema first.
    pub fn configure(&mut self, streams: &[(usize, &StreamState)]) {
        debug_assert_eq!(self.rows(), 0);
        self.columns.clear();
        self.by_name.clear();
        let n_streams = streams.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
        self.routes = (0..n_streams.max(self.routes.len())).map(|_| IdMap::default()).collect();
        self.sticky_routes = (0..self.routes.len()).map(|_| IdMap::default()).collect();
        for &(i, state) in streams {
            for names in state.lookup().sorted() {
                let det = names.det_name.as_str();
                if det == "scan" || det == "epics" {
                    let cols = names
                        .fields
                        .iter()
                        .map(|f| self.column_for(format!("{det}.{}", f.name), f, true, &names))
                        .collect();
                    self.sticky_routes[i].insert(names.names_id, cols);
                    self.routes[i].insert(names.names_id, None);
                    continue;
                }
                // Configuration algs (`config`, `tsConfig`, …) describe the run, not events.
                if TRANSITION_DETECTORS.contains(&det) || names.alg_name.to_ascii_lowercase().contains("config") {
                    self.routes[i].insert(names.names_id, None);
                    continue;
                }
                let prefix = if names.segment == 0 {
                    format!("{det}.{}", names.alg_name)
                } else {
                    format!("{det}_{}.{}", names.segment, names.alg_name)
                };
                let mut route = Route { names: names.clone(), columns: Vec::new(), pulse_id: None, needed: 0 };
                for (k, f) in names.fields.iter().enumerate() {
                    if f.dtype == DataType::EnumDict {
                        route.columns.push(None);
                        continue;
                    }
                    let field = f.enum_parts().map(|(var, _)| var).unwrap_or(&f.name);
                    route.columns.push(self.column_for(format!("{prefix}.{field}"), f, false, &names));
                    if det == "timing" && f.name == "pulseId" && f.dtype == DataType::U64 && f.rank == 0 {
                        route.pulse_id = Some(k);
                    }
                }
                // Unprojected detectors are skipped before their fields are decoded.
                route.needed = route.columns.iter().rposition(Option::is_some).map_or(0, |k| k + 1);
                route.needed = route.needed.max(route.pulse_id.map_or(0, |k| k + 1));
                self.routes[i].insert(names.names_id, (route.needed > 0).then_some(route));
            }
        }
    }

    /// Changes the projection between batches (the job's queries changed), keeping the
    /// current scan/epics values. `streams` are the states of the current Configure.
    pub fn set_columns(&mut self, columns: Option<Vec<String>>, streams: &[(usize, &StreamState)]) {
        debug_assert_eq!(self.rows(), 0);
        let kept: Vec<(String, Option<Sticky>)> =
            self.columns.iter().filter_map(|c| Some((c.name.clone(), c.sticky.clone()?))).collect();
        self.opts.columns = columns;
        self.configure(streams);
        for (name, value) in kept {
            if let Some(&c) = self.by_name.get(&name) {
                if self.columns[c].sticky.is_some() {
                    self.columns[c].sticky = Some(value);
                }
            }
        }
    }

    fn column_for(&mut self, name: String, f: &Name, sticky: bool, names: &Names) -> Option<usize> {
        if self.opts.columns.as_ref().is_some_and(|cols| !projected(cols, &name)) {
            return None;
        }
        if let Some(&c) = self.by_name.get(&name) {
            let col = &self.columns[c];
            return (col.dtype == f.dtype && matches!(col.kind, Kind::Array { .. }) == (f.rank > 0 && f.dtype != DataType::CharStr))
                .then_some(c);
        }
        let mut md = HashMap::new();
        md.insert("detector".into(), format!("{}_{}", names.det_type, names.alg_name));
        if let Some((_, ty)) = f.enum_parts().filter(|_| f.dtype == DataType::EnumVal) {
            let labels: Vec<String> = names
                .fields
                .iter()
                .filter(|d| d.dtype == DataType::EnumDict && d.enum_parts().is_some_and(|(_, t)| t == ty))
                .map(|d| d.enum_parts().unwrap().0.to_string())
                .collect();
            md.insert("enum".into(), ty.to_string());
            md.insert("enum_labels".into(), labels.join(","));
        }
        self.columns.push(Column::new(name.clone(), f, sticky, md));
        self.by_name.insert(name, self.columns.len() - 1);
        Some(self.columns.len() - 1)
    }

    /// Updates run, step, scan and epics state from a transition of one stream.
    pub fn transition(&mut self, stream: usize, service: TransitionId, state: &StreamState, dg: &Dgram<'_>) -> std::result::Result<(), FormatError> {
        // Rows so far keep the scan/epics values they were taken with.
        let rows = self.rows();
        for c in self.columns.iter_mut().filter(|c| c.sticky.is_some()) {
            c.fill_to(rows);
        }
        match service {
            TransitionId::BeginRun => {
                self.run = self.opts.run_hint;
                self.step = None;
                for c in self.columns.iter_mut().filter(|c| c.sticky.is_some() && c.name.starts_with("scan.")) {
                    c.sticky = Some(None);
                }
            }
            TransitionId::BeginStep if stream == 0 => self.step = Some(self.step.map_or(0, |s| s + 1)),
            _ => {}
        }
        let sticky_routes = self.sticky_routes.get(stream);
        let columns = &mut self.columns;
        let mut run = None;
        state.for_each_shapes_data(dg, |names, sd| {
            if names.det_name == "runinfo" && service == TransitionId::BeginRun {
                sd.for_each_field(names, |_, f, v| {
                    if let ("runnum", Value::U32(r)) = (f.name.as_str(), v) {
                        run = Some(r);
                    }
                })?;
            } else if let Some(cols) = sticky_routes.and_then(|r| r.get(&names.names_id)) {
                sd.for_each_field(names, |k, _, v| {
                    if let Some(c) = cols[k] {
                        columns[c].sticky = Some(Some(match v {
                            Value::Str(s) => Sticky::Str(String::from_utf8_lossy(s).into_owned()),
                            Value::Array(_) => return, // array PVs are not repeated per row
                            v => Sticky::Num(static_value(v)),
                        }));
                    }
                })?;
            }
            Ok(())
        })?;
        if run.is_some() {
            self.run = run;
        }
        Ok(())
    }

    /// Appends one row for a built L1Accept from its member datagrams.
    pub fn event<'a>(
        &mut self,
        timestamp: u64,
        members: impl Iterator<Item = (usize, &'a StreamState, Dgram<'a>)>,
    ) -> std::result::Result<(), (usize, FormatError)> {
        let row = self.rows();
        let mut damage = 0u16;
        self.pulse_id = None;
        let max_array = self.opts.max_array_len;
        for (i, state, dg) in members {
            damage |= dg.xtc().damage;
            self.batch_bytes += dg.bytes().len();
            let Some(routes) = self.routes.get(i) else { continue };
            let columns = &mut self.columns;
            let pulse_id = &mut self.pulse_id;
            walk(dg.bytes(), &mut |node| {
                if node.header.type_id() != type_id::SHAPES_DATA {
                    return Ok(());
                }
                // Projected-away detectors are skipped before their Shapes are looked at; a
                // NamesId the Configure did not define means a corrupt datagram.
                let route = match routes.get(&node.header.src) {
                    Some(Some(route)) => route,
                    Some(None) => return Ok(()),
                    None => {
                        state.names_for(node.header.src, node.at)?;
                        return Ok(());
                    }
                };
                let sd = ShapesData::parse(&node)?;
                sd.for_each_field_upto(&route.names, route.needed, |k, _, v| {
                    if Some(k) == route.pulse_id {
                        if let Value::U64(p) = v {
                            *pulse_id = Some(p);
                        }
                    }
                    if let Some(c) = route.columns[k] {
                        let col = &mut columns[c];
                        // A field repeated in one event keeps its first value.
                        if col.rows() <= row && !matches!(v, Value::Array(a) if a.len() > max_array) {
                            col.fill_to(row);
                            col.set(&v);
                        }
                    }
                })
            })
            .map_err(|e: FormatError| (i, e))?;
        }
        self.timestamps.push(timestamp);
        self.runs.push(self.run);
        self.steps.push(self.step);
        self.pulse_ids.push(self.pulse_id);
        self.damages.push(damage);
        Ok(())
    }

    /// Returns the rows so far as a record batch (None when empty).
    pub fn finish(&mut self) -> Option<EventBatch> {
        if self.timestamps.is_empty() {
            return None;
        }
        self.batch_bytes = 0;
        let rows = self.rows();
        for c in self.columns.iter_mut() {
            c.fill_to(rows);
        }
        let ts = std::mem::take(&mut self.timestamps);
        let time: Vec<i64> = ts.iter().map(|&t| unix_nanos(t)).collect();
        let mut fields = vec![
            Field::new("timestamp", ArrowType::UInt64, false),
            Field::new("time", ArrowType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), false),
            Field::new("run", ArrowType::UInt32, true),
            Field::new("step", ArrowType::UInt32, true),
            Field::new("pulse_id", ArrowType::UInt64, true),
            Field::new("damage", ArrowType::UInt16, false),
        ];
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(PrimitiveArray::<UInt64Type>::from(ts)),
            Arc::new(TimestampNanosecondArray::from(time).with_timezone("UTC")),
            Arc::new(PrimitiveArray::<UInt32Type>::from(std::mem::take(&mut self.runs))),
            Arc::new(PrimitiveArray::<UInt32Type>::from(std::mem::take(&mut self.steps))),
            Arc::new(PrimitiveArray::<UInt64Type>::from(std::mem::take(&mut self.pulse_ids))),
            Arc::new(PrimitiveArray::<UInt16Type>::from(std::mem::take(&mut self.damages))),
        ];
        for c in self.columns.iter_mut() {
            fields.push(c.field());
            arrays.push(c.finish());
        }
        let schema = Arc::new(Schema::new(fields));
        let new_schema = self.last_schema.as_ref().is_none_or(|s| s.fields() != schema.fields());
        self.last_schema = Some(schema.clone());
        let batch = RecordBatch::try_new(schema, arrays).expect("columns have one value per row");
        Some(EventBatch { batch, new_schema })
    }
}

fn static_value(v: Value<'_>) -> Value<'static> {
    match v {
        Value::U8(x) => Value::U8(x),
        Value::U16(x) => Value::U16(x),
        Value::U32(x) => Value::U32(x),
        Value::U64(x) => Value::U64(x),
        Value::I8(x) => Value::I8(x),
        Value::I16(x) => Value::I16(x),
        Value::I32(x) => Value::I32(x),
        Value::I64(x) => Value::I64(x),
        Value::F32(x) => Value::F32(x),
        Value::F64(x) => Value::F64(x),
        Value::Enum(x) => Value::Enum(x),
        Value::EnumDict(x) => Value::EnumDict(x),
        Value::Str(_) | Value::Array(_) => Value::U8(0),
    }
}

/// Reads a source into `events` record batches.
pub struct EventsReader {
    reader: RunReader,
    builder: EventsBuilder,
    held: Option<EventBatch>,
    done: bool,
}

impl EventsReader {
    pub fn open(source: &Source, mut opts: TableOptions) -> Result<Self> {
        if let (Source::Run(r), None) = (source, opts.run_hint) {
            opts.run_hint = Some(r.run);
        }
        Ok(EventsReader::from_reader(RunReader::open(source)?, opts))
    }

    /// Builds events from any reader, e.g. one fed from memory ([`RunReader::open_feeds`]).
    pub fn from_reader(reader: RunReader, opts: TableOptions) -> Self {
        EventsReader { reader, builder: EventsBuilder::new(opts), held: None, done: false }
    }

    /// Every column the current Configure offers, projected or not (for suggestions).
    pub fn available_columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.reader.stream_count() {
            for names in self.reader.stream_state(i).lookup().sorted() {
                let det = names.det_name.as_str();
                let prefix = if det == "scan" || det == "epics" {
                    det.to_string()
                } else if TRANSITION_DETECTORS.contains(&det) || names.alg_name.to_ascii_lowercase().contains("config") {
                    continue;
                } else if names.segment == 0 {
                    format!("{det}.{}", names.alg_name)
                } else {
                    format!("{det}_{}.{}", names.segment, names.alg_name)
                };
                for f in names.fields.iter().filter(|f| f.dtype != DataType::EnumDict) {
                    let field = f.enum_parts().map(|(var, _)| var).unwrap_or(&f.name);
                    out.push(format!("{prefix}.{field}"));
                }
            }
        }
        out
    }

    /// Changes the projection before the next batch (see [`EventsBuilder::set_columns`]).
    pub fn set_columns(&mut self, columns: Option<Vec<String>>) {
        if let Some(b) = self.builder.finish() {
            self.held = Some(b);
        }
        let r = &self.reader;
        let states: Vec<(usize, &StreamState)> = (0..r.stream_count()).map(|i| (i, r.stream_state(i))).collect();
        self.builder.set_columns(columns, &states);
        self.skip_unneeded_bigdata();
    }

    /// With a projection, streams none of whose event fields are wanted are not fetched from
    /// bigdata: their rows come from the small-data records alone (timestamps, damage).
    fn skip_unneeded_bigdata(&mut self) {
        if self.builder.opts.columns.is_none() {
            return;
        }
        for i in 0..self.reader.stream_count() {
            let needed = self.builder.routes.get(i).is_some_and(|r| r.values().any(Option::is_some));
            self.reader.set_fetch_bigdata(i, needed);
        }
    }

    /// Feeds whole datagrams of stream `i` to a reader made by [`RunReader::open_feeds`];
    /// `next_batch` then returns their events.
    pub fn feed(&mut self, i: usize, bytes: &[u8]) {
        self.reader.feed(i, bytes);
        self.done = false;
    }

    pub fn run_reader(&self) -> &RunReader {
        &self.reader
    }

    /// The configuration records of detector `det` in every stream's latest Configure, by
    /// segment (calibration reads its config values from here).
    pub fn detector_configs(&self, det: &str) -> Vec<crate::ConfigRecord> {
        let mut out: Vec<crate::ConfigRecord> = (0..self.reader.stream_count())
            .flat_map(|i| self.reader.stream_state(i).configs().iter().filter(|c| c.det_name == det).cloned().collect::<Vec<_>>())
            .collect();
        out.sort_by_key(|c| c.segment);
        out
    }

    /// Configures seen over all streams: changes when the run is configured again.
    pub fn configure_count(&self) -> u32 {
        (0..self.reader.stream_count()).map(|i| self.reader.stream_state(i).configures()).sum()
    }

    /// The next batch: full, or cut short by a new Configure or the end of the data.
    pub fn next_batch(&mut self) -> Result<Option<EventBatch>> {
        if let Some(b) = self.held.take() {
            return Ok(Some(b));
        }
        while !self.done {
            let Some(built) = self.reader.next()? else {
                self.done = true;
                break;
            };
            let reader = &self.reader;
            if built.service == TransitionId::Configure {
                let finished = self.builder.finish();
                let members: Vec<(usize, &StreamState)> = reader.members().map(|(i, _)| (i, reader.stream_state(i))).collect();
                self.builder.configure(&members);
                if finished.is_some() {
                    self.skip_unneeded_bigdata();
                    return Ok(finished);
                }
            }
            if built.service.is_event() {
                self.builder
                    .event(built.timestamp, reader.members().map(|(i, dg)| (i, reader.stream_state(i), dg)))
                    .map_err(|(i, e)| reader.locate(i, e))?;
                if self.builder.is_full() {
                    return Ok(self.builder.finish());
                }
            } else {
                for (i, dg) in reader.members() {
                    self.builder.transition(i, built.service, reader.stream_state(i), &dg).map_err(|e| reader.locate(i, e))?;
                }
            }
            if built.service == TransitionId::Configure {
                self.skip_unneeded_bigdata();
            }
        }
        Ok(self.builder.finish())
    }
}

/// Reads the whole `events` table of a source (tests, small runs).
pub fn read_events(source: &Source, opts: TableOptions) -> Result<Vec<RecordBatch>> {
    let mut r = EventsReader::open(source, opts)?;
    let mut out = Vec::new();
    while let Some(b) = r.next_batch()? {
        out.push(b.batch);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::projected;

    #[test]
    fn a_segment_pattern_projects_every_segment_above_zero_and_nothing_else() {
        let cols = vec!["jungfrau.raw.raw".to_string(), "jungfrau_*.raw.raw".to_string()];
        for name in ["jungfrau.raw.raw", "jungfrau_1.raw.raw", "jungfrau_31.raw.raw"] {
            assert!(projected(&cols, name), "{name}");
        }
        for name in ["jungfrau_1.raw.frameCnt", "jungfrau_x.raw.raw", "jungfrau_.raw.raw", "jungfrau2_1.raw.raw", "epix_1.raw.raw"] {
            assert!(!projected(&cols, name), "{name}");
        }
    }
}
