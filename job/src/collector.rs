//! The collector role (rank 0): keeps each worker's latest cumulative state per query,
//! merges them into results, and reports how complete and fresh they are.
//!
//! Workers send cumulative states, so a late, repeated or lost update never double-counts,
//! and a dead worker's last state still counts.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use polars::prelude::*;
use contract::{codec, Command, FrameHeader, RowDelta};
use query::{LiveMode, LiveQuery};

use crate::wire::{lcls_to_unix_secs, ReaderStatus, SavedPart, Update, UpdateKind};
use crate::worker::concat_frames;

pub use contract::spec::DEFAULT_MAX_ROWS;

struct Query {
    sql: String,
    mode: LiveMode,
    generation: u64,
    plan: Option<LiveQuery>,
    /// Latest cumulative state per worker rank (aggregates).
    states: BTreeMap<i32, DataFrame>,
    /// Rows so far (row queries), newest last.
    rows: Option<DataFrame>,
    events_read: BTreeMap<i32, u64>,
    error: Option<String>,
    /// From the workers, each said once (e.g. psana's calibration fallbacks).
    notices: Vec<String>,
    /// The result's array shapes, as the workers last said them.
    shapes: BTreeMap<String, Vec<usize>>,
    seq: u64,
    dirty: bool,
    result: Option<DataFrame>,
    /// Row queries: how the rows changed since the last frame, so that the next one carries
    /// only that (None: it carries them all).
    change: Option<RowChange>,
    /// Where the query's rows (or final result) are saved, and whether it is a row query.
    save: Option<(PathBuf, bool)>,
    /// Saved row queries: each worker's part file so far (the rows never come here).
    saved: BTreeMap<i32, SavedPart>,
}

/// The rows of a streaming row query since its last frame: that frame's `dropped` oldest rows
/// are gone and the newest `appended` rows are new.
#[derive(Clone, Copy, Debug, Default)]
struct RowChange {
    dropped: usize,
    appended: usize,
}

impl RowChange {
    /// After rows were pruned and cut to the newest `max_rows`: `shown` rows of the last frame
    /// were held before, the prune removed the oldest `removed` of them (None: not only the
    /// oldest), the cut removed `cut` rows from the front, and `now` rows are held.
    fn after(self, shown: usize, removed: Option<usize>, cut: usize, now: usize) -> Option<RowChange> {
        let still = shown.saturating_sub(removed?);
        let cut_shown = cut.min(still);
        Some(RowChange { dropped: self.dropped + removed? + cut_shown, appended: now.saturating_sub(still - cut_shown) })
    }
}

struct WorkerInfo {
    last_seen: Instant,
    host: String,
    /// When it was found lost (it may answer again).
    lost_at: Option<Instant>,
    events_read: u64,
    newest: u64,
    done: bool,
    dead: bool,
    error: Option<String>,
    shmem: Option<crate::wire::ShmemCounts>,
    /// Merge tree: the rank its states go to (None: they come in its updates).
    states_to: Option<i32>,
    /// Merge tree: the rank whose states held here cover this worker, the events they
    /// cover, and whether they are its last.
    holder: Option<i32>,
    counted: Option<u64>,
    final_held: bool,
}

impl WorkerInfo {
    /// A worker not heard from yet: its silence counts from the job's start.
    fn unheard(started: Instant) -> Self {
        WorkerInfo {
            last_seen: started,
            host: String::new(),
            lost_at: None,
            events_read: 0,
            newest: 0,
            done: false,
            dead: false,
            error: None,
            shmem: None,
            states_to: None,
            holder: None,
            counted: None,
            final_held: false,
        }
    }

    /// Its data is over and its last states are here.
    fn finished(&self) -> bool {
        self.done && (self.states_to.is_none() || self.final_held)
    }

    /// Events whose states are held here (what a loss of it loses is the rest).
    fn counted(&self) -> u64 {
        self.counted.unwrap_or(self.events_read)
    }
}

/// One result frame: header and the result as an Arrow IPC stream (apache-arrow readable).
pub struct Frame {
    pub header: FrameHeader,
    pub ipc: Vec<u8>,
    pub result: DataFrame,
}

pub struct Collector {
    queries: BTreeMap<String, Query>,
    workers: BTreeMap<i32, WorkerInfo>,
    worker_ranks: Vec<i32>,
    next_generation: u64,
    reader: ReaderStatus,
    rate: VecDeque<(Instant, u64)>,
    /// A worker that has not reported for this long is shown as stalled (and after
    /// [`LOST_AFTER`], lost).
    pub stall_after: Duration,
    pub max_rows: usize,
    /// The job-level error (the data could not be read).
    pub error: Option<String>,
    started: Instant,
    /// (when, events read) at the first and the newest report that counted new events.
    first_read: Option<(Instant, u64)>,
    newest_read: Option<(Instant, u64)>,
    /// A rank silent for this long is lost (ranks beat every 300 ms).
    pub lost_after: Duration,
    /// The reader rank, when there is one: when it was last heard, and lost (its host is in
    /// its last status).
    reader_rank: Option<i32>,
    reader_seen: Instant,
    pub reader_lost: bool,
    /// What happened to lost ranks, in order: shown with every result.
    lost: Vec<String>,
    /// Lost workers that answered again: to be told to leave (their events count).
    returned: Vec<i32>,
    /// The job was told to stop before its data ended.
    pub stopped: bool,
    /// The job-level error came from reading the source.
    source_error: bool,
    last_liveness_check: Instant,
    /// Merge tree: the workers that combine others' states.
    combiners: std::collections::BTreeSet<i32>,
    /// Combiners found lost: their states were dropped (their members send theirs again),
    /// anything later from them is ignored.
    dropped: std::collections::BTreeSet<i32>,
    /// Saved rows are written in one part per worker, joined at the end (an MPI job); false:
    /// the one worker of an in-process job writes the file itself.
    pub save_in_parts: bool,
    /// The saved files were finished (joined, summaries written).
    saves_finished: bool,
    /// Saved row queries removed while the job ran: their parts are joined at its end.
    removed_saves: Vec<PathBuf>,
}

/// How long a rank may be silent before it is lost: ranks send every 0.1–0.5 s, so this is
/// several missed beats, and leaves a loss reported within 3 s.
pub const LOST_AFTER: Duration = Duration::from_millis(2500);

impl Collector {
    pub fn new(worker_ranks: Vec<i32>) -> Self {
        Collector {
            queries: BTreeMap::new(),
            workers: BTreeMap::new(),
            worker_ranks,
            next_generation: 1,
            reader: ReaderStatus::default(),
            rate: VecDeque::new(),
            stall_after: Duration::from_secs(1),
            max_rows: DEFAULT_MAX_ROWS,
            error: None,
            started: Instant::now(),
            first_read: None,
            newest_read: None,
            lost_after: LOST_AFTER,
            reader_rank: None,
            reader_seen: Instant::now(),
            reader_lost: false,
            lost: Vec::new(),
            returned: Vec::new(),
            stopped: false,
            source_error: false,
            last_liveness_check: Instant::now(),
            combiners: Default::default(),
            dropped: Default::default(),
            save_in_parts: false,
            saves_finished: false,
            removed_saves: Vec::new(),
        }
    }

    /// The job merges in a tree: the combiners must beat until their groups' last states are
    /// in, while a worker whose data is over only waits for its combiner.
    pub fn set_merge_tree(&mut self, tree: &crate::tree::MergeTree) {
        self.combiners = self.worker_ranks.iter().copied().filter(|&r| !tree.children(r).is_empty()).collect();
    }

    /// The job has a reader rank (its silence is watched like the workers').
    pub fn set_reader(&mut self, rank: i32) {
        self.reader_rank = Some(rank);
        self.reader_seen = Instant::now();
    }

    /// The job-level error, from reading the source (its outcome is a source error).
    pub fn source_failed(&mut self, error: String) {
        self.source_error |= self.error.is_none();
        self.error.get_or_insert(error);
    }

    /// Marks the ranks silent for longer than [`Collector::lost_after`] as lost; returns the
    /// workers lost now (the reader's loss is [`Collector::reader_lost`]).
    pub fn check_liveness(&mut self) -> Vec<i32> {
        let now = Instant::now();
        let limit = self.lost_after;
        // The collector itself did not listen for a while (stopped, or a long merge): the
        // silence was its own, every rank gets a fresh window.
        let deaf = now.duration_since(self.last_liveness_check) > Duration::from_secs(1);
        self.last_liveness_check = now;
        if deaf {
            self.reader_seen = now;
        }
        let dead_before: std::collections::BTreeSet<i32> = self.dead_workers().into_iter().collect();
        let mut newly = Vec::new();
        for &r in &self.worker_ranks {
            let w = self.workers.entry(r).or_insert_with(|| WorkerInfo::unheard(self.started));
            if deaf {
                w.last_seen = w.last_seen.max(now);
            }
            if w.dead || w.finished() || now.duration_since(w.last_seen) <= limit {
                continue;
            }
            // Done, its last states on their way up through a combiner still alive: it may
            // have left. (A combiner beats until its group's last states are in.)
            let waits = w.done && !self.combiners.contains(&r) && w.states_to.is_some_and(|to| to == 0 || !dead_before.contains(&to));
            if waits {
                continue;
            }
            w.dead = true;
            w.lost_at = Some(now);
            let silent = now.duration_since(w.last_seen).as_secs_f64();
            let why = if w.host.is_empty() { format!("worker rank {r} lost: never heard from it in {silent:.1} s") } else { format!("worker rank {r} on {} lost: no message for {silent:.1} s", w.host) };
            self.lost.push(format!("{why} (killed, crashed, or stopped); the others go on"));
            newly.push(r);
        }
        for &r in &newly {
            self.drop_combined(r);
        }
        if let (Some(r), false) = (self.reader_rank, self.reader_lost) {
            let silent = now.duration_since(self.reader_seen);
            if silent > limit && !self.reader.done {
                self.reader_lost = true;
                let host = if self.reader.host.is_empty() { String::new() } else { format!(" on {}", self.reader.host) };
                self.lost.push(format!("reader rank {r}{host} lost: no message for {:.1} s (killed, crashed, or stopped); no more events can come: the job ends", silent.as_secs_f64()));
            }
        }
        if !newly.is_empty() || self.reader_lost {
            for q in self.queries.values_mut() {
                q.dirty = true;
            }
        }
        newly
    }

    /// A lost combiner: the states it combined are dropped, because its members that still
    /// run send theirs again (cumulative: nothing counts twice) and the others are lost with it.
    fn drop_combined(&mut self, r: i32) {
        let members: Vec<i32> = self.workers.iter().filter(|(m, w)| **m != r && w.holder == Some(r)).map(|(&m, _)| m).collect();
        if members.is_empty() && !self.combiners.contains(&r) {
            return; // its own states only: they still count, as a flat worker's do
        }
        self.dropped.insert(r);
        for q in self.queries.values_mut() {
            q.states.remove(&r);
        }
        for w in self.workers.values_mut().filter(|w| w.holder == Some(r)) {
            (w.holder, w.counted, w.final_held) = (None, Some(0), false);
        }
        self.lost.push(format!("worker rank {r} combined the states of ranks {members:?}: dropped with it; those still running send theirs again"));
    }

    /// After a stop: the workers that have not finished within `waited` (busy in one batch
    /// that does not end) are given up; their last states count, the rest of their events
    /// are lost.
    pub fn give_up_unfinished(&mut self, waited: Duration) {
        let started = self.started;
        for &r in &self.worker_ranks {
            let w = self.workers.entry(r).or_insert_with(|| WorkerInfo::unheard(started));
            if w.dead || w.finished() {
                continue;
            }
            w.dead = true;
            let host = if w.host.is_empty() { String::new() } else { format!(" on {}", w.host) };
            self.lost.push(format!("worker rank {r}{host} did not stop within {:.0} s of the stop (one batch that does not end: an event function that never returns?): given up, its last results count", waited.as_secs_f64()));
        }
        for q in self.queries.values_mut() {
            q.dirty = true;
        }
    }

    /// Merge tree: a [`States`](crate::wire::States) message from a worker or combiner.
    pub fn states(&mut self, from: i32, msg: &[u8]) -> Result<(), String> {
        if self.dropped.contains(&from) {
            return Ok(()); // a combiner given up for lost: its members have sent theirs again
        }
        let (s, mut body): (crate::wire::States, &[u8]) = crate::wire::decode("states", msg).map_err(|e| e.to_string())?;
        let started = self.started;
        for m in &s.members {
            let w = self.workers.entry(m.rank).or_insert_with(|| WorkerInfo::unheard(started));
            (w.holder, w.counted, w.final_held) = (Some(from), Some(m.events_read), m.last);
        }
        for p in &s.parts {
            let bytes = body.get(..p.bytes).ok_or("states body shorter than its parts")?;
            body = &body[p.bytes..];
            let Some(q) = self.queries.get_mut(&p.name) else { continue };
            if p.generation != q.generation || bytes.is_empty() {
                continue; // from before a reset or replace
            }
            if q.plan.is_none() {
                match LiveQuery::plan_mode(&q.sql, &p.columns, q.mode) {
                    Ok(plan) => q.plan = Some(plan),
                    Err(e) => q.error = Some(e.to_string()),
                }
            }
            q.states.insert(from, codec::decode(bytes).map_err(|e| e.to_string())?);
            q.dirty = true;
        }
        Ok(())
    }

    /// Every worker is lost (or came back and was told to leave): no event can be analysed
    /// any more.
    pub fn all_workers_lost(&self) -> bool {
        // One that answered again was told to leave: gone for reading too.
        !self.worker_ranks.is_empty() && self.worker_ranks.iter().all(|r| self.workers.get(r).is_some_and(|w| w.dead))
    }

    /// Lost workers that answered again since the last call.
    pub fn take_returned(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.returned)
    }

    /// What happened to lost ranks.
    pub fn lost(&self) -> &[String] {
        &self.lost
    }

    /// Events handed to workers that were lost and never reported them.
    pub fn events_lost(&self) -> u64 {
        let sent: BTreeMap<i32, u64> = self.reader.sent_to.iter().copied().collect();
        self.workers.iter().filter(|(_, w)| w.dead).map(|(r, w)| sent.get(r).copied().unwrap_or(0).saturating_sub(w.counted())).sum()
    }

    /// How the job ended (or would end now).
    pub fn outcome(&self) -> contract::Outcome {
        use contract::Outcome;
        if self.error.is_some() {
            return if self.source_error { Outcome::SourceError } else { Outcome::Error };
        }
        if self.queries.values().any(|q| q.error.is_some()) {
            return Outcome::Error;
        }
        if self.reader_lost || self.events_lost() > 0 {
            return Outcome::RankLost;
        }
        if self.stopped { Outcome::Stopped } else { Outcome::Complete }
    }

    /// Checks a command and stamps it with a generation; the result goes to every worker.
    pub fn command(&mut self, cmd: Command) -> Result<Command, String> {
        match cmd {
            Command::Set { name, sql, mode, save, .. } => {
                query::validate_name(&name).map_err(|e| e.to_string())?;
                // Everything but the columns' existence is checked here, before any data.
                let live_mode = LiveQuery::check(&sql, &mode).map_err(|e| e.to_string())?;
                let save = match &save {
                    Some(path) => Some(self.check_save(&name, &sql, Path::new(path))?),
                    None => None,
                };
                let generation = self.generation();
                self.queries.insert(
                    name.clone(),
                    Query {
                        sql: sql.clone(),
                        mode: live_mode,
                        generation,
                        plan: None,
                        states: BTreeMap::new(),
                        rows: None,
                        events_read: BTreeMap::new(),
                        error: None,
                        notices: Vec::new(),
                        shapes: BTreeMap::new(),
                        seq: 0,
                        dirty: true,
                        result: None,
                        change: None,
                        saved: BTreeMap::new(),
                        save: save.clone(),
                    },
                );
                let save = save.map(|(p, _)| p.to_string_lossy().into_owned());
                Ok(Command::Set { name, sql, mode: live_mode.to_string(), generation, save })
            }
            Command::Remove { name } => {
                let q = self.queries.remove(&name).ok_or_else(|| format!("no live query named {name}"))?;
                if let Some((path, true)) = q.save {
                    // Its workers close their parts now; they are joined when the job ends.
                    self.removed_saves.push(path);
                }
                Ok(Command::Remove { name })
            }
            Command::Reset { name, .. } => {
                if let Some(n) = &name {
                    if !self.queries.contains_key(n) {
                        return Err(format!("no live query named {n}"));
                    }
                }
                let generation = self.generation();
                for (n, q) in self.queries.iter_mut() {
                    if name.as_ref().is_none_or(|x| x == n) {
                        q.generation = generation;
                        q.states.clear();
                        q.rows = None;
                        q.change = None;
                        q.events_read.clear();
                        q.saved.clear();
                        q.dirty = true;
                    }
                }
                Ok(Command::Reset { name, generation })
            }
            Command::Stop => {
                self.stopped = true;
                Ok(Command::Stop)
            }
            Command::Library { hash, library } => {
                // Loaded here first: the queries calling it are checked here.
                crate::libraries::load(&hash, &library)?;
                Ok(Command::Library { hash, library })
            }
            Command::Resend { name } => {
                let q = self.queries.get_mut(&name).ok_or_else(|| format!("no live query named {name}"))?;
                q.change = None;
                q.dirty = true;
                Ok(Command::Resend { name })
            }
        }
    }

    /// A query's `save` path: `.h5` or `.parquet`, absolute, in a folder that exists. A row
    /// query's files are cleared of what an earlier job left (psana does the same), and no
    /// other row query may write there; an aggregate's result goes beside one query's rows in
    /// HDF5 (psana's summaries), or into a Parquet file of its own.
    fn check_save(&self, name: &str, sql: &str, path: &Path) -> Result<(PathBuf, bool), String> {
        let format = smalldata::Format::of(path).map_err(|e| format!("--save {e}"))?;
        if !path.is_absolute() {
            return Err(format!("--save {}: the job needs an absolute path (its ranks may start elsewhere)", path.display()));
        }
        let rows = LiveQuery::is_row_query(sql).map_err(|e| e.to_string())?;
        for (other, q) in self.queries.iter().filter(|(n, _)| n.as_str() != name) {
            let Some((p, other_rows)) = &q.save else { continue };
            if p != path {
                continue;
            }
            if rows && *other_rows {
                return Err(format!("--save {}: query {other} already saves its rows there", path.display()));
            }
            if format == smalldata::Format::Parquet {
                return Err(format!("--save {}: query {other} saves there; a Parquet file or folder holds one query's result", path.display()));
            }
        }
        let shared = self.queries.iter().any(|(n, q)| n != name && q.save.as_ref().is_some_and(|(p, _)| p == path));
        if !shared {
            smalldata::prepare(path, rows).map_err(|e| format!("--save {e}"))?;
        }
        Ok((path.to_path_buf(), rows))
    }

    /// At the end of the job: HDF5 part files are joined into the file named by `--save`, and
    /// the aggregates saved there are written as summaries. What happened is said in the
    /// queries' notices (errors in their errors).
    fn finish_saves(&mut self) {
        if std::mem::replace(&mut self.saves_finished, true) {
            return;
        }
        let writers = self.save_in_parts.then_some(self.worker_ranks.len());
        for path in std::mem::take(&mut self.removed_saves) {
            if self.queries.values().any(|q| q.save.as_ref().is_some_and(|(p, _)| *p == path)) {
                continue; // saved again under another query: joined with it
            }
            // No query is left to say it: the job's log does.
            match smalldata::finish_job(&path, writers) {
                Ok(Some(j)) => eprintln!("beamtime-job: {} joined ({} rows) after its query was removed", path.display(), j.rows),
                Ok(None) => {}
                Err(e) => eprintln!("beamtime-job: {}: {e}", path.display()),
            }
        }
        let paths: std::collections::BTreeSet<PathBuf> = self.queries.values().filter_map(|q| q.save.as_ref().map(|(p, _)| p.clone())).collect();
        for path in paths {
            let rows_query = self.queries.iter().find(|(_, q)| q.save.as_ref().is_some_and(|(p, r)| *p == path && *r)).map(|(n, _)| n.clone());
            if let Some(name) = &rows_query {
                let q = self.queries.get_mut(name).expect("found above");
                let rows: usize = q.saved.values().map(|s| s.rows as usize).sum();
                match smalldata::finish_job(&path, writers) {
                    Ok(Some(joined)) => {
                        q.notices.push(format!("saved {rows} rows in {} part files, joined in {} ({} datasets, {} rows)", writers.unwrap_or(1), path.display(), joined.datasets, joined.rows));
                        for s in joined.skipped {
                            q.notices.push(format!("part file skipped in the join: {s}"));
                        }
                    }
                    Ok(None) => q.notices.push(format!("saved {rows} rows in {}", path.display())),
                    Err(e) => {
                        q.error.get_or_insert(format!("saving to {}: {e}", path.display()));
                    }
                }
            }
            let aggregates: Vec<String> = self.queries.iter().filter(|(_, q)| q.save.as_ref().is_some_and(|(p, r)| *p == path && !*r)).map(|(n, _)| n.clone()).collect();
            for name in aggregates {
                let q = self.queries.get_mut(&name).expect("listed above");
                let result = match Self::compute(q) {
                    (Ok(Some(r)), _) => r,
                    (Ok(None), _) => continue,
                    (Err(e), _) => {
                        q.error.get_or_insert(e);
                        continue;
                    }
                };
                match smalldata::write_summaries(&path, &result) {
                    Ok(names) => q.notices.push(format!("saved as summaries in {}: {}", path.display(), names.join(", "))),
                    Err(e) => {
                        q.error.get_or_insert(format!("saving to {}: {e}", path.display()));
                    }
                }
            }
        }
    }

    /// A query's result from what the workers sent (None: nothing yet), and the events it
    /// includes.
    fn compute(q: &Query) -> (Result<Option<DataFrame>, String>, u64) {
        let (Some(plan), None) = (q.plan.as_ref(), q.error.as_ref()) else { return (Ok(None), 0) };
        if let Some((_, true)) = q.save {
            // Saved rows: the part files written so far, one row per worker.
            let saved: Vec<&SavedPart> = q.saved.values().collect();
            let total: u64 = saved.iter().map(|s| s.rows).sum();
            let df = polars::df!(
                "part" => saved.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
                "rows" => saved.iter().map(|s| s.rows).collect::<Vec<_>>(),
                "mb" => saved.iter().map(|s| s.bytes as f64 / 1e6).collect::<Vec<_>>(),
                "closed" => saved.iter().map(|s| s.closed).collect::<Vec<_>>(),
            );
            return (df.map(Some).map_err(|e| e.to_string()), total);
        }
        let merged = if plan.is_rows() {
            Ok(q.rows.clone())
        } else {
            let states: Vec<DataFrame> = q.states.values().cloned().collect();
            if states.is_empty() { Ok(None) } else { plan.merge(&states).map(Some) }
        };
        let mut included = 0;
        let result = merged.and_then(|m| match m {
            Some(m) => {
                included = plan.included(&m);
                plan.finalize(&m).map(Some)
            }
            None => Ok(None),
        });
        (result.map_err(|e| e.to_string()), included)
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation - 1
    }

    /// The commands that bring a new (or restarted) worker up to date.
    pub fn replay(&self) -> Vec<Command> {
        self.queries
            .iter()
            .map(|(n, q)| Command::Set {
                name: n.clone(),
                sql: q.sql.clone(),
                mode: q.mode.to_string(),
                generation: q.generation,
                save: q.save.as_ref().map(|(p, _)| p.to_string_lossy().into_owned()),
            })
            .collect()
    }

    pub fn query_names(&self) -> Vec<String> {
        self.queries.keys().cloned().collect()
    }

    /// The latest result of a query (after the last `frames`).
    pub fn result(&self, name: &str) -> Option<&DataFrame> {
        self.queries.get(name)?.result.as_ref()
    }

    pub fn reader_status(&mut self, status: ReaderStatus) {
        if let Some(e) = &status.error {
            self.source_failed(e.clone());
        }
        self.reader_seen = Instant::now();
        self.reader = status;
    }

    /// A rank's beat: it is alive (a lost worker is taken back only by its next update).
    pub fn heard(&mut self, rank: i32) {
        if self.reader_rank == Some(rank) {
            self.reader_seen = Instant::now();
        } else if let Some(w) = self.workers.get_mut(&rank).filter(|w| !w.dead) {
            w.last_seen = Instant::now();
        } else if self.worker_ranks.contains(&rank) && !self.workers.contains_key(&rank) {
            self.workers.insert(rank, WorkerInfo::unheard(Instant::now()));
        }
    }


    /// A worker's report.
    pub fn update(&mut self, rank: i32, msg: &[u8]) -> Result<(), String> {
        let (u, mut body): (Update, &[u8]) = crate::wire::decode("update", msg).map_err(|e| e.to_string())?;
        let started = self.started;
        let w = self.workers.entry(rank).or_insert_with(|| WorkerInfo::unheard(started));
        w.host.clone_from(&u.host);
        w.states_to = u.states_to;
        if let Some(at) = w.lost_at.take() {
            // Stopped, not dead: its states are cumulative, so what it did counts; the reader
            // has forgotten it, so it is told to leave.
            let counted = if self.dropped.contains(&rank) { "the states it combined were given up" } else { "its events are counted" };
            self.lost.push(format!("worker rank {rank} on {} answered again after {:.1} s: {counted}, it takes no more work", u.host, at.elapsed().as_secs_f64() + self.lost_after.as_secs_f64()));
            self.returned.push(rank);
        }
        w.last_seen = Instant::now();
        if u.shmem.is_some() {
            w.shmem = u.shmem.clone();
        }
        w.events_read = u.events_read;
        w.newest = w.newest.max(u.newest);
        w.done |= u.done;
        if let Some(e) = &u.error {
            // A worker fails only on its data (a query's error is the query's).
            w.error = Some(e.clone());
            self.source_failed(e.clone());
        }
        let total = self.events_read();
        if total > self.newest_read.map_or(0, |(_, n)| n) {
            let now = (Instant::now(), total);
            self.first_read.get_or_insert(now);
            self.newest_read = Some(now);
        }
        for qu in &u.queries {
            let bytes = body.get(..qu.bytes).ok_or("update body shorter than its parts")?;
            body = &body[qu.bytes..];
            let Some(q) = self.queries.get_mut(&qu.name) else { continue };
            if qu.generation != q.generation {
                continue; // from before a reset or replace
            }
            q.dirty = true;
            q.events_read.insert(rank, qu.events_read);
            if let Some(s) = &qu.saved {
                q.saved.insert(rank, s.clone());
            }
            if !qu.shapes.is_empty() {
                q.shapes.clone_from(&qu.shapes);
            }
            for n in &qu.notices {
                if !q.notices.contains(n) {
                    q.notices.push(n.clone());
                }
            }
            match qu.kind {
                UpdateKind::Error => {
                    q.error.get_or_insert_with(|| qu.error.clone().unwrap_or_default());
                }
                UpdateKind::State | UpdateKind::Rows => {
                    if let Some(cols) = &qu.columns {
                        if q.plan.is_none() {
                            match LiveQuery::plan_mode(&q.sql, cols, q.mode) {
                                Ok(p) => q.plan = Some(p),
                                Err(e) => q.error = Some(e.to_string()),
                            }
                        }
                    }
                    if bytes.is_empty() {
                        continue;
                    }
                    let df = codec::decode(bytes).map_err(|e| e.to_string())?;
                    if qu.kind == UpdateKind::State {
                        q.states.insert(rank, df);
                    } else {
                        let held = q.rows.as_ref().map_or(0, |r| r.height());
                        // Rows of the last frame still held (the rest are new since).
                        let shown = q.change.map_or(0, |c| held.saturating_sub(c.appended));
                        let mut all = concat_frames(q.rows.take().into_iter().chain([df]).collect());
                        if let Some(a) = all.as_mut() {
                            let mut removed = Some(0);
                            if let Some(p) = q.plan.as_ref() {
                                let (kept, r) = p.prune_rows(a, shown).map_err(|e| e.to_string())?;
                                (*a, removed) = (kept, r);
                            }
                            let cut = a.height().saturating_sub(self.max_rows);
                            if cut > 0 {
                                *a = a.slice(cut as i64, self.max_rows);
                            }
                            q.change = q.change.and_then(|c| c.after(shown, removed, cut, a.height()));
                        }
                        q.rows = all;
                    }
                }
            }
        }
        Ok(())
    }

    pub fn dead_workers(&self) -> Vec<i32> {
        self.workers.iter().filter(|(_, w)| w.dead).map(|(r, _)| *r).collect()
    }

    /// Every worker has finished (or died).
    pub fn workers_finished(&self) -> bool {
        self.worker_ranks.iter().all(|r| self.workers.get(r).is_some_and(|w| w.finished() || w.dead))
    }

    /// Events per second from the first to the newest report of new events: the job's mean
    /// rate (0 until two reports).
    pub fn mean_rate(&self) -> f64 {
        match (self.first_read, self.newest_read) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => (n1 - n0) as f64 / t1.duration_since(t0).as_secs_f64(),
            _ => 0.0,
        }
    }

    pub fn events_read(&self) -> u64 {
        self.workers.values().map(|w| w.events_read).sum()
    }

    /// The ranks' health and the reading's progress, as every frame shows them.
    fn health(&mut self) -> Health {
        let now = Instant::now();
        let total = self.events_read();
        self.rate.push_back((now, total));
        while self.rate.len() > 2 && now.duration_since(self.rate[0].0) > Duration::from_secs(3) {
            self.rate.pop_front();
        }
        let (t0, n0) = self.rate[0];
        let dt = now.duration_since(t0).as_secs_f64();
        let rate = if dt > 0.05 { (total - n0) as f64 / dt } else { 0.0 };
        let silent_since_start = now.duration_since(self.started) > self.stall_after;
        let stalled: Vec<i32> = self
            .worker_ranks
            .iter()
            .filter(|r| match self.workers.get(r) {
                Some(w) => !w.dead && !w.done && now.duration_since(w.last_seen) > self.stall_after,
                None => silent_since_start,
            })
            .copied()
            .collect();
        let dead = self.dead_workers();
        let alive = self.worker_ranks.len() - dead.len();
        let newest = self.workers.values().map(|w| w.newest).max().unwrap_or(0).max(self.reader.newest);
        let age = (newest > 0).then(|| {
            let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            (now_unix - lcls_to_unix_secs(newest)).max(0.0)
        });
        // Events handed to workers that were lost before reporting them.
        let dropped = self.events_lost();
        // Shared memory: events the server gave to no client (dropped or stolen).
        let clients: Vec<&crate::wire::ShmemCounts> = self.workers.values().filter_map(|w| w.shmem.as_ref()).collect();
        let dropped = dropped + shmem_missed(&clients);
        Health { alive, stalled, dead, rate, newest_age: age, dropped }
    }

    /// Frames for the queries that changed (all of them with `all`), with the results.
    pub fn frames(&mut self, all: bool, done: bool) -> Vec<Frame> {
        if done {
            self.finish_saves();
        }
        let Health { alive, stalled, dead, rate, newest_age: age, dropped } = self.health();
        let mean_rate = self.mean_rate();
        let job_error = self.error.clone();
        let ranks_total = self.worker_ranks.len();
        let mut out = Vec::new();
        for (name, q) in self.queries.iter_mut() {
            if !(q.dirty || all) {
                continue;
            }
            q.dirty = false;
            let prev_seq = q.seq;
            q.seq += 1;
            let mut error = q.error.clone().or_else(|| job_error.clone());
            let mut result = DataFrame::empty();
            let (computed, included) = Self::compute(q);
            match computed {
                Ok(Some(r)) => result = r,
                Ok(None) => {}
                Err(e) => error = Some(e),
            }
            // A streaming row query sends what changed since its last frame; the final frame
            // (and any after a reset, a resend request or an error) the whole result.
            let streams = q.plan.as_ref().is_some_and(|p| p.streams_rows()) && error.is_none() && result.width() > 0;
            let delta = match q.change {
                Some(c) if streams && !done => Some((RowDelta { prev_seq, drop: c.dropped }, c.appended)),
                _ => None,
            };
            let mut body = match delta {
                Some((_, appended)) => result.slice(result.height().saturating_sub(appended) as i64, appended),
                None => result.clone(),
            };
            let ipc = codec::encode_portable(&mut body).unwrap_or_default();
            q.change = streams.then(RowChange::default);
            let header = FrameHeader {
                query: name.clone(),
                seq: q.seq,
                generation: q.generation,
                mode: q.mode.to_string(),
                events_read: q.events_read.values().sum(),
                events_included: included,
                events_dropped: dropped,
                ranks_alive: alive,
                ranks_total,
                ranks_stalled: stalled.clone(),
                ranks_dead: dead.clone(),
                rate_hz: rate,
                mean_rate_hz: mean_rate,
                newest_age_s: age,
                rows: result.height(),
                delta: delta.map(|(d, _)| d),
                done,
                error,
                notices: q.notices.iter().chain(&self.lost).cloned().collect(),
                shapes: q.shapes.clone(),
                ..FrameHeader::default()
            };
            q.result = Some(result.clone());
            out.push(Frame { header, ipc, result });
        }
        out
    }
}

/// What [`Collector::health`] finds.
struct Health {
    /// Worker ranks not known dead.
    alive: usize,
    /// Worker ranks silent for longer than the stall limit.
    stalled: Vec<i32>,
    dead: Vec<i32>,
    /// Events read per second over the last few seconds.
    rate: f64,
    /// Seconds since the newest event read was taken.
    newest_age: Option<f64>,
    /// Events lost: handed to workers that died, or never delivered by shared memory.
    dropped: u64,
}

/// How many events the shared-memory server did not deliver to any of `clients` (dropped or
/// stolen): the triggers expected while the DAQ was enabled, at the spacing found in the union
/// of the clients' first event times, minus what arrived.
fn shmem_missed(clients: &[&crate::wire::ShmemCounts]) -> u64 {
    let mut early: Vec<u64> = clients.iter().flat_map(|c| c.first_ns.iter().copied()).collect();
    early.sort_unstable();
    early.dedup();
    let Some(gap) = early.windows(2).map(|w| w[1] - w[0]).filter(|&g| g > 0).min() else { return 0 };
    let enabled = clients.iter().map(|c| c.enabled_ns).max().unwrap_or(0);
    let expected = if enabled > 0 {
        // Triggers while enabled: also counts the events lost before the first or after the
        // last one that arrived.
        (enabled as f64 / gap as f64).round() as u64
    } else {
        let first = early[0];
        let last = clients.iter().map(|c| c.last_ns).max().unwrap_or(first);
        ((last.saturating_sub(first)) as f64 / gap as f64).round() as u64 + 1
    };
    let received: u64 = clients.iter().map(|c| c.received).sum();
    // Every client sees every SlowUpdate; each took a pulse of the span.
    let slow_updates = clients.iter().map(|c| c.slow_updates).max().unwrap_or(0);
    expected.saturating_sub(received + slow_updates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, QueryUpdate};

    /// A worker's update carrying the rows of events `ids` (x = id / 2).
    fn rows_update(plan: &LiveQuery, generation: u64, ids: &[u64], first: bool) -> Vec<u8> {
        let batch = df!("__event" => ids, "x" => ids.iter().map(|i| *i as f64 / 2.0).collect::<Vec<f64>>()).unwrap();
        let body = codec::encode(&mut plan.partial(&batch).unwrap()).unwrap();
        let columns = first.then(|| vec!["__event".to_string(), "x".to_string()]);
        let qu = QueryUpdate {
            name: "w".into(),
            generation,
            kind: UpdateKind::Rows,
            columns,
            events_read: 0,
            error: None,
            notices: Vec::new(),
            shapes: BTreeMap::new(),
            bytes: body.len(),
            saved: None,
        };
        encode(
            &Update {
                queries: vec![qu],
                ..Default::default()
            },
            &[&body],
        )
    }

    /// What a kernel holds after applying frames: the whole result or a delta on the last one.
    #[derive(Default)]
    struct Follower {
        rows: Option<DataFrame>,
        seq: u64,
        deltas: usize,
        dropped: usize,
    }

    impl Follower {
        fn apply(&mut self, f: &Frame) {
            let body = codec::decode(&f.ipc).unwrap();
            self.rows = Some(match f.header.delta {
                None => body,
                Some(d) => {
                    assert_eq!(d.prev_seq, self.seq, "a delta extends the frame before it");
                    self.deltas += 1;
                    self.dropped += d.drop;
                    let held = self.rows.take().unwrap();
                    assert!(body.height() < f.result.height() || held.height() <= d.drop);
                    held.slice(d.drop as i64, held.height() - d.drop).vstack(&body).unwrap()
                }
            });
            self.seq = f.header.seq;
            let rows = self.rows.as_ref().unwrap();
            assert_eq!(rows.height(), f.header.rows);
            assert!(rows.equals_missing(&f.result), "frame {}: held {rows} result {}", f.header.seq, f.result);
        }
    }

    fn set(c: &mut Collector, mode: &str) -> (LiveQuery, u64) {
        let sql = "SELECT x FROM events";
        let Ok(Command::Set { generation, .. }) = c.command(Command::Set { name: "w".into(), sql: sql.into(), mode: mode.into(), generation: 0, save: None }) else { panic!() };
        let cols = ["__event".to_string(), "x".to_string()];
        (LiveQuery::plan_mode(sql, &cols, LiveMode::parse(mode).unwrap()).unwrap(), generation)
    }

    #[test]
    fn a_window_of_rows_goes_out_as_deltas_that_rebuild_every_result() {
        let mut c = Collector::new(vec![1, 2]);
        let (plan, generation) = set(&mut c, "160");
        let mut k = Follower::default();
        for (i, start) in (0u64..1200).step_by(37).enumerate() {
            let ids: Vec<u64> = (start..(start + 37).min(1200)).collect();
            c.update(1 + (i % 2) as i32, &rows_update(&plan, generation, &ids, i < 2)).unwrap();
            if i % 3 == 2 {
                for f in c.frames(i % 9 == 8, false) {
                    k.apply(&f);
                }
            }
        }
        // A slow rank's late rows of an old (still kept) bin, then rows that push that bin out
        // while newer ones stay: not the oldest rows left, so the next frame is whole.
        c.update(2, &rows_update(&plan, generation, &[1045], false)).unwrap();
        for f in c.frames(false, false) {
            k.apply(&f);
        }
        c.update(1, &rows_update(&plan, generation, &(1200..1215).collect::<Vec<_>>(), false)).unwrap();
        let [f] = &c.frames(false, false)[..] else { panic!() };
        assert!(f.header.delta.is_none(), "not a prefix: whole result");
        k.apply(f);
        assert!(k.deltas >= 8 && k.dropped > 500, "deltas {} dropped {}", k.deltas, k.dropped);
        // The kernel lost track: it asks, the next frame is whole, then deltas again.
        c.command(Command::Resend { name: "w".into() }).unwrap();
        let [f] = &c.frames(false, false)[..] else { panic!() };
        assert!(f.header.delta.is_none());
        k.apply(f);
        c.update(1, &rows_update(&plan, generation, &[1215, 1216], false)).unwrap();
        let [f] = &c.frames(false, false)[..] else { panic!() };
        assert_eq!(f.header.delta.map(|d| d.drop), Some(0));
        assert_eq!(codec::decode(&f.ipc).unwrap().height(), 2);
        k.apply(f);
        // The final frame is whole.
        let [f] = &c.frames(true, true)[..] else { panic!() };
        assert!(f.header.delta.is_none() && f.header.done);
    }

    #[test]
    fn shared_memory_drops_are_the_pulses_nobody_got() {
        use crate::wire::ShmemCounts;
        // 100 pulses 1 ms apart while enabled; the two clients' first events show the spacing.
        let a = ShmemCounts { received: 45, first_ns: vec![1_000_000, 3_000_000], enabled_ns: 100_000_000, slow_updates: 1, ..Default::default() };
        let b = ShmemCounts { received: 45, first_ns: vec![2_000_000, 4_000_000], enabled_ns: 100_000_000, slow_updates: 1, ..Default::default() };
        // 100 pulses: 90 events received, one SlowUpdate (seen by both), 9 dropped.
        assert_eq!(shmem_missed(&[&a, &b]), 9);
        assert_eq!(shmem_missed(&[&ShmemCounts { slow_updates: 0, ..a.clone() }, &ShmemCounts { slow_updates: 0, ..b.clone() }]), 10);
    }

    #[test]
    fn rows_cut_to_max_rows_drop_from_the_front_of_the_delta() {
        let mut c = Collector::new(vec![1]);
        c.max_rows = 100;
        let (plan, generation) = set(&mut c, "total");
        let mut k = Follower::default();
        for (i, start) in (0u64..1000).step_by(30).enumerate() {
            let ids: Vec<u64> = (start..(start + 30).min(1000)).collect();
            c.update(1, &rows_update(&plan, generation, &ids, i == 0)).unwrap();
            if i % 2 == 1 || i > 30 {
                for f in c.frames(false, false) {
                    k.apply(&f);
                }
            }
        }
        // Whole batches bigger than max_rows between two frames: everything shown goes.
        c.update(1, &rows_update(&plan, generation, &(1000..1250).collect::<Vec<_>>(), false)).unwrap();
        let [f] = &c.frames(false, false)[..] else { panic!() };
        assert_eq!(f.header.delta.map(|d| d.drop), Some(100));
        k.apply(f);
        assert!(k.deltas > 10);
        assert_eq!(k.rows.unwrap().column("x").unwrap().f64().unwrap().get(0), Some(1150.0 / 2.0));
    }
}
