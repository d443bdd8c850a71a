//! Errors that name where the problem is: the file and the byte offset.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem inside one datagram: `at` is the byte offset within the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub at: usize,
    pub msg: String,
}

impl FormatError {
    pub fn new(at: usize, msg: impl Into<String>) -> Self {
        FormatError { at, msg: msg.into() }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {} of the datagram)", self.msg, self.at)
    }
}

impl std::error::Error for FormatError {}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// A corrupt or undecodable datagram; `offset` is the absolute file offset of the problem.
    #[error("{}: offset {offset}: {msg}", path.display())]
    Format { path: PathBuf, offset: u64, msg: String },

    /// Live mode gave up waiting for data.
    #[error("{}: {msg}", path.display())]
    Timeout { path: PathBuf, msg: String },

    /// A source string, directory or option that cannot be used.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }

    /// Place a datagram-level error at `dgram_offset` in `path`.
    pub fn format(path: &Path, dgram_offset: u64, e: FormatError) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            offset: dgram_offset + e.at as u64,
            msg: e.msg,
        }
    }

    pub fn format_msg(path: &Path, offset: u64, msg: impl Into<String>) -> Self {
        Error::Format { path: path.to_path_buf(), offset, msg: msg.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
