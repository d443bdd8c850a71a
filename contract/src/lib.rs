//! The job ↔ driver contract (see README.md): what `beamtime-job` and the kernel or
//! `beamtime run` exchange, in one place, versioned.

pub mod codec;
pub mod endpoint;
pub mod error;
pub mod launch;
pub mod link;
pub mod messages;
pub mod spec;

pub use detector::settings::{CalibSetting, CalibValue};
pub use endpoint::JobEndpoint;
pub use error::ContractError;
pub use link::Link;
pub use messages::{Ack, AckOutcome, Command, FrameHeader, Finished, Hello, JobMessage, Outcome, RowDelta, EXIT_USAGE};
pub use spec::JobSpec;

/// The version of this contract. Every message and every job description carries it; bump it
/// whenever a message or the job description changes shape or meaning.
pub const CONTRACT_VERSION: u32 = 1;
