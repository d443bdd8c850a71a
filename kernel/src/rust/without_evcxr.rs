//! Rust cells in a kernel built without evcxr (cargo feature `rust-cells` off): every Rust
//! cell says so; magics work.

use serde_json::Value;

use crate::cell::{Bundle, CellContext, CellError};

/// Without evcxr there is no context to share.
#[derive(Clone, Default)]
pub struct RustShared {}

impl RustShared {
    pub fn complete(&self, _code: &str, _cursor: usize) -> Option<Value> {
        None
    }
    pub fn inspect(&self, _code: &str, _cursor: usize) -> Option<Value> {
        None
    }
    pub fn shutdown(&self) {}
}

pub struct RustCells {}

impl RustCells {
    pub fn new(_shared: RustShared) -> Self {
        RustCells {}
    }

    pub fn warm_up(&self) {}

    pub fn execute(&mut self, _code: &str, _ctx: &CellContext, _catalog: &mut query::Catalog) -> Result<Option<Bundle>, CellError> {
        Err(CellError::new("RustUnavailable", "this kernel was built without Rust cells (cargo feature `rust-cells`); magics work: %help lists them"))
    }
}
