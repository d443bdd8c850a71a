//! Event functions: the user's own per-event Rust code, compiled from a cell or a file into a
//! shared library and called by the SQL engine once per batch (see README.md).

pub mod compile;
pub mod glue;
pub mod library;
pub mod registry;
pub mod signature;

pub use compile::{compile, default_cache, CompileError, Compiled, Diagnostic};
pub use library::Library;
pub use signature::{Param, Returns, Scalar, Signature};

/// The version of the interface between beamtime and a library (symbols, manifest, runtime).
pub const ABI_VERSION: u32 = 1;

/// The runtime, compiled here too: its readers and writers are tested in-process.
#[cfg(test)]
#[path = "runtime.rs"]
#[allow(unsafe_op_in_unsafe_fn, clippy::missing_safety_doc)]
mod runtime_in_process;
