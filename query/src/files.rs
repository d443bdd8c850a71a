//! Tables to and from files, the format chosen by the extension.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::{QueryError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    /// Arrow IPC file (`.arrow`, `.ipc`, `.feather`).
    Ipc,
    /// Arrow IPC stream (`.arrows`).
    IpcStream,
    Csv,
}

impl FileFormat {
    pub const EXTENSIONS: &str = ".parquet, .arrow/.ipc/.feather (Arrow IPC file), .arrows (Arrow IPC stream), .csv";

    /// The format of `path` by its extension (case-insensitive).
    pub fn from_path(path: &Path) -> Result<FileFormat> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        Ok(match ext.as_deref() {
            Some("parquet" | "pq") => FileFormat::Parquet,
            Some("arrow" | "ipc" | "feather") => FileFormat::Ipc,
            Some("arrows") => FileFormat::IpcStream,
            Some("csv") => FileFormat::Csv,
            _ => {
                let what = ext.map_or_else(|| "no extension".to_string(), |e| format!("extension .{e}"));
                return Err(QueryError::file(path, format!("{what} is not a table format I know; use {}", FileFormat::EXTENSIONS)));
            },
        })
    }
}

/// Reads a whole table file.
pub fn read_file(path: &Path) -> Result<DataFrame> {
    let format = FileFormat::from_path(path)?;
    let file = File::open(path).map_err(|e| QueryError::file(path, e))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(QueryError::file(path, "is a directory"));
    }
    let bad = |e: PolarsError| QueryError::file(path, format!("not a readable {format:?} file: {}", polars_msg(&e)));
    let mut df = match format {
        FileFormat::Parquet => ParquetReader::new(file).finish().map_err(bad)?,
        FileFormat::Ipc => IpcReader::new(file).finish().map_err(bad)?,
        FileFormat::IpcStream => IpcStreamReader::new(file).finish().map_err(bad)?,
        FileFormat::Csv => {
            drop(file);
            CsvReadOptions::default()
                .with_has_header(true)
                // Infer types from every row: a column that turns float after row 100 must not fail.
                .with_infer_schema_length(None)
                .map_parse_options(|p| p.with_try_parse_dates(true))
                .try_into_reader_with_file_path(Some(path.to_path_buf()))
                .and_then(|r| r.finish())
                .map_err(bad)?
        },
    };
    df.rechunk_mut_par();
    Ok(df)
}

/// Writes `df` to `path`, through `<path>.partial` so a failed write leaves no broken file.
pub fn write_file(df: &mut DataFrame, path: &Path) -> Result<()> {
    write_file_with(df, path, Vec::new())
}

/// [`write_file`], with file-level key/value metadata where the format has it (Parquet): how
/// the job that made the result ended (`beamtime:outcome`), so a partial result says so.
pub fn write_file_with(df: &mut DataFrame, path: &Path, metadata: Vec<(String, String)>) -> Result<()> {
    let format = FileFormat::from_path(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(QueryError::file(path, format!("directory {} does not exist", parent.display())));
    }
    if path.is_dir() {
        return Err(QueryError::file(path, "is a directory"));
    }
    if format == FileFormat::Csv {
        let nested: Vec<String> = df
            .schema()
            .iter()
            .filter(|(_, d)| d.is_nested())
            .map(|(n, d)| format!("{n} ({d})"))
            .collect();
        if !nested.is_empty() {
            return Err(QueryError::file(
                path,
                format!("CSV cannot hold array/list columns: {}; leave them out or save as .parquet", nested.join(", ")),
            ));
        }
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".partial");
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let file = File::create(&tmp).map_err(|e| QueryError::file(path, e))?;
    let written = match format {
        FileFormat::Parquet => {
            let kv = (!metadata.is_empty()).then(|| polars::io::parquet::write::KeyValueMetadata::from_static(metadata));
            ParquetWriter::new(file).with_key_value_metadata(kv).finish(df).map(drop)
        }
        // Oldest compat level (no view types) so that every Arrow reader opens it.
        FileFormat::Ipc => IpcWriter::new(file).with_compat_level(CompatLevel::oldest()).finish(df),
        FileFormat::IpcStream => IpcStreamWriter::new(file).with_compat_level(CompatLevel::oldest()).finish(df),
        FileFormat::Csv => CsvWriter::new(file).include_header(true).finish(df),
    };
    let done = written
        .map_err(|e| QueryError::file(path, format!("writing {format:?}: {}", polars_msg(&e))))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| QueryError::file(path, e)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// A polars error's message, with the OS error of I/O failures kept.
pub(crate) fn polars_msg(e: &PolarsError) -> String {
    match e {
        PolarsError::IO { error, msg: Some(m) } if !m.contains(&error.to_string()) => format!("{m}: {error}"),
        PolarsError::Context { error, msg } => format!("{}: {msg}", polars_msg(error)),
        PolarsError::ExprContext { error, .. } => polars_msg(error),
        other => other.to_string(),
    }
}
