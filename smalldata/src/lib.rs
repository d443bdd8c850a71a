//! Per-event output of a job, as psana's `smalldata` writes it: every worker appends its events'
//! rows to a part file of its own while the job runs ([`PartWriter`]); at the end the collector
//! joins the parts ([`finish_job`]) and adds the aggregate results ([`write_summaries`]).
//!
//! `.h5`: psana2's layout (docs/smalldata-h5.md): `<name>_part<N>.h5` per writer joined into
//! `<name>.h5` by virtual datasets, one dataset per column, dotted names as groups, -99999 /
//! NaN for missing values. A job of one process writes `<name>.h5` itself (psana's serial
//! mode). `.parquet`: a folder of `part-<N>.parquet`, which reads as one table, nulls as nulls.

mod columns;
mod h5;
mod parquet;

use std::path::{Path, PathBuf};

use polars::prelude::DataFrame;

pub use columns::{dataset_path, stored_dtype, MISSING_INT};
pub use h5::Joined;

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{}: {why}", path.display())]
    File { path: PathBuf, why: String },
    #[error("column `{column}` {why}")]
    Column { column: String, why: String },
    #[error("{0}")]
    Usage(String),
}

/// The formats small data is saved in, from the path's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Hdf5,
    Parquet,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format, SaveError> {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("h5" | "hdf5") => Ok(Format::Hdf5),
            Some("parquet" | "pq") => Ok(Format::Parquet),
            _ => Err(SaveError::Usage(format!("{}: save as .h5 (psana's smalldata layout) or .parquet (a folder of part files)", path.display()))),
        }
    }
}

/// Where writer `part` of a job saving to `path` writes; None: the job's only writer in a
/// single process, which writes `path` itself (HDF5; psana's serial mode).
pub fn part_path(path: &Path, part: Option<usize>) -> Result<PathBuf, SaveError> {
    Ok(match (Format::of(path)?, part) {
        (Format::Hdf5, None) => path.to_path_buf(),
        // psana: every ".h5" removed from the name, then `_part<N>.h5`, in the same folder.
        (Format::Hdf5, Some(n)) => path.with_file_name(format!("{}_part{n}.h5", file_name(path).replace(".h5", ""))),
        (Format::Parquet, n) => path.join(format!("part-{:05}.parquet", n.unwrap_or(0))),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Before a job writes `path`: removes what an earlier one left there (the joined file and
/// every part, whatever their number, as psana does at set-up) and, for per-event `rows` in
/// Parquet, makes the folder of parts (an aggregate's Parquet result is one file). Returns
/// what it removed.
pub fn prepare(path: &Path, rows: bool) -> Result<Vec<PathBuf>, SaveError> {
    let err = |p: &Path, e: std::io::Error| SaveError::File { path: p.to_path_buf(), why: e.to_string() };
    let mut removed = Vec::new();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(SaveError::File { path: dir, why: "no such folder".into() });
    }
    match Format::of(path)? {
        Format::Hdf5 => {
            let prefix = format!("{}_part", file_name(path).replace(".h5", ""));
            for entry in std::fs::read_dir(&dir).map_err(|e| err(&dir, e))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && name.ends_with(".h5") && name[prefix.len()..name.len() - 3].parse::<usize>().is_ok() {
                    std::fs::remove_file(entry.path()).map_err(|e| err(&entry.path(), e))?;
                    removed.push(entry.path());
                }
            }
            if path.exists() {
                std::fs::remove_file(path).map_err(|e| err(path, e))?;
                removed.push(path.to_path_buf());
            }
        }
        Format::Parquet => {
            if path.is_file() {
                std::fs::remove_file(path).map_err(|e| err(path, e))?;
                removed.push(path.to_path_buf());
            }
            if path.is_dir() {
                for entry in std::fs::read_dir(path).map_err(|e| err(path, e))?.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with("part-") && name.ends_with(".parquet") {
                        std::fs::remove_file(entry.path()).map_err(|e| err(&entry.path(), e))?;
                        removed.push(entry.path());
                    }
                }
                if !rows {
                    // An aggregate's result is a file: the folder goes if nothing else is in it.
                    std::fs::remove_dir(path).map_err(|e| err(path, e))?;
                }
            }
            if rows {
                std::fs::create_dir_all(path).map_err(|e| err(path, e))?;
            }
        }
    }
    Ok(removed)
}

/// What one writer wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Written {
    pub path: PathBuf,
    pub rows: usize,
    pub bytes: u64,
}

enum Inner {
    Hdf5(h5::H5Part),
    Parquet(parquet::ParquetPart),
}

/// One writer's part: rows appended batch by batch, closed by [`PartWriter::finish`].
pub struct PartWriter {
    path: PathBuf,
    inner: Inner,
}

impl PartWriter {
    /// Creates writer `part`'s file of a job saving to `path` ([`part_path`]); an HDF5 part is
    /// created at once (psana leaves an empty part for a writer that got no events).
    pub fn create(path: &Path, part: Option<usize>) -> Result<PartWriter, SaveError> {
        let file = part_path(path, part)?;
        let inner = match Format::of(path)? {
            Format::Hdf5 => Inner::Hdf5(h5::H5Part::create(&file)?),
            Format::Parquet => Inner::Parquet(parquet::ParquetPart::create(&file)),
        };
        Ok(PartWriter { path: file, inner })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rows(&self) -> usize {
        match &self.inner {
            Inner::Hdf5(p) => p.rows(),
            Inner::Parquet(p) => p.rows(),
        }
    }

    /// Appends one row per event of `df`.
    pub fn append(&mut self, df: &DataFrame) -> Result<(), SaveError> {
        match &mut self.inner {
            Inner::Hdf5(p) => p.append(df),
            Inner::Parquet(p) => p.append(df),
        }
    }

    /// Closes the file.
    pub fn finish(self) -> Result<Written, SaveError> {
        let (rows, bytes) = match self.inner {
            Inner::Hdf5(p) => p.finish()?,
            Inner::Parquet(p) => p.finish()?,
        };
        Ok(Written { path: self.path, rows, bytes })
    }
}

/// At the end of a job of `writers` part writers (None: one process, no parts): HDF5 parts are
/// joined into `path`; a Parquet folder is already the dataset.
pub fn finish_job(path: &Path, writers: Option<usize>) -> Result<Option<Joined>, SaveError> {
    match (Format::of(path)?, writers) {
        (Format::Hdf5, Some(n)) => {
            let parts: Vec<PathBuf> = (0..n).map(|i| part_path(path, Some(i))).collect::<Result<_, _>>()?;
            h5::join(path, &parts).map(Some)
        }
        _ => Ok(None),
    }
}

/// An aggregate result saved beside per-event rows: HDF5 as psana's `save_summary` (each column
/// a dataset of shape (rows, *shape) in `path`, the joined file); Parquet as a file of its own.
pub fn write_summaries(path: &Path, df: &DataFrame) -> Result<Vec<String>, SaveError> {
    match Format::of(path)? {
        Format::Hdf5 => h5::write_summaries(path, df),
        Format::Parquet => {
            let file = std::fs::File::create(path).map_err(|e| SaveError::File { path: path.to_path_buf(), why: e.to_string() })?;
            let mut df = df.clone();
            polars::prelude::ParquetWriter::new(file)
                .finish(&mut df)
                .map_err(|e| SaveError::File { path: path.to_path_buf(), why: e.to_string() })?;
            Ok(df.get_column_names().iter().map(|c| c.to_string()).collect())
        }
    }
}
