//! The job over MPI: rank 0 collects, rank 1 reads (with three or more ranks), the others
//! work; with two ranks, rank 1 reads and works.
//!
//! Point-to-point only: every receive follows a non-blocking matched probe (any source where
//! several may send), every send is non-blocking with its buffer kept until it completes, so
//! a slow, stopped or dead rank never holds up the others. No collective is called anywhere
//! (`tests/no_collectives.sh` fails the build on one).

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::request::{Request, StaticScope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

use crate::collector::{Collector, LOST_AFTER};
use crate::combiner::Combiner;
use crate::tree::MergeTree;
use crate::reader::Reader;
use crate::inproc::{report_failure, Emitter, JobSpec, SpecExt};
use crate::shmem_source::ShmemSource;
use crate::wire::{self, tag, End, ReaderStatus};
use contract::{Command, Hello, Outcome};
use crate::worker::Worker;

const COLLECTOR: i32 = 0;
const READER: i32 = 1;
/// collector → reader and workers: worker ranks found dead (JSON list).
const TAG_DEAD: i32 = 7;

/// MPI runs SERIALIZED: the main thread and the beat thread ([`Beats`]) take turns under this
/// lock, held only for the call itself, never while a batch is processed.
static MPI_CALLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn mpi_turn() -> std::sync::MutexGuard<'static, ()> {
    MPI_CALLS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Non-blocking sends whose buffers live until MPI is done with them.
struct PendingSends {
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
    fn new() -> Self {
        PendingSends { pending: Vec::new() }
    }

    fn send(&mut self, world: &SimpleCommunicator, to: i32, tag: i32, data: Vec<u8>) {
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
    fn progress(&mut self) {
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
    fn drain(mut self, limit: Duration) {
        let t = Instant::now();
        while !self.pending.is_empty() && t.elapsed() < limit {
            self.progress();
            std::thread::sleep(Duration::from_micros(200));
        }
        // What is left goes with Drop.
    }
}

fn recv_from(world: &SimpleCommunicator, from: Option<i32>, tag: i32) -> Option<(i32, Vec<u8>)> {
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
struct Beats {
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
    fn start(targets: Vec<i32>, tag: i32, skip: std::sync::Arc<std::sync::Mutex<BTreeSet<i32>>>, watch: Option<i32>) -> Beats {
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

fn idle() {
    std::thread::sleep(Duration::from_micros(200));
}

/// Runs this process's role. Returns the collector's results on rank 0.
pub fn run(spec: &JobSpec) -> Result<Option<Collector>, String> {
    // MPI_Init waits for every rank: one that dies while starting holds the others forever.
    let initialized = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watched = initialized.clone();
    // Large jobs on slow networks may need longer: $BEAMTIME_MPI_INIT_PATIENCE_S.
    let patience = std::env::var("BEAMTIME_MPI_INIT_PATIENCE_S").ok().and_then(|v| v.parse().ok()).map_or(INIT_PATIENCE, Duration::from_secs_f64);
    let driver = spec.clone();
    std::thread::spawn(move || {
        std::thread::sleep(patience);
        if !watched.load(std::sync::atomic::Ordering::SeqCst) {
            let e = format!("beamtime-job on {}: MPI_Init did not complete within {patience:?} (a rank died while starting?): exiting", crate::worker::hostname());
            eprintln!("{e}");
            // The driver hears it (it would otherwise wait for a launcher that may not end).
            report_failure(&driver, &e, Outcome::RankLost);
            // SAFETY: ends this process; nothing of ours runs yet.
            unsafe { libc::_exit(Outcome::RankLost.exit_code() as i32) };
        }
    });
    let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized).ok_or("MPI is already initialized")?;
    if threading < Threading::Serialized {
        let e = format!("this MPI gives threading level {threading:?}; beamtime-job needs Serialized (its heartbeat runs on a thread of its own)");
        report_failure(spec, &e, Outcome::Error);
        return Err(e);
    }
    initialized.store(true, std::sync::atomic::Ordering::SeqCst);
    let world = universe.world();
    let size = world.size();
    if size < 2 {
        let e = "the MPI job needs at least 2 ranks (a collector and a worker); use --ranks 1 to run in one process".to_string();
        report_failure(spec, &e, Outcome::Error);
        return Err(e);
    }
    let rank = world.rank();
    // Shared memory: every rank but the collector is a client of its own (no reader rank).
    let source = spec.source();
    if let (Err(e), COLLECTOR) = (&source, rank) {
        report_failure(spec, e, Outcome::SourceError);
    }
    let shmem = match source? {
        xtc::Source::Shmem { tag, stop, .. } => Some((tag, stop)),
        _ => None,
    };
    let has_reader = shmem.is_none() && size > 2;
    let workers: Vec<i32> = if has_reader { (2..size).collect() } else { (1..size).collect() };
    let result = match (rank, &shmem) {
        (COLLECTOR, _) => collector(&world, spec, &workers, has_reader).map(Some),
        (_, Some((tag, stop))) => worker(&world, spec, &workers, || Ok(WorkSource::Shmem(ShmemSource::new(tag, *stop)))).map(|_| None),
        (READER, None) if has_reader => reader(&world, spec, &workers).map(|_| None),
        // One worker and no reader rank: the worker reads for itself.
        _ if size == 2 => worker(&world, spec, &workers, || {
            Ok(WorkSource::Own(Reader::start(&spec.source()?, 1, spec.reader_options()).map_err(|e| e.to_string())?))
        })
        .map(|_| None),
        _ => worker(&world, spec, &workers, || Ok(WorkSource::Reader { requested: false })).map(|_| None),
    };
    if let Err(e) = &result {
        eprintln!("beamtime-job rank {rank}: {e}");
    }
    // MPI_Finalize synchronises with every rank; with a rank dead, OpenMPI's can wait forever.
    // The work is done and reported by now, so a finalize that hangs ends the process instead.
    // Linked to a driver, ranks end 0 (see beamtime-job's main); alone, rank 0 says how it went.
    let code = match &result {
        _ if spec.connect.is_some() => 0,
        Ok(Some(c)) => c.outcome().exit_code() as i32,
        Ok(None) => 0,
        Err(_) => 1,
    };
    std::thread::spawn(move || {
        std::thread::sleep(FINALIZE_PATIENCE);
        eprintln!("beamtime-job rank {rank}: MPI_Finalize did not return within {FINALIZE_PATIENCE:?} (a rank died?): exiting");
        // SAFETY: ends this process at once; nothing of ours is left to flush but stderr.
        unsafe { libc::_exit(code) };
    });
    drop(world);
    drop(universe);
    result
}

/// How long MPI_Init may take: every rank starts at once, so this is the launcher's start-up.
const INIT_PATIENCE: Duration = Duration::from_secs(10);

/// How long the collector waits for the workers after a stop.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// How long MPI_Finalize may take before the process ends without it.
const FINALIZE_PATIENCE: Duration = Duration::from_secs(3);

/// How long a rank waits for the collector's first message: every rank has passed MPI_Init
/// together, so this is only the collector's start-up (its link to the driver).
const FIRST_COMMANDS_PATIENCE: Duration = Duration::from_secs(15);

/// The collector is gone: nobody will hear this rank's results or tell it to stop, and
/// MPI_Finalize would wait for the dead rank. Ends the process at once (exit status: rank lost).
fn collector_lost(rank: i32, silent: Duration) -> ! {
    eprintln!(
        "beamtime-job rank {rank} on {}: the collector (rank 0) is lost: no message for {:.1} s: exiting",
        crate::worker::hostname(),
        silent.as_secs_f64()
    );
    // SAFETY: ends this process; nothing of ours is left to flush but stderr (unbuffered).
    unsafe { libc::_exit(Outcome::RankLost.exit_code() as i32) }
}

fn collector(world: &SimpleCommunicator, spec: &JobSpec, workers: &[i32], has_reader: bool) -> Result<Collector, String> {
    let mut c = Collector::new(workers.to_vec());
    c.max_rows = spec.max_rows;
    c.save_in_parts = true;
    c.set_merge_tree(&MergeTree::new(workers, spec.merge_fan_in, COLLECTOR));
    let mut out = PendingSends::new();
    let mut on_frame = |_: &crate::Frame| {};
    let mut emitter = Emitter::new(spec, &mut on_frame)?;
    let emitter_was_unlinked = emitter.link.is_none();
    let hello = Hello::new(world.size() as usize, workers.to_vec(), &spec.source);
    let all_ranks: Vec<i32> = (1..world.size()).collect();
    // The collector's beat to every rank that is not lost, from now on: the ranks wait for it
    // (at most FIRST_COMMANDS_PATIENCE) while the driver ships the event functions.
    let gone = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let beats = Beats::start(all_ranks.clone(), tag::HEARTBEAT, gone.clone(), None);
    // Event-function libraries first: the driver sends them when it hears from the job, and
    // every rank loads them before the queries that call them.
    let early_hello = !spec.functions.is_empty();
    if early_hello {
        emitter.hello(&hello);
    }
    let mut startup_error = None;
    let mut initial = emitter.libraries(&mut c, &spec.functions).unwrap_or_else(|e| {
        startup_error = Some(e);
        Vec::new()
    });
    for q in &spec.queries {
        match c.command(q.clone()) {
            Ok(cmd) => initial.push(cmd),
            Err(e) => startup_error = Some(e),
        }
    }
    if let Some(e) = startup_error {
        // A bad query given at start: stop everyone, report it.
        initial = vec![Command::Stop];
        c.error = Some(e);
    }
    for &r in &all_ranks {
        let cmds = if r == READER && has_reader { initial.iter().filter(|c| **c == Command::Stop).cloned().collect() } else { initial.clone() };
        out.send(world, r, tag::COMMAND, serde_json::to_vec(&cmds).unwrap());
    }
    if !early_hello {
        emitter.hello(&hello);
    }
    let mut reader_done = !has_reader;
    if has_reader {
        c.set_reader(READER);
    }
    let mut known_dead: BTreeSet<i32> = BTreeSet::new();
    let mut last_check = Instant::now();
    let mut reader_lost_handled = false;
    // When the job was told to stop: workers that do not finish soon after are given up.
    let mut stop_seen: Option<Instant> = None;
    loop {
        let cmds = emitter.commands(&mut c);
        for cmd in cmds {
            for &r in &all_ranks {
                if known_dead.contains(&r) || (r == READER && has_reader && cmd != Command::Stop) {
                    continue;
                }
                out.send(world, r, tag::COMMAND, serde_json::to_vec(&vec![cmd.clone()]).unwrap());
            }
        }
        while let Some((from, _)) = recv_from(world, None, tag::BEAT) {
            c.heard(from);
        }
        let mut busy = false;
        while let Some((from, msg)) = recv_from(world, None, tag::UPDATE) {
            busy = true;
            if let Err(e) = c.update(from, &msg) {
                c.error.get_or_insert(format!("rank {from}: {e}"));
            }
        }
        while let Some((from, msg)) = recv_from(world, None, tag::STATES) {
            busy = true;
            if let Err(e) = c.states(from, &msg) {
                c.error.get_or_insert(format!("rank {from}: {e}"));
            }
        }
        while let Some((_, msg)) = recv_from(world, Some(READER).filter(|_| has_reader), tag::READER) {
            busy = true;
            if let Ok((status, _)) = wire::decode::<ReaderStatus>("reader status", &msg) {
                reader_done |= status.done;
                c.reader_status(status);
            }
        }
        if last_check.elapsed() > Duration::from_millis(250) {
            last_check = Instant::now();
            c.check_liveness();
            let dead: BTreeSet<i32> = c.dead_workers().into_iter().collect();
            let mut lost = dead.clone();
            if c.reader_lost {
                lost.insert(READER);
            }
            *gone.lock().unwrap_or_else(|p| p.into_inner()) = lost;
            if dead != known_dead {
                known_dead = dead;
                // The reader forgets them; in a merge tree, their children send elsewhere.
                let list = serde_json::to_vec(&known_dead).unwrap();
                for &r in all_ranks.iter().filter(|r| !known_dead.contains(r)) {
                    out.send(world, r, TAG_DEAD, list.clone());
                }
            }
            // A lost worker that answers again leaves: the reader has given its place away
            // (and a combiner finds itself on the list: its group has gone elsewhere).
            for r in c.take_returned() {
                out.send(world, r, tag::COMMAND, serde_json::to_vec(&vec![Command::Stop]).unwrap());
                out.send(world, r, TAG_DEAD, serde_json::to_vec(&known_dead).unwrap());
            }
            if c.all_workers_lost() && !reader_lost_handled {
                // Nobody is left to read for: the reader stops, the job ends with what it has.
                reader_lost_handled = true;
                if has_reader && !c.reader_lost {
                    out.send(world, READER, tag::COMMAND, serde_json::to_vec(&vec![Command::Stop]).unwrap());
                } else {
                    reader_done = true;
                }
            }
            if c.reader_lost && !reader_lost_handled {
                // No more events can come: the workers finish what they hold and report.
                reader_lost_handled = true;
                reader_done = true;
                for &r in workers {
                    if !known_dead.contains(&r) {
                        out.send(world, r, tag::COMMAND, serde_json::to_vec(&vec![Command::Stop]).unwrap());
                    }
                }
            }
        }
        out.progress();
        if reader_done && c.workers_finished() {
            break;
        }
        if c.stopped {
            let since = *stop_seen.get_or_insert_with(Instant::now);
            // A worker inside one endless batch (an event function that never returns) still
            // beats: after a stop, the job ends without it, with what the others have.
            if since.elapsed() > STOP_WAIT {
                c.give_up_unfinished(STOP_WAIT);
                break;
            }
        }
        emitter.tick(&mut c, false, false);
        if !busy {
            idle();
        }
    }
    drop(beats);
    emitter.tick(&mut c, true, true);
    let written = spec.output.as_ref().map_or(Ok(()), |path| crate::inproc::write_output(&c, path));
    if let Err(e) = &written {
        c.error.get_or_insert_with(|| e.clone());
    }
    emitter.finish(&c);
    if emitter_was_unlinked {
        // Nobody hears the frames: the ranks' losses go to stderr.
        for l in c.lost() {
            eprintln!("beamtime-job: {l}");
        }
    }
    out.drain(Duration::from_secs(1));
    Ok(c)
}

/// Waits for the collector's first commands (the queries to start with). A collector that is
/// gone ends this process from the beat thread ([`Beats::start`]).
fn initial_commands(world: &SimpleCommunicator) -> Vec<Command> {
    loop {
        if let Some((_, msg)) = recv_from(world, Some(COLLECTOR), tag::COMMAND) {
            return serde_json::from_slice(&msg).unwrap_or_default();
        }
        idle();
    }
}

fn commands(world: &SimpleCommunicator) -> Vec<Command> {
    let mut all = Vec::new();
    while let Some((_, msg)) = recv_from(world, Some(COLLECTOR), tag::COMMAND) {
        all.extend(serde_json::from_slice::<Vec<Command>>(&msg).unwrap_or_default());
    }
    all
}

fn reader(world: &SimpleCommunicator, spec: &JobSpec, workers: &[i32]) -> Result<(), String> {
    let mut out = PendingSends::new();
    let _beats = Beats::start(vec![COLLECTOR], tag::BEAT, Default::default(), Some(world.rank()));
    let mut stopped = initial_commands(world).contains(&Command::Stop);
    let source = spec.source()?;
    let host = crate::worker::hostname();
    let index = |r: i32| workers.iter().position(|&w| w == r);
    let mut reading = match Reader::start(&source, workers.len(), spec.reader_options()) {
        Ok(d) => Some(d),
        Err(e) => {
            let status = ReaderStatus { done: true, error: Some(e.to_string()), host: host.clone(), ..Default::default() };
            out.send(world, COLLECTOR, tag::READER, wire::encode(&status, &[]));
            None
        }
    };
    let mut waiting: VecDeque<i32> = VecDeque::new();
    let mut ended: BTreeSet<i32> = BTreeSet::new();
    let mut dead: BTreeSet<i32> = BTreeSet::new();
    let mut last_status = Instant::now();
    loop {
        if commands(world).contains(&Command::Stop) {
            stopped = true;
        }
        while let Some((_, msg)) = recv_from(world, Some(COLLECTOR), TAG_DEAD) {
            dead = serde_json::from_slice(&msg).unwrap_or_default();
            if let Some(d) = reading.as_mut() {
                for &r in &dead {
                    if let Some(i) = index(r) {
                        d.forget(i);
                    }
                }
            }
        }
        while let Some((from, _)) = recv_from(world, None, tag::REQUEST) {
            waiting.push_back(from);
        }
        let end: Option<End> = match reading.as_mut() {
            None => Some(End { reason: "the source could not be opened".into(), error: None }),
            Some(d) => {
                if stopped {
                    d.stop();
                }
                d.poll(if waiting.is_empty() { Duration::ZERO } else { Duration::from_millis(2) });
                while !stopped && d.has_work() {
                    let Some(w) = waiting.pop_front() else { break };
                    let Some(i) = index(w).filter(|_| !dead.contains(&w)) else { continue };
                    if let Some(msg) = d.next_work(i) {
                        out.send(world, w, tag::WORK, msg);
                    }
                }
                if stopped {
                    Some(End { reason: "stopped".into(), error: None })
                } else {
                    d.finished().map(|e| End { reason: "end of data".into(), error: e.clone() })
                }
            }
        };
        if let Some(end) = &end {
            for w in waiting.drain(..) {
                out.send(world, w, tag::END, wire::encode(end, &[]));
                ended.insert(w);
            }
        }
        // After a stop the workers leave without asking again (they need no END).
        let all_ended = (stopped && end.is_some()) || workers.iter().all(|w| ended.contains(w) || dead.contains(w));
        if last_status.elapsed() > Duration::from_millis(100) || all_ended {
            last_status = Instant::now();
            if let Some(d) = &reading {
                let status = ReaderStatus {
                    events_built: d.counters.events_built.load(std::sync::atomic::Ordering::Relaxed),
                    events_sent: d.events_sent,
                    sent_to: workers.iter().zip(&d.sent_to).map(|(&r, &n)| (r, n)).collect(),
                    newest: d.counters.newest.load(std::sync::atomic::Ordering::Relaxed),
                    done: all_ended && end.is_some(),
                    error: end.as_ref().and_then(|e| e.error.clone()),
                    host: host.clone(),
                };
                out.send(world, COLLECTOR, tag::READER, wire::encode(&status, &[]));
            }
        }
        out.progress();
        if all_ended && end.is_some() {
            break;
        }
        idle();
    }
    out.drain(Duration::from_secs(1));
    Ok(())
}

/// Where a worker rank's events come from.
enum WorkSource {
    /// Batches from the reader rank, asked for one at a time.
    Reader { requested: bool },
    /// Its own reader (a job with one worker: no reader rank).
    Own(Reader),
    /// Its own client of the shared-memory monitor.
    Shmem(ShmemSource),
}

impl WorkSource {
    fn stop(&self) {
        if let WorkSource::Own(d) = self {
            d.stop();
        }
    }

    /// Processes what is ready: whether there was work, and Some(its error, if any) once the
    /// data is over for this rank.
    fn step(&mut self, world: &SimpleCommunicator, out: &mut PendingSends, w: &mut Worker, spec: &JobSpec, stopped: bool) -> (bool, Option<Option<String>>) {
        match self {
            WorkSource::Own(d) => {
                d.poll(Duration::from_millis(2));
                let mut busy = false;
                if let Some(msg) = d.next_work(0) {
                    busy = true;
                    if let Err(e) = w.process(&msg) {
                        return (true, Some(Some(e)));
                    }
                }
                let over = stopped || d.finished().is_some();
                (busy, over.then(|| d.finished().cloned().flatten()))
            }
            WorkSource::Reader { requested } => {
                if stopped {
                    // Told to stop (by the user, or alone: the reader gave its place away, or
                    // is lost): no END may ever come. A batch already here is still done, so
                    // that its events count.
                    if let Some((_, msg)) = recv_from(world, Some(READER), tag::WORK) {
                        if let Err(e) = w.process(&msg) {
                            return (true, Some(Some(e)));
                        }
                    }
                    return (false, Some(None));
                }
                if !*requested {
                    out.send(world, READER, tag::REQUEST, Vec::new());
                    *requested = true;
                }
                if let Some((_, msg)) = recv_from(world, Some(READER), tag::WORK) {
                    *requested = false;
                    return (true, w.process(&msg).err().map(Some));
                }
                if let Some((_, msg)) = recv_from(world, Some(READER), tag::END) {
                    return (false, Some(wire::decode::<End>("end", &msg).ok().and_then(|(end, _)| end.error)));
                }
                (false, None)
            }
            WorkSource::Shmem(client) => {
                if stopped {
                    return (false, Some(None));
                }
                // The client waits for events itself (up to the flush interval): never idle.
                if let Err(e) = client.pump(w, spec.batch_events.max(1), Duration::from_millis(spec.flush_ms.max(5))) {
                    return (true, Some(Some(e)));
                }
                (true, client.done().then_some(None))
            }
        }
    }
}

/// A worker rank: takes the queries, processes its source's events, reports its cumulative
/// states to the collector every `report_ms` and when its data is over. In a merge tree
/// ([`MergeTree`]) its states go to its parent instead, and a combiner also merges its
/// children's states with its own until all of theirs are in.
fn worker(world: &SimpleCommunicator, spec: &JobSpec, workers: &[i32], open: impl FnOnce() -> Result<WorkSource, String>) -> Result<(), String> {
    let mut out = PendingSends::new();
    let me = world.rank();
    let _beats = Beats::start(vec![COLLECTOR], tag::BEAT, Default::default(), Some(me));
    let mut w = Worker::with_calib(spec.calib_dir.as_ref().map(std::path::PathBuf::from), spec.calib_settings()?);
    // Saved rows: one part file per worker, numbered by its place among the workers.
    w.save_part = workers.iter().position(|&r| r == me);
    let tree = MergeTree::new(workers, spec.merge_fan_in, COLLECTOR);
    let mut parent = tree.parent(me);
    let mut combiner = Some(tree.children(me)).filter(|c| !c.is_empty()).map(|c| Combiner::new(me, c));
    if tree.routed() {
        w.states_to = Some(parent);
    }
    let mut stopped = false;
    for cmd in initial_commands(world) {
        stopped |= cmd == Command::Stop;
        w.command(&cmd);
        if let Some(c) = combiner.as_mut() {
            c.command(&cmd);
        }
    }
    // Say who we are at once: the collector can then tell a dead worker from a slow one.
    out.send(world, COLLECTOR, tag::UPDATE, w.report(false));
    let mut ended = stopped;
    let mut end_error = None;
    // A source it cannot open (a worker that reads for itself) is its final report's error.
    let mut source = None;
    if !stopped {
        match open() {
            Ok(s) => source = Some(s),
            Err(e) => {
                ended = true;
                end_error = Some(e);
            }
        }
    }
    let report_every = Duration::from_millis(spec.report_ms);
    let mut last_report = Instant::now();
    let mut final_sent = false;
    loop {
        for cmd in commands(world) {
            if cmd == Command::Stop {
                stopped = true;
                if let Some(s) = &source {
                    s.stop();
                }
            }
            w.command(&cmd);
            if let Some(c) = combiner.as_mut() {
                c.command(&cmd);
            }
        }
        while let Some((_, msg)) = recv_from(world, Some(COLLECTOR), TAG_DEAD) {
            let dead: BTreeSet<i32> = serde_json::from_slice(&msg).unwrap_or_default();
            if dead.contains(&me) {
                // Taken for lost and back: the group went elsewhere, nothing more to combine.
                combiner = None;
            }
            if let Some(c) = combiner.as_mut() {
                c.set_dead(&dead);
            }
            if tree.routed() && dead.contains(&parent) {
                // Our combiner is lost with what it held: everything goes to the collector again.
                parent = COLLECTOR;
                w.states_to = Some(parent);
                w.resend_all();
                if let Some(c) = combiner.as_mut() {
                    c.resend_all();
                }
            }
        }
        let mut busy = false;
        if let Some(c) = combiner.as_mut() {
            while let Some((from, msg)) = recv_from(world, None, tag::STATES) {
                busy = true;
                if let Err(e) = c.absorb(from, &msg) {
                    eprintln!("beamtime-job rank {me}: {e}");
                }
            }
        }
        if let (Some(s), false) = (source.as_mut(), ended) {
            let (had_work, end) = s.step(world, &mut out, &mut w, spec, stopped);
            busy |= had_work;
            if let Some(e) = end {
                ended = true;
                end_error = end_error.or(e);
            }
        }
        if !final_sent && (ended || last_report.elapsed() >= report_every) {
            if w.error.is_none() {
                w.error = end_error.clone();
            }
            out.send(world, COLLECTOR, tag::UPDATE, w.report(ended));
            final_sent = ended;
            last_report = Instant::now();
            if let Some(states) = w.take_states(me, ended) {
                match combiner.as_mut() {
                    Some(c) => {
                        if let Err(e) = c.absorb(me, &states) {
                            eprintln!("beamtime-job rank {me}: {e}");
                        }
                    }
                    None => out.send(world, parent, tag::STATES, states),
                }
            }
        }
        let complete = match combiner.as_mut() {
            Some(c) => {
                let complete = c.complete();
                if complete || c.due(report_every) {
                    let (msg, errors) = c.report();
                    out.send(world, parent, tag::STATES, msg);
                    for (name, e) in errors {
                        eprintln!("beamtime-job rank {me}: query {name}: {e}");
                        w.fail_query(&name, e);
                        // Reported with the next update (or said here, after the last one).
                        if final_sent {
                            out.send(world, COLLECTOR, tag::UPDATE, w.report(true));
                        }
                    }
                }
                complete
            }
            None => final_sent,
        };
        out.progress();
        if complete {
            break;
        }
        if !busy {
            idle();
        }
    }
    out.drain(Duration::from_secs(5));
    Ok(())
}
