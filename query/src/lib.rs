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
mod droplets;
pub mod error;
mod event_functions;
pub mod exact;
pub mod files;
pub mod layout;
pub mod live;
mod masks;
pub mod mode;
pub mod rewrite;
pub mod sql;

pub use arrays::{Coverage, ImageBins, Shapes, shapes_of};
pub use catalog::{Catalog, LoadOptions, TableInfo, validate_name};
pub use convert::{
    DfBuilder, batches_to_df, describe, df_to_ipc_stream, df_to_ipc_stream_with,
    ipc_stream_to_batches,
};
pub use error::{QueryError, Result};
pub use files::{FileFormat, read_file, write_file, write_file_with};
pub use live::{EVENT_INDEX, LiveMode, LiveQuery, parse_duration};
/// Re-exported so the kernel names the same polars version.
pub use polars;
