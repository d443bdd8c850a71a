//! What can go wrong between the job and its driver, by kind.

/// An error of the contract itself (not of the data or a query: those travel as text in
/// [`crate::FrameHeader::error`] and [`crate::Finished::error`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContractError {
    /// The two sides were built from different versions of the contract.
    #[error(
        "job speaks contract v{job}, kernel v{driver}: beamtime-job and beamtime come from different builds; \
         build or install them together (or point $BEAMTIME_JOB at the matching beamtime-job)"
    )]
    Version { job: u32, driver: u32 },
    /// A message that does not read as what its kind says.
    #[error("bad {what} message: {why}")]
    Malformed { what: String, why: String },
    /// A DataFrame could not be encoded or decoded as Arrow IPC.
    #[error("Arrow IPC: {0}")]
    Ipc(String),
    /// The ZeroMQ link could not be set up.
    #[error("{0}")]
    Link(String),
    /// The job could not be started.
    #[error("cannot start the job: {0}")]
    Launch(String),
}

impl ContractError {
    pub fn malformed(what: &str, why: impl ToString) -> Self {
        ContractError::Malformed { what: what.to_string(), why: why.to_string() }
    }

    /// Ok when `theirs` (the job's version, as read from its message) is ours.
    pub fn check_job_version(theirs: u32) -> Result<(), ContractError> {
        match theirs == crate::CONTRACT_VERSION {
            true => Ok(()),
            false => Err(ContractError::Version { job: theirs, driver: crate::CONTRACT_VERSION }),
        }
    }

    /// Ok when `theirs` (the driver's version, as read from its job description or command) is
    /// ours (the job's).
    pub fn check_driver_version(theirs: u32) -> Result<(), ContractError> {
        match theirs == crate::CONTRACT_VERSION {
            true => Ok(()),
            false => Err(ContractError::Version { job: crate::CONTRACT_VERSION, driver: theirs }),
        }
    }
}
