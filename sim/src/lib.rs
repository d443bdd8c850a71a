//! `beamtime sim`: a simulated LCLS-II DAQ that writes realistic runs.
//!
//! A run is a pump-probe delay scan ([`model`]) recorded by several DRP nodes ([`detectors`])
//! into xtc2 bigdata chunks and smd files laid out exactly as the DAQ lays them out (spec
//! §13), optionally in real time so that live readers can follow it. Beside the run goes its
//! ground truth ([`Truth`]): exact per-step sums that readers and queries are tested against.
//!
//! ```no_run
//! let mut cfg = sim::SimConfig::new("/tmp/run");
//! cfg.events = 1000;
//! let truth = sim::write_run(&cfg)?;
//! println!("read it with {}", truth.source);
//! # Ok::<(), sim::SimError>(())
//! ```

pub mod area;
pub mod cli;
pub mod clock;
pub mod config;
pub mod detectors;
pub mod jungfrau;
pub mod model;
pub mod run;
pub mod shmem;
pub mod truth;

use std::path::{Path, PathBuf};

pub use config::{existing_run_files, next_free_run, SimConfig, DAQ_CHUNK_BYTES, DEFAULT_EXP};
pub use model::Model;
pub use run::{events_in_step, make_nodes, simulate, write_run, write_run_with_progress, Progress, Sink};
pub use truth::Truth;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("invalid simulation settings: {0}")]
    Config(String),

    #[error("run {run} of {exp} already has {files} file(s) in {} that the simulator did not write: choose another run number, or replace them (--force)", dir.display())]
    RunExists { dir: PathBuf, exp: String, run: u32, files: usize },

    #[error("{}: {msg}", path.display())]
    Truth { path: PathBuf, msg: String },

    /// Serving through shared memory (`beamtime sim --shmem`).
    #[error(transparent)]
    Shmem(#[from] ::shmem::Error),
}

impl SimError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        SimError::Io { path: path.to_path_buf(), source }
    }
}
