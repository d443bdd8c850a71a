//! [`Catalog`]: the kernel's named tables, in the order they were made.

use std::fmt;
use std::path::Path;

use polars::prelude::*;
use xtc::table::{EventsReader, TableOptions};
use xtc::Source;

use crate::arrays::{shapes_of, Shapes};
use crate::convert::DfBuilder;
use crate::error::{QueryError, Result};
use crate::files::{read_file, write_file};

/// How [`Catalog::load_run`] reads a run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Rows per Arrow batch while reading (memory bound of the reader, not of the table); 0
    /// counts as 1.
    pub batch_size: usize,
    /// Only these detector/scan/epics columns (the fixed columns `timestamp`, `time`, `run`,
    /// `step`, `pulse_id`, `damage` always come). `None` = all.
    pub columns: Option<Vec<String>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { batch_size: TableOptions::default().batch_size, columns: None }
    }
}

/// A table's name, shape and schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub name: String,
    pub rows: usize,
    pub columns: usize,
    /// `(column, dtype)` in column order, dtypes as polars prints them (`u64`, `f64`, `str`,
    /// `datetime[ns, UTC]`, `array[u16, 128]`, `list[f64]`, …).
    pub schema: Vec<(String, String)>,
}

impl TableInfo {
    pub fn of(name: &str, df: &DataFrame) -> TableInfo {
        TableInfo {
            name: name.to_string(),
            rows: df.height(),
            columns: df.width(),
            schema: df.schema().iter().map(|(n, d)| (n.to_string(), d.to_string())).collect(),
        }
    }
}

/// `events: 3000 rows × 41 columns (timestamp u64, time datetime[ns, UTC], …)`, at most 8
/// columns spelled out.
impl fmt::Display for TableInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        write!(f, "{}: {} rows × {} columns (", self.name, self.rows, self.columns)?;
        for (i, (n, d)) in self.schema.iter().take(SHOWN).enumerate() {
            write!(f, "{}{n} {d}", if i > 0 { ", " } else { "" })?;
        }
        if self.schema.len() > SHOWN {
            write!(f, ", … {} more", self.schema.len() - SHOWN)?;
        }
        f.write_str(")")
    }
}

/// Named tables. Cloning is cheap (polars columns are reference counted), so a kernel can
/// hand a clone to a worker thread that runs a query.
#[derive(Clone, Default)]
pub struct Catalog {
    /// Insertion order is the order users see; catalogs hold a handful of tables, so a
    /// linear search beats a map.
    tables: Vec<(String, DataFrame)>,
    /// The shapes of array columns whose source said them (runs' Arrow metadata), by column.
    shapes: Shapes,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.list().iter().map(ToString::to_string)).finish()
    }
}

impl Catalog {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shapes of the array columns loaded from runs (for the array functions).
    pub fn shapes(&self) -> &Shapes {
        &self.shapes
    }

    /// Adds or replaces a table; a replaced table keeps its place in the order.
    pub fn insert(&mut self, name: &str, mut df: DataFrame) -> Result<TableInfo> {
        validate_name(name)?;
        // One chunk per column: SQL scans and the IPC writer are fastest on contiguous data.
        df.rechunk_mut_par();
        let info = TableInfo::of(name, &df);
        match self.tables.iter_mut().find(|(n, _)| n == name) {
            Some((_, t)) => *t = df,
            None => self.tables.push((name.to_string(), df)),
        }
        Ok(info)
    }

    pub fn get(&self, name: &str) -> Option<&DataFrame> {
        self.tables.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Like [`Catalog::get`], with an error that lists the tables.
    pub fn table(&self, name: &str) -> Result<&DataFrame> {
        self.get(name).ok_or_else(|| QueryError::UnknownTable { name: name.to_string(), available: self.names() })
    }

    pub fn remove(&mut self, name: &str) -> Option<DataFrame> {
        let i = self.tables.iter().position(|(n, _)| n == name)?;
        Some(self.tables.remove(i).1)
    }

    /// Table names in insertion order.
    pub fn names(&self) -> Vec<String> {
        self.tables.iter().map(|(n, _)| n.clone()).collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &DataFrame)> {
        self.tables.iter().map(|(n, t)| (n.as_str(), t))
    }

    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    pub fn info(&self, name: &str) -> Option<TableInfo> {
        self.get(name).map(|df| TableInfo::of(name, df))
    }

    pub fn list(&self) -> Vec<TableInfo> {
        self.tables.iter().map(|(n, df)| TableInfo::of(n, df)).collect()
    }

    /// Reads the whole `events` table of a run (psana source string) into table `name`.
    ///
    /// A `:live` source returns when the run ends (or the reader gives up waiting); run it on
    /// a worker thread if the caller must stay responsive.
    pub fn load_run(&mut self, name: &str, source: &str, opts: LoadOptions) -> Result<TableInfo> {
        validate_name(name)?;
        let src = Source::parse(source).map_err(|e| QueryError::Source { source_str: source.to_string(), msg: e.to_string() })?;
        let topts = TableOptions { batch_size: opts.batch_size.max(1), columns: opts.columns, ..TableOptions::default() };
        let read_err = |error| QueryError::Read { source_str: source.to_string(), error };
        // Batch by batch, so the Arrow copy of the run never exists whole next to the table.
        let mut reader = EventsReader::open(&src, topts).map_err(read_err)?;
        let mut table = DfBuilder::new();
        while let Some(b) = reader.next_batch().map_err(read_err)? {
            self.shapes.extend(shapes_of(&b.batch.schema()));
            table.push(b.batch)?;
        }
        self.insert(name, table.finish()?)
    }

    /// Reads a table file (format by extension, see [`crate::FileFormat`]) into table `name`.
    pub fn load_file(&mut self, name: &str, path: impl AsRef<Path>) -> Result<TableInfo> {
        validate_name(name)?;
        let df = read_file(path.as_ref())?;
        self.insert(name, df)
    }

    /// Writes table `name` to `path` (format by extension; the directory must exist).
    pub fn save(&self, name: &str, path: impl AsRef<Path>) -> Result<()> {
        // The writers want `&mut` (they may rechunk); the clone shares the column buffers.
        let mut df = self.table(name)?.clone();
        write_file(&mut df, path.as_ref())
    }
}

/// Words SQL reads as syntax; as table names they would need quoting, and polars does not
/// resolve even quoted ones.
const RESERVED: &[&str] = &[
    "all", "and", "any", "array", "as", "asc", "between", "both", "by", "case", "cast", "create", "cross", "current",
    "default", "delete", "desc", "distinct", "drop", "else", "end", "except", "exclude", "exists", "false", "fetch",
    "filter", "for", "from", "full", "group", "having", "ilike", "in", "inner", "insert", "intersect", "interval",
    "into", "is", "join", "lateral", "left", "like", "limit", "natural", "not", "null", "offset", "on", "or",
    "order", "outer", "over", "partition", "qualify", "right", "select", "semi", "anti", "set", "show", "some",
    "table", "tables", "then", "top", "true", "union", "unnest", "update", "using", "values", "when", "where",
    "window", "with",
];

/// Table names are SQL identifiers that need no quoting: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// 64 characters, not a reserved word, and one polars' SQL can select from.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason: &str| Err(QueryError::InvalidName { name: name.to_string(), reason: reason.to_string() });
    let mut chars = name.chars();
    match chars.next() {
        None => return bad("a table name cannot be empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => return bad("a table name starts with a letter or '_'"),
        _ => {},
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return bad("a table name has only letters, digits and '_' (like a Python identifier)");
    }
    if name.len() > 64 {
        return bad("a table name has at most 64 characters");
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return bad("it is an SQL keyword; choose another name");
    }
    // The parser has the last word: `SELECT * FROM <name>` must find the table.
    let ctx = polars::sql::SQLContext::new();
    ctx.register(name, DataFrame::empty_with_height(1).lazy());
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ctx.clone().execute(&format!("SELECT * FROM {name}")).is_ok()));
    if !matches!(probe, Ok(true)) {
        return bad("SQL cannot refer to it unquoted; choose another name");
    }
    Ok(())
}
