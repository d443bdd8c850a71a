//! Rust cells, evaluated by evcxr used as a library (spec §8): the session (`engine`), the
//! toolchain it needs, the embedded prelude crate, positions for completion, errors
//! (`diagnostics`, `panics`), output, and interrupting a cell. The kernel's tables reach the
//! cells through `crate::bridge`.

// Without evcxr only the error of `without_evcxr` is left of Rust cells.
#![cfg_attr(not(feature = "rust-cells"), allow(dead_code))]

mod analysis;
pub(crate) mod diagnostics;
#[cfg(feature = "rust-cells")]
mod engine;
#[cfg(feature = "rust-cells")]
mod interrupt;
mod output;
mod panics;
mod prelude;
mod toolchain;
#[cfg(not(feature = "rust-cells"))]
mod without_evcxr;

#[cfg(feature = "rust-cells")]
pub use engine::{RustCells, RustShared};
pub use toolchain::runtime_hook;
#[cfg(not(feature = "rust-cells"))]
pub use without_evcxr::{RustCells, RustShared};
