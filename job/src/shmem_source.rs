//! Shared-memory mode (`--source shmem=<tag>…`): every worker is its own client of the DAQ's
//! monitor (psana2's model: one connection per rank). The server spreads events over the
//! clients and gives every client every transition, so each worker decodes its own events
//! with the full schema; no reader rank. Events are copied out and released at once (the
//! `shmem` client), decoded in batches, and what arrived is counted for the drop estimate.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmem::{Client, ClientOptions, Received};
use xtc::{StopAt, TransitionId};

use crate::wire::ShmemCounts;
use crate::worker::Worker;

/// Event times kept per client for finding the trigger spacing.
const EARLY_EVENTS: usize = 64;

/// Datagrams remembered (where they start in the fed stream, which buffer served them) to
/// name the buffer of one that does not decode.
const RECENT_DGRAMS: usize = 4096;

/// One worker's shared-memory client and what it has received.
pub struct ShmemSource {
    tag: String,
    stop: StopAt,
    client: Option<Client>,
    label: PathBuf,
    counts: ShmemCounts,
    next_index: u64,
    done: bool,
    /// Enabled time so far (closed Enable → Disable periods), and the open Enable.
    enabled_closed_ns: u64,
    enabled_at: Option<u64>,
    /// Bytes fed to the worker so far (decode errors count offsets in them), and the newest
    /// datagrams' (start offset, server buffer).
    fed_bytes: u64,
    recent: VecDeque<(u64, u32)>,
}

impl ShmemSource {
    pub fn new(tag: &str, stop: StopAt) -> Self {
        ShmemSource {
            tag: tag.to_string(),
            stop,
            client: None,
            label: PathBuf::from(format!("shmem:{tag}")),
            counts: ShmemCounts::default(),
            next_index: 0,
            done: false,
            enabled_closed_ns: 0,
            enabled_at: None,
            fed_bytes: 0,
            recent: VecDeque::new(),
        }
    }

    /// The stop transition has been received (`stop=endrun` etc.): nothing more will come.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Receives datagrams into `w` for up to `budget` (or `max` events), then decodes them
    /// and runs the queries. Connects first, waiting at most `budget` for a server.
    pub fn pump(&mut self, w: &mut Worker, max: usize, budget: Duration) -> Result<(), String> {
        let t = Instant::now();
        if self.client.is_none() {
            let opts = ClientOptions { retry: Duration::from_millis(100), connect_timeout: Some(budget), stop: self.stop, ..Default::default() };
            match Client::connect(&self.tag, opts) {
                Ok(c) => self.client = Some(c),
                // No server yet: the job waits for one, as psana does.
                Err(shmem::Error::Timeout(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
        let client = self.client.as_mut().unwrap();
        let mut events = 0usize;
        while events < max && !self.done {
            let left = budget.saturating_sub(t.elapsed());
            if left.is_zero() {
                break;
            }
            match client.next(left.min(Duration::from_millis(10))) {
                Ok(Some(Received::Dgram(d))) => {
                    if d.is_event() {
                        events += 1;
                        self.counts.received += 1;
                        let ns = lcls_ns(d.timestamp());
                        if self.counts.first_ns.len() < EARLY_EVENTS {
                            self.counts.first_ns.push(ns);
                        }
                        self.counts.last_ns = self.counts.last_ns.max(ns);
                    } else {
                        self.counts.transitions += 1;
                        let ns = lcls_ns(d.timestamp());
                        match d.service() {
                            TransitionId::Enable => self.enabled_at = Some(ns),
                            TransitionId::SlowUpdate if self.enabled_at.is_some() => self.counts.slow_updates += 1,
                            TransitionId::Disable => {
                                if let Some(at) = self.enabled_at.take() {
                                    self.enabled_closed_ns += ns.saturating_sub(at);
                                }
                            }
                            _ => {}
                        }
                    }
                    self.counts.server_gone = None;
                    if self.recent.len() == RECENT_DGRAMS {
                        self.recent.pop_front();
                    }
                    self.recent.push_back((self.fed_bytes, d.buffer));
                    self.fed_bytes += d.bytes().len() as u64;
                    w.feed_dgram(&self.label, d.bytes());
                }
                Ok(Some(Received::ServerGone { reason })) => self.counts.server_gone = Some(reason),
                Ok(Some(Received::Reconnected { .. })) => self.counts.server_gone = None,
                Ok(Some(Received::Stopped)) => self.done = true,
                Ok(None) => {}
                // A bad message or buffer index: reported, and the client goes on.
                Err(e) => eprintln!("beamtime-job: shared memory '{}': {e}", self.tag),
            }
        }
        self.counts.connects = client.stats().connects;
        let open = self.enabled_at.map_or(0, |at| self.counts.last_ns.saturating_sub(at));
        self.counts.enabled_ns = self.enabled_closed_ns + open;
        w.shmem = Some(self.counts.clone());
        let first = self.next_index;
        self.next_index += events as u64;
        w.decode_fed(first).map_err(|e| {
            let e = self.locate(e);
            w.error = Some(e.clone());
            e
        })
    }

    /// A decode error with the shared-memory buffer its datagram was served in: the error's
    /// offset (`shmem:<tag>: offset N: …`) counts the bytes this client fed its decoder.
    fn locate(&self, e: String) -> String {
        let prefix = format!("{}: offset ", self.label.display());
        let offset = e.strip_prefix(&prefix).and_then(|rest| rest.split(':').next()).and_then(|n| n.parse::<u64>().ok());
        match offset.and_then(|o| self.recent.iter().rev().find(|(start, _)| *start <= o)) {
            Some((start, buffer)) => format!("{e} (in the datagram at offset {start} of what this client received, served in shared-memory buffer {buffer})"),
            None => e,
        }
    }
}

/// LCLS time (`sec << 32 | nsec`) in ns.
fn lcls_ns(ts: u64) -> u64 {
    (ts >> 32) * 1_000_000_000 + (ts & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decode_error_names_the_buffer_that_served_its_datagram() {
        let mut f = ShmemSource::new("mon", StopAt::EndRun);
        f.recent.extend([(0, 8), (120, 3), (400, 5)]);
        let e = f.locate("shmem:mon: offset 130: ShapesData extent beyond its parent".into());
        assert_eq!(
            e,
            "shmem:mon: offset 130: ShapesData extent beyond its parent (in the datagram at offset 120 of what this client received, served in shared-memory buffer 3)"
        );
        // Not a located decode error: as it was.
        assert_eq!(f.locate("the query failed".into()), "the query failed");
    }
}
