//! Tables and SQL for the beamtime kernel.
//!
//! - [`Catalog`]: named polars tables (runs' `events` tables, files, query results), in the
//!   order they were made; [`Catalog::load_run`], [`Catalog::load_file`], [`Catalog::save`].
//! - [`Catalog::sql`]: polars SQL over every table, with unquoted dotted column names
//!   (`avg(ipm2.raw.sum)`) and errors that name the unknown column and its close matches.
//! - [`convert`]: Arrow record batches (what `xtc` produces) ⇄ polars, and polars → Arrow IPC
//!   stream bytes for the widgets.

pub mod aggregate;
pub mod array_agg;
pub mod arrays;
pub mod catalog;
pub mod convert;
pub mod error;
pub mod exact;
pub mod files;
pub mod live;
pub mod mode;
pub mod rewrite;
pub mod sql;

pub use arrays::{shapes_of, Coverage, Shapes};
pub use catalog::{validate_name, Catalog, LoadOptions, TableInfo};
pub use convert::{batches_to_df, describe, df_to_ipc_stream, ipc_stream_to_batches, DfBuilder};
pub use error::{QueryError, Result};
pub use files::{read_file, write_file, FileFormat};
pub use live::{parse_duration, LiveMode, LiveQuery, EVENT_INDEX};
/// Re-exported so the kernel names the same polars version.
pub use polars;
