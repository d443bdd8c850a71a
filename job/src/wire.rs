//! Messages between the job's ranks (MPI byte messages). What the job exchanges with its
//! driver over ZeroMQ is the `contract` crate's.
//!
//! Every message is `[u32 LE header length][header JSON][body]`: the header is small and
//! readable in a debugger, the body carries datagrams or Arrow IPC streams as they are.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xtc::{FeedStream, Follow};

/// A message could not be read (names what and why).
#[derive(Debug, thiserror::Error)]
#[error("bad {what} message: {why}")]
pub struct WireError {
    pub what: &'static str,
    pub why: String,
}

pub fn encode<H: Serialize>(header: &H, body: &[&[u8]]) -> Vec<u8> {
    let h = serde_json::to_vec(header).expect("headers serialize");
    let mut out = Vec::with_capacity(4 + h.len() + body.iter().map(|b| b.len()).sum::<usize>());
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    for b in body {
        out.extend_from_slice(b);
    }
    out
}

pub fn decode<'a, H: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<(H, &'a [u8]), WireError> {
    let bad = |why: String| WireError { what, why };
    let len = bytes.get(..4).ok_or_else(|| bad(format!("{} bytes, shorter than its length prefix", bytes.len())))?;
    let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
    let h = bytes.get(4..4 + len).ok_or_else(|| bad(format!("header of {len} bytes in a {}-byte message", bytes.len())))?;
    let header = serde_json::from_slice(h).map_err(|e| bad(e.to_string()))?;
    Ok((header, &bytes[4 + len..]))
}

/// MPI tags: one per kind of message, so a rank can probe for the kind it waits for.
pub mod tag {
    /// worker → reader: give me work.
    pub const REQUEST: i32 = 1;
    /// reader → worker: a batch ([`super::Work`]).
    pub const WORK: i32 = 2;
    /// reader → worker: no more data ([`super::End`]).
    pub const END: i32 = 3;
    /// worker → collector: states and counters ([`super::Update`]).
    pub const UPDATE: i32 = 4;
    /// collector → workers and reader: `contract::Command`s.
    pub const COMMAND: i32 = 5;
    /// reader → collector: reading progress and the end of the data ([`super::ReaderStatus`]).
    pub const READER: i32 = 6;
    /// collector → every rank, empty, every 300 ms from a thread of its own: the collector is
    /// alive.
    pub const HEARTBEAT: i32 = 8;
    /// worker or reader → collector, empty, every 300 ms from a thread of the rank's own: it
    /// is alive, however long its current batch takes.
    pub const BEAT: i32 = 9;
    /// worker or combiner → its parent in the merge tree (a combiner or the collector):
    /// cumulative query states ([`super::States`]).
    pub const STATES: i32 = 10;
}

/// How a worker opens its fed reader: one entry per stream, in the reader's order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamSpec {
    pub stream: u32,
    pub label: PathBuf,
    pub smd: bool,
    pub bigdata: PathBuf,
    /// Live runs: poll interval (ms) and retries while bigdata is still being written.
    pub follow: Option<(u64, u32)>,
}

impl StreamSpec {
    pub fn feed(&self) -> FeedStream {
        FeedStream {
            stream: self.stream,
            label: self.label.clone(),
            smd: self.smd,
            bigdata: self.bigdata.clone(),
            follow: self.follow.map(|(ms, retries)| Follow { poll: Duration::from_millis(ms), max_retries: retries }),
        }
    }
}

/// A batch of work: per stream, whole datagrams (the transitions the worker has not seen,
/// then the batch's steps) in the body, one segment after the other.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Work {
    pub batch: u64,
    /// L1 events in this batch, and the run-wide index of its first one.
    pub events: u64,
    #[serde(default)]
    pub first_event: u64,
    pub streams: Vec<StreamSpec>,
    /// (stream index, bytes) of each body segment, in order.
    pub segments: Vec<(usize, usize)>,
    /// The run number to use when a BeginRun carries none.
    pub run_hint: Option<u32>,
}

/// The reader has no more work (the run ended, or the job was stopped).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct End {
    pub reason: String,
    /// The reader failed: the whole job should report it.
    pub error: Option<String>,
}

/// What the reader tells the collector.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReaderStatus {
    /// L1 events built from small data so far, and handed to workers.
    pub events_built: u64,
    pub events_sent: u64,
    /// L1 events handed to each worker rank.
    pub sent_to: Vec<(i32, u64)>,
    /// Newest event timestamp read (LCLS format).
    pub newest: u64,
    pub done: bool,
    pub error: Option<String>,
    /// Where the reader runs (named when it is lost).
    #[serde(default)]
    pub host: String,
}

/// One query's part of a worker update. Bodies are Arrow IPC streams (polars).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryUpdate {
    pub name: String,
    pub generation: u64,
    /// `state`: the worker's cumulative state (replaces the previous one);
    /// `rows`: new rows of a row query (appended); `error`: the query failed on this worker.
    pub kind: UpdateKind,
    /// The events table's columns the worker planned against (first update of a plan).
    pub columns: Option<Vec<String>>,
    /// Events read by this worker while this query (generation) was active.
    pub events_read: u64,
    pub error: Option<String>,
    pub bytes: usize,
    /// Things the user should know about the query's columns (psana's calibration fallbacks,
    /// where the constants came from), said until the collector has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// The result's array shapes ([`query::layout`]), sent when they change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// A saved row query: this worker's part file so far (its rows stay there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<SavedPart>,
}

/// A worker's part file of a saved query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedPart {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// Closed: complete and readable.
    pub closed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateKind {
    State,
    Rows,
    Error,
}

/// A worker's report to the collector.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Update {
    pub events_read: u64,
    pub batches: u64,
    /// Newest event timestamp decoded (LCLS format).
    pub newest: u64,
    pub pid: u32,
    pub host: String,
    /// The worker has processed its last batch.
    pub done: bool,
    /// The worker cannot go on (bad data): named file, offset and cause.
    pub error: Option<String>,
    pub queries: Vec<QueryUpdate>,
    /// Shared-memory mode: what reached this worker's client, for the drop estimate.
    #[serde(default)]
    pub shmem: Option<ShmemCounts>,
    /// Merge tree: the rank this worker's states go to in [`States`] messages (the states in
    /// this update are then empty). None: they are in this update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub states_to: Option<i32>,
}

/// Cumulative states on their way up the merge tree: one worker's own, or a combiner's merge
/// of its members'. Counters, rows and errors go straight to the collector in [`Update`]s;
/// only states, whose merging is the collector's cost per frame, are combined on the way.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct States {
    /// The workers whose states these are.
    pub members: Vec<Member>,
    /// Bodies are Arrow IPC streams, one per part, in order.
    pub parts: Vec<StatePart>,
}

/// A worker covered by a [`States`] message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub rank: i32,
    /// Events the worker had read when its states were taken (what is lost with them).
    pub events_read: u64,
    /// No more states will come for it this way: its data is over, or it was lost.
    #[serde(rename = "final")]
    pub last: bool,
}

/// One query's merged state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatePart {
    pub name: String,
    pub generation: u64,
    /// The events table's columns the state was planned against (a combiner plans from them).
    pub columns: Vec<String>,
    pub bytes: usize,
}

/// What one shared-memory client received: the collector estimates the events the server
/// dropped (or stole) from the time span of all clients' events and the spacing of the
/// trigger, found in the union of their first timestamps. Exact for a fixed-rate trigger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShmemCounts {
    pub received: u64,
    /// Event times, ns since the EPICS epoch: the first few and the last.
    pub first_ns: Vec<u64>,
    pub last_ns: u64,
    /// Time the DAQ was enabled (Enable → Disable, the open one up to the newest event), ns:
    /// every client sees every transition, so this spans the events of all of them.
    #[serde(default)]
    pub enabled_ns: u64,
    pub transitions: u64,
    /// SlowUpdates while enabled: each took a trigger pulse, so it is not a dropped event.
    #[serde(default)]
    pub slow_updates: u64,
    pub connects: u64,
    /// The server went away (and the client waits for the next one).
    pub server_gone: Option<String>,
}

/// LCLS timestamp (seconds since 1990 << 32 | ns) → Unix seconds.
pub fn lcls_to_unix_secs(ts: u64) -> f64 {
    const EPICS_EPOCH: f64 = 631_152_000.0;
    (ts >> 32) as f64 + EPICS_EPOCH + (ts & 0xffff_ffff) as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_clear_errors() {
        let end = End { reason: "stopped".into(), error: Some("x".into()) };
        let bytes = encode(&end, &[b"xy", b"z"]);
        let (back, body): (End, _) = decode("end", &bytes).unwrap();
        assert_eq!((back.reason, back.error), (end.reason, end.error));
        assert_eq!(body, b"xyz");
        let e = decode::<End>("end", &bytes[..3]).unwrap_err();
        assert_eq!(e.to_string(), "bad end message: 3 bytes, shorter than its length prefix");
        let e = decode::<End>("end", &[200, 0, 0, 0, b'{']).unwrap_err();
        assert!(e.to_string().contains("header of 200 bytes in a 5-byte message"), "{e}");
        let json = br#"{"reason":3}"#;
        let mut m = (json.len() as u32).to_le_bytes().to_vec();
        m.extend_from_slice(json);
        assert!(decode::<End>("end", &m).unwrap_err().to_string().contains("invalid type"));
    }
}
