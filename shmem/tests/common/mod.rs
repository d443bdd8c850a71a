//! Helpers for the tests over the real POSIX objects: unique tags, datagrams, the leak check.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmem::msg::segment_name;
use shmem::sys::{self, MessageQueue, ShmSegment};
use shmem::{Client, ClientOptions, Received, ServerConfig, StopAt};
use xtc::writer::DgramWriter;
use xtc::TransitionId;

static N: AtomicU32 = AtomicU32::new(0);

/// A tag no other test (or test process) uses.
pub fn tag(name: &str) -> String {
    format!("bt_test_{}_{}_{name}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A server config for tests: removes its segment when dropped.
pub fn config(tag: &str, n_events: usize, n_queues: usize) -> ServerConfig {
    let mut c = ServerConfig::new(tag);
    c.n_events = n_events;
    c.n_queues = n_queues;
    c.buffer_size = 4096;
    c.remove_segment_on_drop = true;
    c
}

/// Client options for tests: quick retries, a bounded wait.
pub fn options(stop: StopAt) -> ClientOptions {
    ClientOptions { retry: Duration::from_millis(20), connect_timeout: Some(Duration::from_secs(10)), stop, ..Default::default() }
}

/// A datagram of `service` at timestamp `ts` with `payload` opaque bytes (a Data Xtc the
/// decoder skips), each byte = `ts as u8`.
pub fn dg(service: TransitionId, ts: u64, payload: usize) -> Vec<u8> {
    let mut b = Vec::new();
    DgramWriter::begin(&mut b, service, ts, 1).finish();
    if payload > 0 {
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&3u16.to_le_bytes());
        b.extend_from_slice(&((12 + payload) as u32).to_le_bytes());
        b.resize(b.len() + payload, ts as u8);
        let extent = (b.len() - 12) as u32;
        b[20..24].copy_from_slice(&extent.to_le_bytes());
    }
    b
}

pub fn l1(ts: u64) -> Vec<u8> {
    dg(TransitionId::L1Accept, ts, 16)
}

pub fn tr(service: TransitionId, ts: u64) -> Vec<u8> {
    dg(service, ts, 8)
}

/// Receives until `stop` is returned (or `limit` passes): every datagram's (service, ts).
pub fn collect(c: &mut Client, limit: Duration) -> Vec<(TransitionId, u64)> {
    let until = Instant::now() + limit;
    let mut out = Vec::new();
    while Instant::now() < until {
        match c.next(Duration::from_millis(50)).expect("client") {
            Some(Received::Dgram(d)) => out.push((d.service(), d.timestamp())),
            Some(Received::Stopped) => break,
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
    out
}

/// Receives whatever comes within `quiet` of silence.
pub fn drain(c: &mut Client, quiet: Duration) -> Vec<(TransitionId, u64)> {
    let mut out = Vec::new();
    while let Some(r) = c.next(quiet).expect("client") {
        match r {
            Received::Dgram(d) => out.push((d.service(), d.timestamp())),
            Received::Stopped => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

/// Removes the tag's segment; asserts no queue of the tag is left in /dev/mqueue (and
/// removes any so that a failure does not leak).
pub fn check_clean(tag: &str) {
    let _ = ShmSegment::unlink(&segment_name(tag));
    if !sys::mqueue_mounted() {
        eprintln!("note: /dev/mqueue is not mounted: queue leak check skipped (mount -t mqueue none /dev/mqueue)");
        return;
    }
    let left = sys::queues_of_tag(tag);
    for n in &left {
        let _ = MessageQueue::unlink(n);
    }
    assert!(left.is_empty(), "queues left behind: {left:?}");
}

/// Cleans up on every exit path (the explicit `check_clean` asserts; this only removes).
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = ShmSegment::unlink(&segment_name(&self.0));
        for n in sys::queues_of_tag(&self.0) {
            let _ = MessageQueue::unlink(&n);
        }
    }
}

pub const RUN_START: [TransitionId; 4] = [TransitionId::Configure, TransitionId::BeginRun, TransitionId::BeginStep, TransitionId::Enable];
pub const RUN_END: [TransitionId; 3] = [TransitionId::Disable, TransitionId::EndStep, TransitionId::EndRun];
