//! `beamtime kernel`: a Jupyter kernel (shared/spec/jupyter.md) whose cells are magics for the
//! live system and tables, or Rust.
//!
//! Layers, bottom first; a file imports only files of lower layers or lower files of its own
//! folder (docs/kernel.md; `tests/module_graph.rs` checks there are no cycles):
//! `transport`, `lock`, `display` · `publisher` · `cell`, `widgets` · `live/`, `rust/`,
//! `bridge` · `magics/` · `requests` · `executor` · `server`.

pub mod bridge;
pub mod cell;
pub mod display;
pub mod executor;
pub mod install;
pub mod live;
pub mod lock;
pub mod magics;
pub mod png;
pub mod publisher;
pub mod requests;
pub mod rust;
pub mod server;
pub mod transport;
pub mod widgets;

pub use rust::runtime_hook;

/// Runs the kernel on a connection file until a shutdown request.
pub fn run(connection_file: &std::path::Path) -> Result<(), String> {
    let info = transport::read_connection_file(connection_file)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("beamtime-kernel-io")
        .build()
        .map_err(|e| format!("cannot start the kernel runtime: {e}"))?;
    rt.block_on(server::serve(info))
}
