//! The messages between the job and its driver over ZeroMQ.
//!
//! Job → driver: multipart `[kind, header JSON, body?]`, kind `hello`, `frame` (body: the
//! result as an Arrow IPC stream, [`crate::codec`]), `ack` or `end`. Driver → job: one part,
//! `{"contract": N, "command": {…}}`. Every header carries the contract version, checked
//! before anything else is read.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{ContractError, CONTRACT_VERSION};

/// A query command, from the driver through the collector to every worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Add a query, or replace the one with this name (its accumulators start afresh).
    Set {
        name: String,
        sql: String,
        #[serde(default)]
        mode: String,
        #[serde(default)]
        generation: u64,
        /// Save the query's per-event rows (or, for an aggregate, its final result) to this
        /// path (absolute; `.h5` or `.parquet`), written by the workers as the job runs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        save: Option<String>,
    },
    Remove { name: String },
    /// Start a query's accumulators afresh (all queries when `name` is None).
    Reset {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        generation: u64,
    },
    /// Stop reading; finish with the results so far.
    Stop,
    /// Send the query's whole result in its next frame (the driver lost track of the rows a
    /// delta extends). For the collector only; workers ignore it.
    Resend { name: String },
    /// Load a library of event functions (the user's compiled Rust) on every rank, so that
    /// queries can call its functions by name: its content hash and its bytes (hex), shipped
    /// over the job's own channels (the ranks need not share a filesystem).
    Library { hash: String, library: String },
}

impl Command {
    /// The query the command is about (None: the whole job).
    pub fn query(&self) -> Option<&str> {
        match self {
            Command::Set { name, .. } | Command::Remove { name } | Command::Resend { name } => Some(name),
            Command::Reset { name, .. } => name.as_deref(),
            Command::Stop | Command::Library { .. } => None,
        }
    }

    /// The generation the collector stamped on an accepted `Set` or `Reset`.
    pub fn generation(&self) -> Option<u64> {
        match self {
            Command::Set { generation, .. } | Command::Reset { generation, .. } => Some(*generation),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct CommandMessage {
    contract: u32,
    command: Command,
}

/// A command as the driver sends it.
pub fn encode_command(command: &Command) -> Vec<u8> {
    serde_json::to_vec(&CommandMessage { contract: CONTRACT_VERSION, command: command.clone() }).expect("commands serialize")
}

/// A command as the job receives it (the version checked first).
pub fn decode_command(bytes: &[u8]) -> Result<Command, ContractError> {
    ContractError::check_driver_version(version_of("command", bytes)?)?;
    let m: CommandMessage = serde_json::from_slice(bytes).map_err(|e| ContractError::malformed("command", e))?;
    Ok(m.command)
}

/// The job is up: rank 0 connected, the other ranks started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub contract: u32,
    pub ranks: usize,
    pub workers: Vec<i32>,
    pub source: String,
    pub pid: u32,
}

impl Hello {
    pub fn new(ranks: usize, workers: Vec<i32>, source: &str) -> Self {
        Hello { contract: CONTRACT_VERSION, ranks, workers, source: source.to_string(), pid: std::process::id() }
    }
}

/// The header of a result frame; the body is the result (or a [`RowDelta`] of it) as an Arrow
/// IPC stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameHeader {
    pub contract: u32,
    pub query: String,
    pub seq: u64,
    pub generation: u64,
    pub mode: String,
    pub events_read: u64,
    pub events_included: u64,
    pub events_dropped: u64,
    pub ranks_alive: usize,
    pub ranks_total: usize,
    /// Worker ranks that stopped reporting (stalled) or whose process is gone (dead).
    pub ranks_stalled: Vec<i32>,
    pub ranks_dead: Vec<i32>,
    /// Events per second over the last few seconds (all workers).
    pub rate_hz: f64,
    /// Events per second over the whole reading so far (the job's mean rate).
    #[serde(default)]
    pub mean_rate_hz: f64,
    /// Seconds between the newest event's timestamp and now.
    pub newest_age_s: Option<f64>,
    /// Rows of the whole result (also when the body is a delta).
    pub rows: usize,
    /// When set, the body holds only the change since frame `prev_seq` of this query (see
    /// [`RowDelta`]); otherwise the whole result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<RowDelta>,
    /// The data is finished (end of run or stop): this is the final result.
    pub done: bool,
    /// The query failed (bad query, unknown column) or the job did (unreadable data).
    pub error: Option<String>,
    /// What the user should know about the result, each said once by the job (psana's
    /// calibration fallbacks, where the constants came from).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// Result column → shape (C order) of the arrays it holds, for columns of two or more
    /// dimensions (a mean image keeps its detector's shape): the widgets draw them as images.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shapes: BTreeMap<String, Vec<usize>>,
}

impl Default for FrameHeader {
    fn default() -> Self {
        FrameHeader {
            contract: CONTRACT_VERSION,
            query: String::new(),
            seq: 0,
            generation: 0,
            mode: String::new(),
            events_read: 0,
            events_included: 0,
            events_dropped: 0,
            ranks_alive: 0,
            ranks_total: 0,
            ranks_stalled: Vec::new(),
            ranks_dead: Vec::new(),
            rate_hz: 0.0,
            mean_rate_hz: 0.0,
            newest_age_s: None,
            rows: 0,
            delta: None,
            done: false,
            error: None,
            notices: Vec::new(),
            shapes: BTreeMap::new(),
        }
    }
}

/// The change of a row query's result since an earlier frame: drop its `drop` oldest rows,
/// then append the body's rows. Row queries grow by appends and windows lose their oldest
/// rows, so a frame carries what is new instead of up to a million rows every time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowDelta {
    pub prev_seq: u64,
    pub drop: usize,
}

/// The collector's answer to one command, naming the query it was about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub contract: u32,
    /// The command's query (None: a command for the whole job, or one that could not be read).
    pub query: Option<String>,
    pub outcome: AckOutcome,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckOutcome {
    /// The command as the workers get it (a `Set` or `Reset` stamped with its generation).
    Accepted(Command),
    /// Why it was refused (a bad query, an unknown name).
    Rejected(String),
}

impl Ack {
    pub fn accepted(command: Command) -> Self {
        Ack { contract: CONTRACT_VERSION, query: command.query().map(str::to_string), outcome: AckOutcome::Accepted(command) }
    }

    pub fn rejected(query: Option<String>, error: impl ToString) -> Self {
        Ack { contract: CONTRACT_VERSION, query, outcome: AckOutcome::Rejected(error.to_string()) }
    }
}

/// The job's last message: how many events it read, how it ended, and why it failed if it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub contract: u32,
    pub events: u64,
    pub error: Option<String>,
    #[serde(default)]
    pub outcome: Outcome,
    /// Events handed to ranks that were lost before they reported them.
    #[serde(default)]
    pub events_lost: u64,
    /// What happened to each lost rank (role, rank, host, why).
    #[serde(default)]
    pub lost: Vec<String>,
}

impl Finished {
    pub fn new(events: u64, error: Option<String>) -> Self {
        let outcome = if error.is_some() { Outcome::Error } else { Outcome::Complete };
        Finished { contract: CONTRACT_VERSION, events, error, outcome, events_lost: 0, lost: Vec::new() }
    }
}

/// How a job ended. Each has its own exit status (of `beamtime-job` and `beamtime run`), so
/// that scripts and batch systems can tell a partial result from a failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every event of the source was analysed.
    #[default]
    Complete,
    /// A query or the job failed (not the source).
    Error,
    /// The source could not be opened or read (a missing, unreadable or vanished file).
    SourceError,
    /// A rank died or stopped answering: the result lacks the events it held.
    RankLost,
    /// Stopped before the end of the data (by the user, `--timeout`): the result is partial.
    Stopped,
}

impl Outcome {
    /// 0 complete, 1 error, 3 source error, 4 rank lost, 5 stopped (2 is a usage error).
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Complete => 0,
            Outcome::Error => 1,
            Outcome::SourceError => 3,
            Outcome::RankLost => 4,
            Outcome::Stopped => 5,
        }
    }
}

/// Exit status of a usage error (bad arguments, an unreadable job description).
pub const EXIT_USAGE: u8 = 2;

/// A job → driver message and its kind on the wire.
pub trait Outgoing: Serialize {
    const KIND: &'static str;
}

impl Outgoing for Hello {
    const KIND: &'static str = "hello";
}
impl Outgoing for FrameHeader {
    const KIND: &'static str = "frame";
}
impl Outgoing for Ack {
    const KIND: &'static str = "ack";
}
impl Outgoing for Finished {
    const KIND: &'static str = "end";
}

/// The parts of a job → driver message.
pub fn encode_outgoing<M: Outgoing>(message: &M, body: Option<Vec<u8>>) -> Vec<Bytes> {
    let mut parts = vec![Bytes::from_static(M::KIND.as_bytes()), Bytes::from(serde_json::to_vec(message).expect("messages serialize"))];
    if let Some(b) = body {
        parts.push(Bytes::from(b));
    }
    parts
}

/// What the job sends to whoever drives it (the kernel, `beamtime run`, a test).
#[derive(Debug)]
pub enum JobMessage {
    Hello(Hello),
    Frame(FrameHeader, Vec<u8>),
    Ack(Ack),
    Finished(Finished),
}

impl JobMessage {
    /// Reads `[kind, header, body?]`; the version is checked before the header's shape.
    pub fn decode(parts: &[Bytes]) -> Result<JobMessage, ContractError> {
        let [kind, header, rest @ ..] = parts else {
            return Err(ContractError::malformed("job", format!("{} parts, expected kind and header", parts.len())));
        };
        let kind = String::from_utf8_lossy(kind);
        let what = kind.as_ref();
        ContractError::check_job_version(version_of(what, header)?)?;
        Ok(match what {
            Hello::KIND => JobMessage::Hello(typed(what, header)?),
            FrameHeader::KIND => JobMessage::Frame(typed(what, header)?, rest.first().map(|b| b.to_vec()).unwrap_or_default()),
            Ack::KIND => JobMessage::Ack(typed(what, header)?),
            Finished::KIND => JobMessage::Finished(typed(what, header)?),
            other => return Err(ContractError::malformed("job", format!("unknown kind {other:?}"))),
        })
    }
}

fn typed<T: DeserializeOwned>(what: &str, header: &[u8]) -> Result<T, ContractError> {
    serde_json::from_slice(header).map_err(|e| ContractError::malformed(what, e))
}

/// The `contract` field of a JSON header (0: a header from before the contract was versioned).
fn version_of(what: &str, header: &[u8]) -> Result<u32, ContractError> {
    #[derive(Deserialize)]
    struct Versioned {
        #[serde(default)]
        contract: u32,
    }
    let v: Versioned = serde_json::from_slice(header).map_err(|e| ContractError::malformed(what, e))?;
    Ok(v.contract)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let set = Command::Set { name: "a".into(), sql: "SELECT 1".into(), mode: "run".into(), generation: 3, save: None };
        assert_eq!(decode_command(&encode_command(&set)).unwrap(), set);
        let header = FrameHeader { query: "q".into(), seq: 4, delta: Some(RowDelta { prev_seq: 3, drop: 1 }), ..Default::default() };
        match JobMessage::decode(&encode_outgoing(&header, Some(vec![1, 2]))).unwrap() {
            JobMessage::Frame(h, body) => assert_eq!((h, body), (header, vec![1, 2])),
            other => panic!("{other:?}"),
        }
        let ack = Ack::rejected(Some("bad".into()), "unknown column x");
        assert!(matches!(JobMessage::decode(&encode_outgoing(&ack, None)).unwrap(), JobMessage::Ack(a) if a == ack));
        assert_eq!(Ack::accepted(set).query.as_deref(), Some("a"));
    }

    #[test]
    fn another_version_is_named_not_misread() {
        let mut header = FrameHeader { query: "q".into(), ..Default::default() };
        header.contract = CONTRACT_VERSION + 1;
        let e = JobMessage::decode(&encode_outgoing(&header, None)).unwrap_err();
        assert_eq!(e, ContractError::Version { job: CONTRACT_VERSION + 1, driver: CONTRACT_VERSION });
        assert!(e.to_string().starts_with(&format!("job speaks contract v{}, kernel v{CONTRACT_VERSION}: ", CONTRACT_VERSION + 1)), "{e}");
        // A job from before versioning (no field, other shapes) is version 0, not garbage.
        let old = [Bytes::from_static(b"frame"), Bytes::from_static(br#"{"query":"q","sql":"SELECT 1"}"#)];
        assert!(matches!(JobMessage::decode(&old), Err(ContractError::Version { job: 0, .. })));
        let e = decode_command(br#"{"op":"stop"}"#).unwrap_err();
        assert_eq!(e, ContractError::Version { job: CONTRACT_VERSION, driver: 0 });
        let unknown = format!(r#"{{"contract":{CONTRACT_VERSION},"command":{{"op":"launch"}}}}"#);
        assert!(matches!(decode_command(unknown.as_bytes()), Err(ContractError::Malformed { .. })));
    }
}
