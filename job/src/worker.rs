//! The worker role: decodes its batches into the `events` table (fetching bigdata through
//! the small-data records) and runs every active query's partial step, keeping one
//! cumulative state per query that it reports to the collector from time to time.

use std::collections::BTreeMap;

use polars::prelude::*;
use query::{batches_to_df, LiveMode, LiveQuery};
use xtc::table::{EventsReader, TableOptions};
use xtc::RunReader;

use contract::{codec, Command};

use crate::calib_columns::{self, CalibColumns};
use crate::wire::{self, Member, QueryUpdate, SavedPart, StatePart, States, StreamSpec, Update, UpdateKind, Work};

struct WorkerQuery {
    sql: String,
    /// The column names the SQL references.
    names: Vec<String>,
    mode: LiveMode,
    generation: u64,
    plan: Option<LiveQuery>,
    /// The columns `plan` was made for; a schema change plans again.
    planned_for: Vec<String>,
    /// Merged state so far, and partial states not merged yet (merged when reported).
    state: Option<DataFrame>,
    pending: Vec<DataFrame>,
    /// Row queries: rows not reported yet.
    rows: Vec<DataFrame>,
    events_read: u64,
    error: Option<String>,
    error_sent: bool,
    /// The calib notices of the query's columns went to the collector.
    notices_sent: bool,
    /// The result shapes last sent to the collector, and the input shapes they were read for
    /// (the SQL is read again only when the batches' shapes change).
    shapes_sent: BTreeMap<String, Vec<usize>>,
    shapes_for: Option<std::sync::Arc<query::Shapes>>,
    /// When the state was last reported, and its size then: image-sized states are reported
    /// less often (a mean image per group is megabytes; the display needs a few per second).
    reported: Option<(std::time::Instant, usize)>,
    send_columns: bool,
    dirty: bool,
    /// `--save`: where the query's rows go (a row query's rows go there, not to the collector).
    save: Option<std::path::PathBuf>,
    writer: Option<smalldata::PartWriter>,
    /// A saved row query (read from the SQL once: a worker without events has no plan).
    saves_rows: bool,
    /// The part file as last reported.
    saved: Option<SavedPart>,
}

/// One worker's decoding state and query accumulators.
pub struct Worker {
    events: Option<EventsReader>,
    streams: Vec<StreamSpec>,
    queries: BTreeMap<String, WorkerQuery>,
    projection: Vec<String>,
    /// Detectors whose `<det>.raw.calib` / `<det>.raw.image` a query names.
    calib_detectors: Vec<calib_columns::Wanted>,
    calib: CalibColumns,
    /// `<det>.raw.calib` → why it cannot be computed, for the queries naming it.
    calib_errors: BTreeMap<String, String>,
    /// `<det>.raw.calib` → psana's fallbacks and the constants' origin, for the queries' status.
    calib_notices: BTreeMap<String, Vec<String>>,
    /// The shapes of the batch's array columns (the array functions need them).
    shapes: std::sync::Arc<query::Shapes>,
    /// The good bins of the image columns (`radial`).
    coverage: std::sync::Arc<query::Coverage>,
    pub events_read: u64,
    pub batches: u64,
    pub newest: u64,
    /// The data could not be read (file, offset and cause); the worker stops.
    pub error: Option<String>,
    /// Shared-memory mode: what reached this worker's client.
    pub shmem: Option<crate::wire::ShmemCounts>,
    /// Merge tree: where the states go (they leave the reports, [`Worker::take_states`]).
    pub states_to: Option<i32>,
    /// States taken out of reports, for the merge tree: DataFrames (cheap clones), encoded
    /// only when they leave this rank ([`Worker::take_states`]); a combiner takes its own as
    /// they are ([`Worker::take_state_frames`]).
    apart: Vec<(StatePart, DataFrame)>,
    /// Saved rows: this worker's part number (its place among the workers); None: the job's
    /// only worker in one process, which writes the file itself.
    pub save_part: Option<usize>,
}

impl Default for Worker {
    fn default() -> Self {
        Self::new()
    }
}

impl Worker {
    pub fn new() -> Self {
        Self::with_calib(None, Vec::new())
    }

    /// A worker calibrating area detectors with the constants of `calib_dir` (psana's layout)
    /// and the `--calib` settings.
    pub fn with_calib(calib_dir: Option<std::path::PathBuf>, settings: Vec<contract::CalibSetting>) -> Self {
        Worker {
            events: None,
            streams: Vec::new(),
            queries: BTreeMap::new(),
            projection: sticky_columns(),
            calib_detectors: Vec::new(),
            calib: CalibColumns::new(calib_dir, settings),
            calib_errors: BTreeMap::new(),
            calib_notices: BTreeMap::new(),
            shapes: Default::default(),
            coverage: Default::default(),
            events_read: 0,
            batches: 0,
            newest: 0,
            error: None,
            shmem: None,
            states_to: None,
            apart: Vec::new(),
            save_part: None,
        }
    }

    /// Applies a command from the collector.
    pub fn command(&mut self, cmd: &Command) {
        match cmd {
            Command::Set { name, sql, mode, generation, save } => {
                let mode = LiveMode::parse(mode).unwrap_or_default();
                let (names, error) = match LiveQuery::referenced_names(sql) {
                    Ok(names) => (names, None),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
                self.queries.insert(
                    name.clone(),
                    WorkerQuery {
                        sql: sql.clone(),
                        names,
                        mode,
                        generation: *generation,
                        plan: None,
                        planned_for: Vec::new(),
                        state: None,
                        pending: Vec::new(),
                        rows: Vec::new(),
                        events_read: 0,
                        error,
                        error_sent: false,
                        notices_sent: false,
                        shapes_sent: BTreeMap::new(),
                        shapes_for: None,
                        reported: None,
                        send_columns: false,
                        dirty: true,
                        save: save.as_ref().map(std::path::PathBuf::from),
                        saves_rows: save.is_some() && LiveQuery::is_row_query(sql).unwrap_or(false),
                        writer: None,
                        saved: None,
                    },
                );
                self.update_projection();
            }
            Command::Remove { name } => {
                self.queries.remove(name);
                self.update_projection();
            }
            Command::Reset { name, generation } => {
                for (n, q) in self.queries.iter_mut() {
                    if name.as_ref().is_none_or(|x| x == n) {
                        q.generation = *generation;
                        q.state = None;
                        q.pending.clear();
                        q.rows.clear();
                        q.events_read = 0;
                        q.dirty = true;
                        // Saved rows start afresh: the next ones truncate the part file.
                        q.writer = None;
                        q.saved = None;
                    }
                }
            }
            Command::Library { hash, library } => {
                if let Err(e) = crate::libraries::load(hash, library) {
                    // No query could call its functions here: the job reports it.
                    self.error.get_or_insert(e);
                }
            }
            Command::Stop | Command::Resend { .. } => {}
        }
    }

    /// Only the columns the queries name are decoded (scan and epics values always: they
    /// change on transitions and must be current when a query needing them arrives).
    fn update_projection(&mut self) {
        let mut cols = sticky_columns();
        let mut calib_detectors = Vec::new();
        for q in self.queries.values() {
            for n in &q.names {
                if !cols.contains(n) {
                    cols.push(n.clone());
                }
            }
            calib_columns::add_wanted(&mut calib_detectors, &q.names);
        }
        // A calib column is computed from the raw arrays of all the detector's segments.
        for w in &calib_detectors {
            for raw in calib_columns::raw_projection(&w.det) {
                if !cols.contains(&raw) {
                    cols.push(raw);
                }
            }
        }
        self.calib_detectors = calib_detectors;
        cols[2..].sort();
        if cols != self.projection {
            self.projection = cols;
            let columns = self.columns();
            if let Some(ev) = self.events.as_mut() {
                ev.set_columns(columns);
            }
        }
    }

    /// The projection for the reader: every column when a query selects `*`.
    fn columns(&self) -> Option<Vec<String>> {
        (!self.projection.iter().any(|c| c == "*")).then(|| self.projection.clone())
    }

    /// Decodes one Work message and runs the queries' partial steps over it.
    pub fn process(&mut self, msg: &[u8]) -> Result<(), String> {
        let (work, body): (Work, &[u8]) = wire::decode("work", msg).map_err(|e| e.to_string())?;
        if self.events.is_none() || self.streams != work.streams {
            let feeds: Vec<_> = work.streams.iter().map(StreamSpec::feed).collect();
            let opts = TableOptions {
                batch_size: 1 << 22,
                run_hint: work.run_hint,
                columns: self.columns(),
                ..TableOptions::default()
            };
            self.events = Some(EventsReader::from_reader(RunReader::open_feeds(&feeds), opts));
            self.streams = work.streams.clone();
        }
        let ev = self.events.as_mut().unwrap();
        let mut at = 0usize;
        for &(i, len) in &work.segments {
            let seg = body.get(at..at + len).ok_or_else(|| format!("work batch {}: segments run past the body", work.batch))?;
            if i >= work.streams.len() {
                return Err(format!("work batch {}: stream index {i} out of range", work.batch));
            }
            ev.feed(i, seg);
            at += len;
        }
        self.batches += 1;
        self.decode_fed(work.first_event)
    }

    /// Feeds one datagram of a single event-built stream (shared memory: every contributor
    /// of an event, and every transition, in one datagram). `decode_fed` decodes them.
    pub fn feed_dgram(&mut self, label: &std::path::Path, bytes: &[u8]) {
        if self.events.is_none() {
            let feed = xtc::FeedStream { stream: 0, label: label.to_path_buf(), smd: false, bigdata: Default::default(), follow: None };
            let opts = TableOptions { batch_size: 1 << 22, columns: self.columns(), ..TableOptions::default() };
            self.events = Some(EventsReader::from_reader(RunReader::open_feeds(&[feed]), opts));
        }
        self.events.as_mut().unwrap().feed(0, bytes);
    }

    /// Decodes everything fed so far into event rows (numbered from `first_event`, for
    /// windows counted in events) and runs the queries' partial steps over them.
    pub fn decode_fed(&mut self, first_event: u64) -> Result<(), String> {
        if self.events.is_none() {
            return Ok(());
        }
        let mut next_index = first_event;
        loop {
            let batch = match self.events.as_mut().unwrap().next_batch() {
                Ok(Some(b)) => b.batch,
                Ok(None) => break,
                Err(e) => {
                    self.error = Some(e.to_string());
                    return Err(e.to_string());
                }
            };
            if batch.num_rows() == 0 {
                continue;
            }
            let ts = batch.column(0).as_any().downcast_ref::<arrow_array::UInt64Array>().map(|a| a.value(a.len() - 1));
            self.newest = self.newest.max(ts.unwrap_or(0));
            let batch = self.add_calib_columns(batch);
            let shapes = query::shapes_of(&batch.schema());
            if *self.shapes != shapes {
                self.shapes = std::sync::Arc::new(shapes);
            }
            // Same Arcs while the detectors' runs and segments stay: no per-batch compare of bins.
            let same = self.coverage.len() == self.calib.coverage().len()
                && self
                    .coverage
                    .iter()
                    .zip(self.calib.coverage())
                    .all(|((a, x), (b, y))| {
                        a == b
                            && std::sync::Arc::ptr_eq(&x.good, &y.good)
                            && x.pixel_um == y.pixel_um
                    });
            if !same {
                self.coverage = std::sync::Arc::new(self.calib.coverage().clone());
            }
            let mut df = batches_to_df(&[batch]).map_err(|e| e.to_string())?;
            // Each event's index in the run, for windows counted in events.
            if self.queries.values().any(|q| matches!(q.mode, LiveMode::Events(_))) {
                let idx: Vec<u64> = (next_index..next_index + df.height() as u64).collect();
                df.with_column(Column::new(query::EVENT_INDEX.into(), idx)).map_err(|e| e.to_string())?;
            }
            next_index += df.height() as u64;
            self.events_read += df.height() as u64;
            self.run_queries(&df);
        }
        Ok(())
    }

    /// Appends the `<det>.raw.calib` columns the queries name, then drops the raw arrays no
    /// query names (decoded only for calib).
    fn add_calib_columns(&mut self, batch: arrow_array::RecordBatch) -> arrow_array::RecordBatch {
        if self.calib_detectors.is_empty() {
            return batch;
        }
        let Some(events) = self.events.as_ref() else { return batch };
        let configure = events.configure_count();
        let configs = |det: &str| events.detector_configs(det);
        let (batch, added) = self.calib.add(batch, &self.calib_detectors, &configs, configure);
        self.calib_errors.extend(added.errors);
        self.calib_notices.extend(added.notices);
        if self.columns().is_none() {
            // A query selects `*`: the raw arrays are its columns too.
            return batch;
        }
        let schema = batch.schema();
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| {
                let name = schema.field(i).name();
                let only_for_calib = self.calib_detectors.iter().any(|w| calib_columns::raw_segment(&w.det, name).is_some())
                    && !self.queries.values().any(|q| q.names.iter().any(|n| n == name));
                !only_for_calib
            })
            .collect();
        batch.project(&keep).expect("projected columns exist")
    }

    fn run_queries(&mut self, df: &DataFrame) {
        let columns: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
        let mut available: Option<Vec<String>> = None;
        for q in self.queries.values_mut() {
            if q.error.is_some() {
                continue;
            }
            // A calib column that cannot be computed: its reason is the query's error.
            if let Some(e) = q.names.iter().find_map(|n| self.calib_errors.get(n)) {
                q.error = Some(e.clone());
                q.dirty = true;
                continue;
            }
            if q.plan.is_none() || q.planned_for != columns {
                // A dotted name that is no column is a typo: say so with the close names.
                let names = LiveQuery::referenced_names(&q.sql).unwrap_or_default();
                if let Some(missing) = names.iter().find(|n| n.contains('.') && !columns.contains(n)) {
                    let all = available.get_or_insert_with(|| {
                        let mut a = columns.clone();
                        a.extend(self.events.as_ref().map(|e| e.available_columns()).unwrap_or_default());
                        let calib = calib_columns::calib_names(&a);
                        a.extend(calib);
                        a
                    });
                    if !all.contains(missing) {
                        let close = query::sql::suggest(missing, all);
                        let hint = if close.is_empty() { String::new() } else { format!("; did you mean {}?", close.join(", ")) };
                        q.error = Some(format!("unknown column `{missing}` in the events table{hint}"));
                        q.dirty = true;
                        continue;
                    }
                }
                let planned = LiveQuery::plan_mode(&q.sql, &columns, q.mode);
                // Saved rows carry the event's timestamp, run and step.
                let planned = if q.save.is_some() { planned.and_then(LiveQuery::saving) } else { planned };
                match planned {
                    Ok(p) => {
                        q.plan = Some(p);
                        q.planned_for = columns.clone();
                        q.send_columns = true;
                    }
                    Err(e) => {
                        q.error = Some(e.to_string());
                        q.dirty = true;
                        continue;
                    }
                }
            }
            let plan = q.plan.as_mut().unwrap();
            plan.set_shapes(self.shapes.clone());
            plan.set_coverage(self.coverage.clone());
            let plan = q.plan.as_ref().unwrap();
            match plan.partial(df) {
                Ok(part) => {
                    if let (Some(path), true) = (q.save.as_ref(), plan.is_rows()) {
                        if let Err(e) = save_rows(&mut q.writer, path, self.save_part, &part) {
                            q.error = Some(e);
                        }
                    } else if plan.is_rows() {
                        q.rows.push(part);
                    } else {
                        q.pending.push(part);
                        // Bound the memory of unreported partials: a few dozen small states, but
                        // an image-sized state (a mean image per group) is merged at once, so
                        // a worker holds one array per group, not one per batch.
                        let pending_bytes: usize = q.pending.iter().map(|d| d.estimated_size()).sum();
                        if q.pending.len() >= 64 || pending_bytes >= PENDING_BYTES {
                            if let Err(e) = fold(plan, &mut q.state, &mut q.pending) {
                                q.error = Some(e);
                            }
                        }
                    }
                    q.events_read += df.height() as u64;
                    q.dirty = true;
                }
                Err(e) => {
                    q.error = Some(e.to_string());
                    q.dirty = true;
                }
            }
        }
    }

    /// Something changed since the last report.
    pub fn dirty(&self) -> bool {
        self.queries.values().any(|q| q.dirty)
    }

    /// A report for the collector: counters and, per changed query, its cumulative state
    /// (or new rows). `done` marks the last one.
    pub fn report(&mut self, done: bool) -> Vec<u8> {
        let mut update = Update {
            events_read: self.events_read,
            batches: self.batches,
            newest: self.newest,
            pid: std::process::id(),
            host: hostname(),
            done,
            error: self.error.clone(),
            queries: Vec::new(),
            shmem: self.shmem.clone(),
            states_to: self.states_to,
        };
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        for q in self.queries.values_mut().filter(|q| q.save.is_some()) {
            if let Err(e) = q.note_saved(done, self.save_part) {
                q.error.get_or_insert(e);
                q.dirty = true;
            }
        }
        for (name, q) in self.queries.iter_mut() {
            if !q.dirty {
                continue;
            }
            if let (false, Some((at, bytes))) = (done, q.reported) {
                if at.elapsed() < big_state_interval(bytes) {
                    continue; // still dirty: it goes with a later report
                }
            }
            q.dirty = false;
            let mut qu = QueryUpdate {
                name: name.clone(),
                generation: q.generation,
                kind: UpdateKind::State,
                columns: None,
                events_read: q.events_read,
                error: None,
                bytes: 0,
                notices: Vec::new(),
                shapes: BTreeMap::new(),
                saved: q.saved.clone(),
            };
            if !q.notices_sent {
                qu.notices = q.names.iter().filter_map(|n| self.calib_notices.get(n)).flatten().cloned().collect();
                q.notices_sent = !qu.notices.is_empty();
            }
            if let Some(e) = &q.error {
                if q.error_sent {
                    continue;
                }
                q.error_sent = true;
                qu.kind = UpdateKind::Error;
                qu.error = Some(e.clone());
                update.queries.push(qu);
                continue;
            }
            let Some(plan) = q.plan.as_ref() else {
                // Nothing read for it yet: the counters still go.
                update.queries.push(qu);
                continue;
            };
            if q.send_columns {
                qu.columns = Some(q.planned_for.clone());
                q.send_columns = false;
            }
            if !q.shapes_for.as_ref().is_some_and(|s| std::sync::Arc::ptr_eq(s, &self.shapes)) {
                q.shapes_for = Some(self.shapes.clone());
                let shapes = query::layout::layout(&q.sql, &self.shapes).shapes;
                if shapes != q.shapes_sent {
                    qu.shapes.clone_from(&shapes);
                    q.shapes_sent = shapes;
                }
            }
            let bytes = if q.save.is_some() && plan.is_rows() {
                // Saved rows stay in their part file: only its progress goes.
                qu.kind = UpdateKind::Rows;
                Ok(Vec::new())
            } else if plan.is_rows() {
                qu.kind = UpdateKind::Rows;
                let rows = std::mem::take(&mut q.rows);
                match concat_frames(rows) {
                    Some(mut df) => codec::encode(&mut df).map_err(|e| e.to_string()),
                    None => Ok(Vec::new()),
                }
            } else {
                match fold(plan, &mut q.state, &mut q.pending) {
                    Ok(()) => match q.state.as_mut() {
                        Some(s) if self.states_to.is_some() => {
                            // Merge tree: the state goes its own way, the counters stay.
                            q.reported = Some((std::time::Instant::now(), s.estimated_size()));
                            let part = StatePart { name: name.clone(), generation: q.generation, columns: q.planned_for.clone(), bytes: 0 };
                            self.apart.push((part, s.clone()));
                            update.queries.push(qu);
                            continue;
                        }
                        Some(s) => {
                            q.reported = Some((std::time::Instant::now(), s.estimated_size()));
                            codec::encode(s).map_err(|e| e.to_string())
                        }
                        None => Ok(Vec::new()),
                    },
                    Err(e) => Err(e),
                }
            };
            match bytes {
                Ok(b) => {
                    qu.bytes = b.len();
                    bodies.push(b);
                }
                Err(e) => {
                    qu.kind = UpdateKind::Error;
                    qu.error = Some(e.clone());
                    q.error = Some(e);
                    q.error_sent = true;
                }
            }
            update.queries.push(qu);
        }
        let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
        wire::encode(&update, &refs)
    }
}

impl Worker {
    /// Merge tree: the states taken out of the reports since the last call, as a [`States`]
    /// message for this worker (`rank`); `last` marks its final one. None: nothing to send.
    pub fn take_states(&mut self, rank: i32, last: bool) -> Option<Vec<u8>> {
        let (member, frames) = self.take_state_frames(rank, last)?;
        let mut parts = Vec::with_capacity(frames.len());
        let mut bodies = Vec::with_capacity(frames.len());
        for (mut part, mut df) in frames {
            match codec::encode(&mut df) {
                Ok(b) => {
                    part.bytes = b.len();
                    parts.push(part);
                    bodies.push(b);
                }
                Err(e) => self.fail_query(&part.name, e.to_string()),
            }
        }
        let msg = States { members: vec![member], parts };
        let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
        Some(wire::encode(&msg, &refs))
    }

    /// [`Worker::take_states`] as they are, for a combiner's own worker on the same rank (no
    /// encoding and decoding of what never leaves it: a mean image's state is megabytes).
    pub fn take_state_frames(&mut self, rank: i32, last: bool) -> Option<(Member, Vec<(StatePart, DataFrame)>)> {
        if self.apart.is_empty() && !last {
            return None;
        }
        Some((Member { rank, events_read: self.events_read, last }, std::mem::take(&mut self.apart)))
    }

    /// Every query's state goes with the next report, however recent the last one (its
    /// recipient changed and has nothing).
    pub fn resend_all(&mut self) {
        for q in self.queries.values_mut() {
            q.dirty = true;
            q.reported = None;
        }
    }

    /// A query failed outside this worker's own steps (merging its group's states): it
    /// reports the error like one of its own.
    pub fn fail_query(&mut self, name: &str, error: String) {
        if let Some(q) = self.queries.get_mut(name).filter(|q| q.error.is_none()) {
            q.error = Some(error);
            q.dirty = true;
        }
    }
}

impl WorkerQuery {
    /// The saved part file's progress for the next report; at `done` the file is closed (an
    /// HDF5 part is written even without rows: psana leaves one for every writer).
    fn note_saved(&mut self, done: bool, part: Option<usize>) -> Result<(), String> {
        let Some(path) = self.save.as_ref() else { return Ok(()) };
        if !self.saves_rows || self.saved.as_ref().is_some_and(|s| s.closed) {
            return Ok(());
        }
        let err = |e: smalldata::SaveError| format!("saving to {}: {e}", path.display());
        if done && self.error.is_none() {
            let writer = match self.writer.take() {
                Some(w) => Some(w),
                None if matches!(smalldata::Format::of(path), Ok(smalldata::Format::Hdf5)) => Some(smalldata::PartWriter::create(path, part).map_err(err)?),
                None => None,
            };
            let written = match writer {
                Some(w) => w.finish().map_err(err)?,
                None => smalldata::Written { path: smalldata::part_path(path, part).map_err(err)?, rows: 0, bytes: 0 },
            };
            self.saved = Some(SavedPart { path: written.path.display().to_string(), rows: written.rows as u64, bytes: written.bytes, closed: true });
            self.dirty = true;
        } else if let Some(w) = &self.writer {
            let now = SavedPart {
                path: w.path().display().to_string(),
                rows: w.rows() as u64,
                bytes: std::fs::metadata(w.path()).map_or(0, |m| m.len()),
                closed: false,
            };
            if self.saved.as_ref() != Some(&now) {
                self.saved = Some(now);
                self.dirty = true;
            }
        }
        Ok(())
    }
}

/// Appends a batch of a saved row query to this worker's part file (created with its first
/// rows); the columns the mode adds for itself are left out.
fn save_rows(writer: &mut Option<smalldata::PartWriter>, path: &std::path::Path, part: Option<usize>, rows: &DataFrame) -> Result<(), String> {
    let err = |e: smalldata::SaveError| format!("saving to {}: {e}", path.display());
    let hidden: Vec<PlSmallStr> = rows.get_column_names().into_iter().filter(|c| c.starts_with("__")).cloned().collect();
    let rows = if hidden.is_empty() { std::borrow::Cow::Borrowed(rows) } else { std::borrow::Cow::Owned(rows.drop_many(hidden)) };
    if writer.is_none() {
        *writer = Some(smalldata::PartWriter::create(path, part).map_err(err)?);
    }
    writer.as_mut().expect("just made").append(&rows).map_err(err)
}

fn sticky_columns() -> Vec<String> {
    vec!["scan.*".into(), "epics.*".into()]
}

/// How long a state of `bytes` waits between reports: at most ~20 MB/s of states per query
/// and worker (a 0.5-megapixel mean image, 8 MB of fixed-point sums, goes every 0.4 s),
/// never longer than 2 s; small states go with every report.
pub(crate) fn big_state_interval(bytes: usize) -> std::time::Duration {
    std::time::Duration::from_secs_f64((bytes as f64 / 20.0e6).min(2.0))
}

/// Unmerged partial states a query keeps at most before merging them into its state.
const PENDING_BYTES: usize = 4 << 20;

/// Merges pending partials into the state.
fn fold(plan: &LiveQuery, state: &mut Option<DataFrame>, pending: &mut Vec<DataFrame>) -> Result<(), String> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut parts = std::mem::take(pending);
    if let Some(s) = state.take() {
        parts.push(s);
    }
    *state = Some(plan.merge(&parts).map_err(|e| e.to_string())?);
    Ok(())
}

pub(crate) fn concat_frames(frames: Vec<DataFrame>) -> Option<DataFrame> {
    let mut it = frames.into_iter().filter(|d| d.height() > 0 || d.width() > 0);
    let mut first = it.next()?;
    for d in it {
        if first.vstack_mut(&d).is_err() {
            // A new Configure changed the rows' schema: the rows start again under it.
            first = d;
        }
    }
    Some(first)
}

pub(crate) fn hostname() -> String {
    contract::spec::hostname()
}
