//! The LCLS-II XTC2 format (see `shared/spec/xtc2.md`), from bytes to Arrow record batches.

pub mod decode;
pub mod dgram;
pub mod error;
pub mod file;
pub mod names;
pub mod run;
pub mod source;
pub mod stream;
pub mod table;
pub mod writer;

pub use decode::{ArrayView, ShapesData, Value};
pub use dgram::{Dgram, TransitionId, XtcHeader};
pub use error::{Error, FormatError, Result};
pub use names::{DataType, Name, Names, NamesLookup};
pub use file::Follow;
pub use run::{Built, FeedStream, RunReader};
pub use source::{RunSource, Source, StopAt};
pub use stream::{ConfigField, ConfigRecord, StreamState};
