//! The job over MPI: rank 0 collects, rank 1 reads (with three or more ranks), the others
//! work; with two ranks, rank 1 reads and works.
//!
//! Point-to-point only: every receive follows a non-blocking matched probe (any source where
//! several may send), every send is non-blocking with its buffer kept until it completes, so
//! a slow, stopped or dead rank never holds up the others. No collective is called anywhere
//! (`tests/no_collectives.sh` fails the build on one).

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

use crate::collector::Collector;
use crate::tree::MergeTree;
use crate::reader::Reader;
use crate::inproc::{report_failure, Emitter, JobSpec, SpecExt};
use crate::shmem_source::ShmemSource;
use crate::wire::{self, tag, End, ReaderStatus};
use contract::{Command, Hello, Outcome};

mod channel;
mod worker;

use channel::{idle, recv_from, Beats, PendingSends};
use worker::{worker, WorkSource};

const COLLECTOR: i32 = 0;
const READER: i32 = 1;
/// collector → reader and workers: worker ranks found dead (JSON list).
const TAG_DEAD: i32 = 7;

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

