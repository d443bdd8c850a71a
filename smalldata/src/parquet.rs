//! A Parquet part file per writer; the folder of parts reads as one table (pyarrow, polars,
//! DuckDB, Spark all read a folder of part files as a dataset).

use std::path::{Path, PathBuf};

use polars::io::parquet::write::BatchedWriter;
use polars::prelude::*;

use crate::SaveError;

/// Rows are gathered into row groups of this size at least (a batch is ~1000 events; row
/// groups that small make the file slow to read), or of this many bytes.
const ROW_GROUP_ROWS: usize = 1 << 16;
const ROW_GROUP_BYTES: usize = 64 << 20;

pub struct ParquetPart {
    path: PathBuf,
    writer: Option<BatchedWriter<std::fs::File>>,
    schema: Option<SchemaRef>,
    held: Vec<DataFrame>,
    held_rows: usize,
    held_bytes: usize,
    rows: usize,
}

impl ParquetPart {
    pub fn create(path: &Path) -> ParquetPart {
        ParquetPart { path: path.to_path_buf(), writer: None, schema: None, held: Vec::new(), held_rows: 0, held_bytes: 0, rows: 0 }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn err(&self, e: impl std::fmt::Display) -> SaveError {
        SaveError::File { path: self.path.clone(), why: e.to_string() }
    }

    /// Appends rows; the first batch sets the file's schema, later ones are cast to it.
    pub fn append(&mut self, df: &DataFrame) -> Result<(), SaveError> {
        if df.height() == 0 {
            return Ok(());
        }
        let schema = self.schema.get_or_insert_with(|| df.schema().clone()).clone();
        let df = if df.schema() == &schema { df.clone() } else { conform(df, &schema)? };
        self.held_rows += df.height();
        self.held_bytes += df.estimated_size();
        self.rows += df.height();
        self.held.push(df);
        if self.held_rows >= ROW_GROUP_ROWS || self.held_bytes >= ROW_GROUP_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SaveError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let mut frames = std::mem::take(&mut self.held).into_iter();
        let mut df = frames.next().expect("not empty");
        for f in frames {
            df.vstack_mut_owned(f).map_err(|e| self.err(e))?;
        }
        df.rechunk_mut();
        (self.held_rows, self.held_bytes) = (0, 0);
        if self.writer.is_none() {
            let file = std::fs::File::create(&self.path).map_err(|e| self.err(e))?;
            let schema = self.schema.clone().expect("set with the first rows");
            // LZ4: written beside live queries, the codec's CPU is the live rate's (polars'
            // default zstd wrote 1.4-1.5 M rows/s per core, LZ4 1.6-1.8 M; BENCHMARKS.md).
            let writer = ParquetWriter::new(file).with_compression(ParquetCompression::Lz4Raw);
            self.writer = Some(writer.batched(&schema).map_err(|e| self.err(e))?);
        }
        let writer = self.writer.as_mut().expect("just made");
        writer.write_batch(&df).map_err(|e| SaveError::File { path: self.path.clone(), why: e.to_string() })
    }

    /// Writes what is held and the footer: rows written and the file's size (None: no rows,
    /// no file).
    pub fn finish(mut self) -> Result<(usize, u64), SaveError> {
        self.flush()?;
        match self.writer.take() {
            Some(w) => {
                let bytes = w.finish().map_err(|e| self.err(e))?;
                Ok((self.rows, bytes))
            }
            None => Ok((0, 0)),
        }
    }
}

/// A batch in the file's schema: its columns in the file's order, cast to the file's types,
/// null where the batch lacks one.
fn conform(df: &DataFrame, schema: &Schema) -> Result<DataFrame, SaveError> {
    let mut columns = Vec::with_capacity(schema.len());
    for (name, dtype) in schema.iter() {
        let c = match df.column(name) {
            Ok(c) => c.cast(dtype).map_err(|e| SaveError::Column { column: name.to_string(), why: format!("was {dtype} before, now {}: {e}", c.dtype()) })?,
            Err(_) => Column::full_null(name.clone(), df.height(), dtype),
        };
        columns.push(c);
    }
    if let Some(extra) = df.get_column_names().iter().find(|n| !schema.contains(n)) {
        return Err(SaveError::Column { column: extra.to_string(), why: "appeared after the file's first rows were written".into() });
    }
    DataFrame::new(df.height(), columns).map_err(|e| SaveError::Column { column: String::new(), why: e.to_string() })
}
