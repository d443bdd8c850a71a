//! HDF5 in psana2's smalldata layout: each writer's part file (`<name>_part<N>.h5`, or the one
//! file of a single-process job), the joined file of virtual datasets, and summaries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::{Extent, Extents, Hyperslab, Selection, SliceOrIndex};
use ndarray::{ArrayViewD, IxDyn};
use polars::prelude::*;

use crate::columns::{dataset_rows, with_values, DatasetRows, Values, MISSING_INT};
use crate::SaveError;

/// Rows per chunk: psana's `batch_size` (1000), fewer when a row is big, so that a chunk of
/// images stays a few megabytes (psana's 1000 images of a Jungfrau would be 2 GB chunks).
const CHUNK_ROWS: usize = 1000;
const CHUNK_BYTES: usize = 16 << 20;

fn h5err(path: &Path, e: impl std::fmt::Display) -> SaveError {
    SaveError::File { path: path.to_path_buf(), why: e.to_string() }
}

/// Creates (truncating) an HDF5 file with the newest format, as psana's `libver="latest"`.
fn create(path: &Path) -> Result<hdf5::File, SaveError> {
    hdf5::File::with_options().with_fapl(|p| p.libver_latest()).create(path).map_err(|e| h5err(path, e))
}

struct Open {
    ds: hdf5::Dataset,
    shape: Vec<usize>,
    /// The polars type of the column the dataset was made for (later batches cast to it).
    dtype: DataType,
    /// An empty batch of its values, for rows where the column is absent.
    like: Values,
}

/// One writer's file: datasets grow by a batch of rows at a time.
pub struct H5Part {
    path: PathBuf,
    file: Option<hdf5::File>,
    datasets: BTreeMap<String, Open>,
    rows: usize,
}

impl H5Part {
    pub fn create(path: &Path) -> Result<H5Part, SaveError> {
        Ok(H5Part { path: path.to_path_buf(), file: Some(create(path)?), datasets: BTreeMap::new(), rows: 0 })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one row per event. A column seen for the first time gets its dataset (the
    /// events before it read 0, as in psana); a column this batch lacks gets missing values.
    pub fn append(&mut self, df: &DataFrame) -> Result<(), SaveError> {
        let n = df.height();
        if n == 0 {
            return Ok(());
        }
        let mut batch: Vec<(String, DatasetRows)> = Vec::with_capacity(df.width());
        for column in df.columns() {
            let name = column.name().to_string();
            let column = match self.datasets.get(&crate::columns::dataset_path(&name)) {
                Some(open) if open.dtype != *column.dtype() => {
                    let cast = column.cast(&open.dtype).map_err(|e| SaveError::Column { column: name.clone(), why: format!("was {} before, now {}: {e}", open.dtype, column.dtype()) })?;
                    std::borrow::Cow::Owned(cast)
                }
                _ => std::borrow::Cow::Borrowed(column),
            };
            let rows = dataset_rows(&column)?;
            batch.push((name, rows));
        }
        for (name, rows) in &batch {
            if !self.datasets.contains_key(&rows.path) {
                self.new_dataset(name, rows, df.column(name).map(|c| c.dtype().clone()).unwrap_or(DataType::Null))?;
            }
        }
        let at = self.rows;
        let mut written: Vec<&str> = Vec::new();
        for (name, rows) in &batch {
            let open = &self.datasets[&rows.path];
            if open.shape != rows.shape {
                return Err(SaveError::Column { column: name.clone(), why: format!("rows of shape {:?} after rows of shape {:?}", rows.shape, open.shape) });
            }
            write_rows(&open.ds, at, n, &open.shape, &rows.values).map_err(|e| h5err(&self.path, format!("{}: {e}", rows.path)))?;
            written.push(&rows.path);
        }
        for (path, open) in &self.datasets {
            if !written.contains(&path.as_str()) {
                let per: usize = open.shape.iter().product();
                let missing = open.like.missing_like(n * per);
                write_rows(&open.ds, at, n, &open.shape, &missing).map_err(|e| h5err(&self.path, format!("{path}: {e}")))?;
            }
        }
        self.rows += n;
        Ok(())
    }

    fn new_dataset(&mut self, column: &str, rows: &DatasetRows, dtype: DataType) -> Result<(), SaveError> {
        let path = &rows.path;
        // A dataset cannot also be a group: `a` and `a.b` in one file.
        let clash = self.datasets.keys().find(|p| p.starts_with(&format!("{path}/")) || path.starts_with(&format!("{p}/")));
        if let Some(other) = clash {
            return Err(SaveError::Column { column: column.to_string(), why: format!("dataset /{path} and /{other} cannot both exist (one would be the other's group): rename one (AS …)") });
        }
        let file = self.file.as_ref().expect("open until finished");
        let per: usize = rows.shape.iter().product::<usize>().max(1);
        let row_bytes = per * element_bytes(&rows.values);
        let chunk_rows = (CHUNK_BYTES / row_bytes.max(1)).clamp(1, CHUNK_ROWS);
        let mut chunk = vec![chunk_rows];
        chunk.extend(&rows.shape);
        let mut extents = vec![Extent::resizable(0)];
        extents.extend(rows.shape.iter().map(|&d| Extent::fixed(d)));
        let chunk_bytes = chunk_rows * row_bytes;
        let ds = file
            .new_dataset_builder()
            .empty_as(&descriptor(&rows.values))
            .chunk(chunk)
            // Room for two chunks: a batch that ends inside a chunk does not re-read it.
            .chunk_cache(521, (2 * chunk_bytes).max(1 << 20), 1.0)
            .shape(Extents::Simple(hdf5::SimpleExtents::from_vec(extents)))
            .create(path.as_str())
            .map_err(|e| h5err(&self.path, format!("{path}: {e}")))?;
        if self.rows > 0 {
            // psana: the events of this file before the column appeared read 0 (HDF5's default
            // fill value of the rows the resize adds).
            let mut dims = vec![self.rows];
            dims.extend(&rows.shape);
            ds.resize(dims.clone()).map_err(|e| h5err(&self.path, format!("{path}: {e}")))?;
        }
        self.datasets.insert(path.clone(), Open { ds, shape: rows.shape.clone(), dtype, like: rows.values.missing_like(0) });
        Ok(())
    }

    /// Closes the file: rows written and its size.
    pub fn finish(mut self) -> Result<(usize, u64), SaveError> {
        self.datasets.clear();
        if let Some(f) = self.file.take() {
            f.flush().map_err(|e| h5err(&self.path, e))?;
            f.close().map_err(|e| h5err(&self.path, e))?;
        }
        let bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok((self.rows, bytes))
    }
}

fn element_bytes(v: &Values) -> usize {
    with_values!(v, x => std::mem::size_of_val(x.first().unwrap_or(&Default::default())))
}

fn descriptor(v: &Values) -> TypeDescriptor {
    match v {
        Values::I8(_) => TypeDescriptor::Integer(IntSize::U1),
        Values::I16(_) => TypeDescriptor::Integer(IntSize::U2),
        Values::I32(_) => TypeDescriptor::Integer(IntSize::U4),
        Values::I64(_) => TypeDescriptor::Integer(IntSize::U8),
        Values::U8(_) => TypeDescriptor::Unsigned(IntSize::U1),
        Values::U16(_) => TypeDescriptor::Unsigned(IntSize::U2),
        Values::U32(_) => TypeDescriptor::Unsigned(IntSize::U4),
        Values::U64(_) => TypeDescriptor::Unsigned(IntSize::U8),
        Values::F32(_) => TypeDescriptor::Float(FloatSize::U4),
        Values::F64(_) => TypeDescriptor::Float(FloatSize::U8),
    }
}

/// Rows `at..at + n` (the dataset grows to hold them).
fn write_rows(ds: &hdf5::Dataset, at: usize, n: usize, shape: &[usize], values: &Values) -> hdf5::Result<()> {
    let mut dims = vec![at + n];
    dims.extend(shape);
    ds.resize(dims.clone())?;
    dims[0] = n;
    let selection = rows_selection(at, n, shape);
    with_values!(values, v => {
        let view = ArrayViewD::from_shape(IxDyn(&dims), v.as_slice()).map_err(|e| hdf5::Error::from(e.to_string()))?;
        ds.write_slice(view, selection)
    })
}

/// Rows `at..at + n`, every element of each.
fn rows_selection(at: usize, n: usize, shape: &[usize]) -> Selection {
    let mut s = vec![SliceOrIndex::SliceCount { start: at, step: 1, count: n, block: 1 }];
    s.extend(shape.iter().map(|&d| SliceOrIndex::SliceTo { start: 0, step: 1, end: d, block: 1 }));
    Hyperslab::from(s).into()
}

/// What joining the part files found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Joined {
    /// Rows of the joined root `timestamp` (every part's events).
    pub rows: usize,
    pub datasets: usize,
    /// Parts that were missing or could not be read, and why.
    pub skipped: Vec<String>,
}

struct PartInfo {
    file_name: String,
    /// Dataset path (no leading /) → type, dims.
    datasets: BTreeMap<String, (TypeDescriptor, Vec<usize>)>,
    timestamp_rows: usize,
}

/// psana's `join_files`: one virtual dataset per dataset path of any part, the parts' rows
/// one after the other in part order; a part without the dataset contributes as many rows as
/// its `timestamp`, reading the missing value (the fill value). Type and row shape are those of
/// the last part that has the dataset. Sources are named relative to the joined file (the parts
/// lie beside it), so the folder can move.
pub fn join(joined: &Path, parts: &[PathBuf]) -> Result<Joined, SaveError> {
    let mut report = Joined::default();
    let mut infos = Vec::new();
    for p in parts {
        match part_info(p) {
            Ok(info) => infos.push(info),
            Err(why) => report.skipped.push(format!("{}: {why}", p.display())),
        }
    }
    let names: std::collections::BTreeSet<&String> = infos.iter().flat_map(|i| i.datasets.keys()).collect();
    let file = create(joined)?;
    for name in names {
        let (td, dims) = infos.iter().rev().find_map(|i| i.datasets.get(name)).cloned().expect("a part has it");
        let tail = &dims[1..];
        let rows_of = |i: &PartInfo| i.datasets.get(name).map_or(i.timestamp_rows, |(_, d)| d[0]);
        let total: usize = infos.iter().map(rows_of).sum();
        let mut vds = vec![total];
        vds.extend(tail);
        let mut builder = file.new_dataset_builder().empty_as(&td);
        let mut at = 0;
        for info in &infos {
            let n = rows_of(info);
            if let (Some((_, src)), true) = (info.datasets.get(name), n > 0) {
                // The source dataset by its absolute path, as h5py's VirtualSource names it.
                builder = builder.virtual_map(&info.file_name, format!("/{name}"), Extents::new(src.clone()), Selection::All, Extents::new(vds.clone()), rows_selection(at, n, tail));
            }
            at += n;
        }
        let builder = fill_missing(builder, &td).map_err(|e| h5err(joined, format!("{name}: {e}")))?;
        builder.shape(Extents::new(vds)).create(name.as_str()).map_err(|e| h5err(joined, format!("{name}: {e}")))?;
        report.datasets += 1;
        if name == "timestamp" {
            report.rows = total;
        }
    }
    file.close().map_err(|e| h5err(joined, e))?;
    Ok(report)
}

/// The fill value of a joined dataset: -99999 as HDF5 converts it to the type (clipped), NaN.
fn fill_missing(b: hdf5::DatasetBuilderEmpty, td: &TypeDescriptor) -> Result<hdf5::DatasetBuilderEmpty, String> {
    use IntSize::*;
    Ok(match td {
        TypeDescriptor::Integer(U1) => b.fill_value(i8::MIN),
        TypeDescriptor::Integer(U2) => b.fill_value(i16::MIN),
        TypeDescriptor::Integer(U4) => b.fill_value(MISSING_INT as i32),
        TypeDescriptor::Integer(U8) => b.fill_value(MISSING_INT),
        TypeDescriptor::Unsigned(U1) => b.fill_value(0u8),
        TypeDescriptor::Unsigned(U2) => b.fill_value(0u16),
        TypeDescriptor::Unsigned(U4) => b.fill_value(0u32),
        TypeDescriptor::Unsigned(U8) => b.fill_value(0u64),
        TypeDescriptor::Float(FloatSize::U4) => b.fill_value(f32::NAN),
        TypeDescriptor::Float(FloatSize::U8) => b.fill_value(f64::NAN),
        other => return Err(format!("{other} has no missing value (psana's join refuses it too)")),
    })
}

fn part_info(path: &Path) -> Result<PartInfo, String> {
    if !path.exists() {
        return Err("missing".into());
    }
    let file = hdf5::File::open(path).map_err(|e| format!("cannot be read ({e}); was its writer lost before closing it?"))?;
    let mut datasets = BTreeMap::new();
    collect(&file, &mut datasets).map_err(|e| e.to_string())?;
    let timestamp_rows = datasets.get("timestamp").map_or(0, |(_, d): &(TypeDescriptor, Vec<usize>)| d[0]);
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(PartInfo { file_name, datasets, timestamp_rows })
}

fn collect(group: &hdf5::Group, out: &mut BTreeMap<String, (TypeDescriptor, Vec<usize>)>) -> hdf5::Result<()> {
    for ds in group.datasets()? {
        let name = ds.name().trim_start_matches('/').to_string();
        out.insert(name, (ds.dtype()?.to_descriptor()?, ds.shape()));
    }
    for g in group.groups()? {
        collect(&g, out)?;
    }
    Ok(())
}

/// psana's `save_summary`: each column of `df` an ordinary dataset of shape (rows, *row
/// shape) in `file` (created if absent). A name already in the file is an error.
pub fn write_summaries(path: &Path, df: &DataFrame) -> Result<Vec<String>, SaveError> {
    let file = if path.exists() {
        hdf5::File::open_rw(path).map_err(|e| h5err(path, e))?
    } else {
        create(path)?
    };
    let mut names = Vec::new();
    for column in df.columns() {
        let rows = dataset_rows(column)?;
        // The name, or a group it needs, is taken (by a per-event dataset or another summary).
        let parts: Vec<&str> = rows.path.split('/').collect();
        let taken = (1..=parts.len()).map(|n| parts[..n].join("/")).find(|p| file.link_exists(p) && (p == &rows.path || file.dataset(p).is_ok()));
        if let Some(taken) = taken {
            return Err(SaveError::Column { column: column.name().to_string(), why: format!("is a summary named /{} but /{taken} is already a dataset in {}: give it another name (AS …)", rows.path, path.display()) });
        }
        let mut dims = vec![df.height()];
        dims.extend(&rows.shape);
        with_values!(&rows.values, v => {
            let view = ArrayViewD::from_shape(IxDyn(&dims), v.as_slice()).map_err(|e| h5err(path, e))?;
            file.new_dataset_builder().with_data(view).create(rows.path.as_str()).map_err(|e| h5err(path, format!("{}: {e}", rows.path)))?;
        });
        names.push(rows.path);
    }
    file.close().map_err(|e| h5err(path, e))?;
    Ok(names)
}
