//! The live-analysis job: reader, workers and collector (see README.md), run over MPI by
//! `beamtime-job` or in one process by [`inproc`].

pub mod collector;
pub mod feed;
pub mod inproc;
pub mod launch;
pub mod link;
pub mod shmem_feed;
pub mod wire;
pub mod worker;

#[cfg(feature = "mpi")]
pub mod ranks;

pub use collector::{Collector, Frame};
pub use feed::{Distributor, FeedOptions};
pub use wire::{Command, FrameHeader};
pub use worker::Worker;
