//! The ranks' channel: MPI calls taken in turns, non-blocking sends whose buffers live until
//! they complete, matched-probe receives from any source, and the heartbeat thread.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};

use super::{collector_lost, COLLECTOR, FIRST_COMMANDS_PATIENCE};
use crate::collector::LOST_AFTER;
use crate::wire::tag;

/// MPI runs SERIALIZED: the main thread and the beat thread ([`Beats`]) take turns under this
/// lock, held only for the call itself, never while a batch is processed.
static MPI_CALLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(super) fn mpi_turn() -> std::sync::MutexGuard<'static, ()> {
    MPI_CALLS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Non-blocking sends whose buffers live until MPI is done with them.
pub(super) struct PendingSends {
    pending: Vec<(Request<'static, [u8], StaticScope>, *mut [u8])>,
}

/// Sends still pending when a rank leaves (an error path) are abandoned, never dropped: a
/// dropped incomplete request is a panic in rsmpi.
impl Drop for PendingSends {
    fn drop(&mut self) {
        self.progress();
        for (req, _) in self.pending.drain(..) {
            std::mem::forget(req);
        }
    }
}

impl PendingSends {
    pub(super) fn new() -> Self {
        PendingSends { pending: Vec::new() }
    }

    pub(super) fn send(&mut self, world: &SimpleCommunicator, to: i32, tag: i32, data: Vec<u8>) {
        let leaked: &'static mut [u8] = Box::leak(data.into_boxed_slice());
        let ptr: *mut [u8] = leaked;
        // SAFETY: `ptr` stays valid (leaked) until the request completes in `progress`.
        let buf: &'static [u8] = unsafe { &*ptr };
        let req = {
            let _turn = mpi_turn();
            world.process_at_rank(to).immediate_send_with_tag(StaticScope, buf, tag)
        };
        self.pending.push((req, ptr));
    }

    /// Completes finished sends and frees their buffers.
    pub(super) fn progress(&mut self) {
        let _turn = mpi_turn();
        let mut still = Vec::with_capacity(self.pending.len());
        for (req, ptr) in self.pending.drain(..) {
            match req.test() {
                // SAFETY: the send is complete; the buffer came from Box::leak in `send`.
                Ok(_) => drop(unsafe { Box::from_raw(ptr) }),
                Err(req) => still.push((req, ptr)),
            }
        }
        self.pending = still;
    }

    /// Waits up to `limit` for the sends to complete; sends to a dead rank are abandoned.
    pub(super) fn drain(mut self, limit: Duration) {
        let t = Instant::now();
        while !self.pending.is_empty() && t.elapsed() < limit {
            self.progress();
            std::thread::sleep(Duration::from_micros(200));
        }
        // What is left goes with Drop.
    }
}

pub(super) fn recv_from(world: &SimpleCommunicator, from: Option<i32>, tag: i32) -> Option<(i32, Vec<u8>)> {
    let _turn = mpi_turn();
    let probe = match from {
        Some(r) => world.process_at_rank(r).immediate_matched_probe_with_tag(tag),
        None => world.any_process().immediate_matched_probe_with_tag(tag),
    };
    probe.map(|pair| {
        let (data, status) = pair.matched_receive_vec::<u8>();
        (status.source_rank(), data)
    })
}

/// A thread that sends an empty message to `targets` every [`BEAT_EVERY`]: the rank's
/// heartbeat, independent of its main loop, so that a rank busy with a long batch (a large
/// detector, many ranks on few cores) is never taken for lost, while a killed or stopped one
/// (SIGSTOP stops every thread) is.
pub(super) struct Beats {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often a rank beats: several beats fit in [`LOST_AFTER`].
const BEAT_EVERY: Duration = Duration::from_millis(300);

/// A beat thread that did not run for this long (the process stopped, or starved of CPU)
/// gives the collector a fresh window: the silence was its own.
const DEAF_GAP: Duration = Duration::from_millis(1000);

impl Beats {
    /// Beats to `targets` with `tag`, skipping the ranks in `skip` (found lost: a send to a
    /// dead rank never completes). With `watch` (this rank's number), also hears the
    /// collector's beats and ends the process when they stop: however busy the main loop is.
    pub(super) fn start(targets: Vec<i32>, tag: i32, skip: std::sync::Arc<std::sync::Mutex<BTreeSet<i32>>>, watch: Option<i32>) -> Beats {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("beamtime-beats".into())
            .spawn(move || {
                let world = SimpleCommunicator::world();
                let mut out = PendingSends::new();
                let started = Instant::now();
                // When the collector was last heard, and whether ever; when this thread last ran.
                let (mut seen, mut ever, mut ran) = (Instant::now(), false, Instant::now());
                while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    let skipped = skip.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    for &r in targets.iter().filter(|r| !skipped.contains(r)) {
                        out.send(&world, r, tag, Vec::new());
                    }
                    out.progress();
                    if let Some(rank) = watch {
                        // Not run for a while (stopped, starved): the silence was ours.
                        if ran.elapsed() > DEAF_GAP {
                            seen = Instant::now();
                        }
                        ran = Instant::now();
                        while recv_from(&world, Some(COLLECTOR), tag::HEARTBEAT).is_some() {
                            (seen, ever) = (Instant::now(), true);
                        }
                        // Before its first beat the collector may still be starting.
                        let lost = if ever { seen.elapsed() > LOST_AFTER } else { started.elapsed() > FIRST_COMMANDS_PATIENCE };
                        if lost {
                            collector_lost(rank, seen.elapsed());
                        }
                    }
                    std::thread::sleep(BEAT_EVERY);
                }
                // Unfinished beats (to a rank gone) are abandoned by PendingSends' drop.
            })
            .ok();
        Beats { stop, thread }
    }

}

/// Stopped on every way out of a role (its last beat is at most BEAT_EVERY old).
impl Drop for Beats {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(super) fn idle() {
    std::thread::sleep(Duration::from_micros(200));
}

