//! [`QueryError`]: every failure of this crate, worded for a notebook user.

use std::path::PathBuf;

use polars::prelude::PolarsError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A table name that SQL could not refer to without quoting.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    #[error("no table named {name:?}; {}", list_or_none("tables", available))]
    UnknownTable { name: String, available: Vec<String> },

    /// `suggestions` are the closest column names of the tables the query reads.
    #[error("unknown column {column:?}{}", did_you_mean(suggestions))]
    UnknownColumn { column: String, suggestions: Vec<String> },

    /// The SQL text does not parse.
    #[error("SQL syntax error: {0}")]
    Syntax(String),

    /// The SQL parses but polars cannot run it (unsupported function, type mismatch, …).
    #[error("SQL error: {0}")]
    Sql(String),

    /// A psana source string that does not parse.
    #[error("bad source {source_str:?}: {msg}")]
    Source { source_str: String, msg: String },

    /// Reading a run failed; the text of xtc's error names the file and the byte offset.
    #[error("reading {source_str}: {error}")]
    Read { source_str: String, error: xtc::Error },

    /// A file that cannot be read or written, with the reason.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },

    #[error("Arrow conversion: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),

    #[error("{0}")]
    Polars(#[from] PolarsError),

    /// A live query whose result cannot be merged exactly from per-batch partial results;
    /// the message says why and what to write instead.
    #[error("not a live query: {0}")]
    NotLive(String),

    /// The query was cancelled through [`crate::Catalog::sql_with_cancel`].
    #[error("query cancelled")]
    Cancelled,
}

impl QueryError {
    pub(crate) fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        QueryError::File { path: path.into(), msg: msg.to_string() }
    }
}

fn list_or_none(what: &str, names: &[String]) -> String {
    if names.is_empty() { format!("there are no {what} yet") } else { format!("{what}: {}", names.join(", ")) }
}

fn did_you_mean(s: &[String]) -> String {
    if s.is_empty() { String::new() } else { format!("; did you mean {}?", s.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ")) }
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;
