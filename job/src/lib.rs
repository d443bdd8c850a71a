//! The live-analysis job: reader, workers and collector (see README.md), run over MPI by
//! `beamtime-job` or in one process by [`inproc`]; it talks to its driver through `contract`.

pub mod calib_columns;
pub mod collector;
pub mod combiner;
pub mod reader;
pub mod inproc;
pub mod libraries;
pub mod shmem_source;
pub mod tree;
pub mod wire;
pub mod worker;

#[cfg(feature = "mpi")]
pub mod ranks;

pub use collector::{Collector, Frame};
pub use reader::{Reader, ReaderOptions};
pub use contract::{Command, FrameHeader};
pub use worker::Worker;
