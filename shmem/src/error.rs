//! Errors that name the object (queue, segment, socket) or the buffer and offset involved.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a named object failed, e.g. `mq_open /PdsToMonitorEvQueue_tag_2: …`.
    #[error("{op} {object}: {source}")]
    Os { op: &'static str, object: String, source: io::Error },

    /// Settings the protocol or the machine cannot honour (spec §10).
    #[error("{0}")]
    Config(String),

    /// A message or buffer that breaks the protocol (bad index, datagram past its buffer…).
    #[error("{object}: {msg}")]
    Protocol { object: String, msg: String },

    /// A datagram that is not one whole XTC2 datagram, or that cannot be served.
    #[error("{0}")]
    Datagram(String),

    /// The server closed the connection before the first message: every slot is taken.
    #[error("the shared-memory server of '{tag}' rejected the connection: all its client slots are in use (start it with more queues)")]
    Rejected { tag: String },

    /// No server answered in time.
    #[error("{0}")]
    Timeout(String),
}

impl Error {
    pub(crate) fn os(op: &'static str, object: impl Into<String>) -> Self {
        Error::Os { op, object: object.into(), source: io::Error::last_os_error() }
    }
    pub(crate) fn os_with(op: &'static str, object: impl Into<String>, source: io::Error) -> Self {
        Error::Os { op, object: object.into(), source }
    }
    pub(crate) fn protocol(object: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Protocol { object: object.into(), msg: msg.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
