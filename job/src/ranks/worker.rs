//! A worker rank: its source of events (the reader rank, its own reader, or a shared-memory
//! client), its queries' states to the collector or up the merge tree, and, when it combines,
//! its group's states merged with its own.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mpi::topology::{Communicator, SimpleCommunicator};

use super::channel::{idle, recv_from, Beats, PendingSends};
use super::{commands, initial_commands, COLLECTOR, READER, TAG_DEAD};
use crate::combiner::Combiner;
use crate::inproc::JobSpec;
use crate::reader::Reader;
use crate::shmem_source::ShmemSource;
use crate::tree::MergeTree;
use crate::wire::{self, tag, End};
use crate::worker::Worker;
use contract::Command;

/// Where a worker rank's events come from.
pub(super) enum WorkSource {
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
pub(super) fn worker(world: &SimpleCommunicator, spec: &JobSpec, workers: &[i32], open: impl FnOnce() -> Result<WorkSource, String>) -> Result<(), String> {
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
            match combiner.as_mut() {
                // Its own states, as they are: they never leave this rank.
                Some(c) => {
                    if let Some((member, parts)) = w.take_state_frames(me, ended) {
                        c.hold(me, vec![member], parts);
                    }
                }
                None => {
                    if let Some(states) = w.take_states(me, ended) {
                        out.send(world, parent, tag::STATES, states);
                    }
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
