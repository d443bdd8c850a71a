//! Running the job: what every role layout shares (frame emission and commands over the
//! contract's link to the driver, result files), and the in-process driver (`--ranks 1`): reader, one worker and the
//! collector in one process, no MPI.

use std::time::{Duration, Instant};

use contract::{Ack, Command, Finished, Hello, Link, Outcome};
use xtc::Source;

use crate::collector::{Collector, Frame};
use crate::reader::{Reader, ReaderOptions};
use crate::wire::ReaderStatus;
use crate::worker::Worker;

pub use contract::JobSpec;

/// What the job makes of its description.
pub trait SpecExt {
    fn reader_options(&self) -> ReaderOptions;
    fn source(&self) -> Result<Source, String>;
}

impl SpecExt for JobSpec {
    fn reader_options(&self) -> ReaderOptions {
        ReaderOptions {
            batch_events: self.batch_events.max(1),
            flush: Duration::from_millis(self.flush_ms),
            poll: Duration::from_millis(self.poll_ms.max(1)),
        }
    }

    fn source(&self) -> Result<Source, String> {
        Source::parse(&self.source).map_err(|e| e.to_string())
    }
}

/// Sends frames to the kernel (if linked) and to a callback, at most `frame_rate` per second.
pub struct Emitter<'a> {
    pub link: Option<Link>,
    /// Commands that came while the job waited for its libraries: handed out next.
    early: Vec<Command>,
    period: Duration,
    last: Option<Instant>,
    /// Every query's frame goes out at least this often, so that rate, age and dead or
    /// stalled ranks show even when no result changes.
    last_full: Instant,
    /// The driver, watched when it runs on this host ([`contract::spec::Driver`]).
    driver: Option<contract::spec::Driver>,
    driver_checked: Instant,
    on_frame: &'a mut dyn FnMut(&Frame),
}

impl<'a> Emitter<'a> {
    pub fn new(spec: &JobSpec, on_frame: &'a mut dyn FnMut(&Frame)) -> Result<Self, String> {
        let link = match &spec.connect {
            Some(e) => Some(Link::connect(e).map_err(|e| e.to_string())?),
            None => None,
        };
        let period = Duration::from_secs_f64(1.0 / spec.frame_rate.clamp(0.01, 1000.0));
        Ok(Emitter { link, early: Vec::new(), period, last: None, last_full: Instant::now(), driver: spec.driver.clone(), driver_checked: Instant::now(), on_frame })
    }

    pub fn hello(&self, hello: &Hello) {
        if let Some(l) = &self.link {
            l.send(hello, None);
        }
    }

    /// Emits changed results when the period is over (or now with `force`).
    pub fn tick(&mut self, c: &mut Collector, force: bool, done: bool) {
        if !force && self.last.is_some_and(|t| t.elapsed() < self.period) {
            return;
        }
        self.last = Some(Instant::now());
        let all = force || self.last_full.elapsed() >= Duration::from_secs(1);
        if all {
            self.last_full = Instant::now();
        }
        for f in c.frames(all, done) {
            if let Some(l) = &self.link {
                l.send(&f.header, Some(f.ipc.clone()));
            }
            (self.on_frame)(&f);
        }
    }

    /// The event-function libraries the job needs (`spec.functions`), which the driver sends
    /// when it hears [`Hello`]: waits for them (at most [`LIBRARIES_PATIENCE`]), loads them in
    /// this process, and returns their commands for the other ranks.
    pub fn libraries(&mut self, c: &mut Collector, hashes: &[String]) -> Result<Vec<Command>, String> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let Some(l) = &self.link else { return Err("event functions come from the driver: this job has no link to one".into()) };
        let started = Instant::now();
        let mut got: Vec<Command> = Vec::new();
        let missing = |got: &[Command]| -> Vec<String> { hashes.iter().filter(|h| !got.iter().any(|c| matches!(c, Command::Library { hash, .. } if hash == *h))).cloned().collect() };
        while !missing(&got).is_empty() {
            for cmd in l.commands() {
                match cmd {
                    Ok(Command::Library { hash, library }) => {
                        let cmd = c.command(Command::Library { hash, library })?;
                        l.send(&Ack::accepted(cmd.clone()), None);
                        got.push(cmd);
                    }
                    Ok(other) => self.early.push(other),
                    Err(e) => l.send(&Ack::rejected(None, e), None),
                }
            }
            if started.elapsed() > LIBRARIES_PATIENCE {
                return Err(format!("the event-function libraries {:?} did not come from the driver within {LIBRARIES_PATIENCE:?}", missing(&got)));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(got)
    }

    /// Commands from the kernel, checked by the collector; each gets an [`Ack`] naming its query.
    /// A driver found gone is a `Stop`: the job ends cleanly, every rank through its own end.
    pub fn commands(&mut self, c: &mut Collector) -> Vec<Command> {
        let Some(l) = &self.link else { return Vec::new() };
        let mut ok = Vec::new();
        if self.driver_checked.elapsed() >= DRIVER_CHECK_EVERY && !c.stopped {
            self.driver_checked = Instant::now();
            if let Some(d) = self.driver.as_ref().filter(|d| d.alive() == Some(false)) {
                eprintln!("beamtime-job: its driver (pid {} on {}) is gone: the job stops", d.pid, d.host);
                if let Ok(stop) = c.command(Command::Stop) {
                    ok.push(stop);
                }
            }
        }
        let early: Vec<Result<Command, contract::ContractError>> = std::mem::take(&mut self.early).into_iter().map(Ok).collect();
        for cmd in early.into_iter().chain(l.commands()) {
            let cmd = match cmd {
                Ok(cmd) => cmd,
                Err(e) => {
                    l.send(&Ack::rejected(None, e), None);
                    continue;
                }
            };
            let query = cmd.query().map(str::to_string);
            match c.command(cmd) {
                Ok(cmd) => {
                    l.send(&Ack::accepted(cmd.clone()), None);
                    if !matches!(cmd, Command::Resend { .. }) {
                        ok.push(cmd); // what the workers need to hear
                    }
                }
                Err(e) => l.send(&Ack::rejected(query, e), None),
            }
        }
        ok
    }

    /// The last message: events read, how the job ended, the job's error if any.
    pub fn finish(self, c: &Collector) {
        if let Some(l) = self.link {
            let f = Finished { outcome: c.outcome(), events_lost: c.events_lost(), lost: c.lost().to_vec(), ..Finished::new(c.events_read(), c.error.clone()) };
            l.send(&f, None);
            l.close();
        }
    }
}

/// How often the collector looks whether its driver still runs.
const DRIVER_CHECK_EVERY: Duration = Duration::from_millis(500);

/// How long a job waits for the event-function libraries its driver sends when it connects.
pub const LIBRARIES_PATIENCE: Duration = Duration::from_secs(30);

/// Reports a job that fails before it has a collector to finish with (a bad source, a bad
/// first query): the driver hears why instead of a silent end.
pub fn report_failure(spec: &JobSpec, error: &str, outcome: Outcome) {
    if let Some(l) = spec.connect.as_deref().and_then(|e| Link::connect(e).ok()) {
        l.send(&Finished { outcome, ..Finished::new(0, Some(error.to_string())) }, None);
        l.close();
    }
}

/// Writes every query's final result (see [`JobSpec::output`]).
pub fn write_output(c: &Collector, path: &std::path::Path) -> Result<(), String> {
    query::FileFormat::from_path(path).map_err(|e| e.to_string())?;
    let names = c.query_names();
    for name in &names {
        let target = if names.len() == 1 {
            path.to_path_buf()
        } else {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("result");
            let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("parquet");
            path.with_file_name(format!("{stem}.{name}.{ext}"))
        };
        let mut df = c.result(name).cloned().unwrap_or_default();
        // How the job ended, and what a partial result lacks (Parquet's file metadata).
        let outcome = serde_json::to_value(c.outcome()).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let mut meta = vec![("beamtime:outcome".to_string(), outcome), ("beamtime:events".to_string(), c.events_read().to_string())];
        if c.events_lost() > 0 {
            meta.push(("beamtime:events_lost".to_string(), c.events_lost().to_string()));
        }
        query::write_file_with(&mut df, &target, meta).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

/// Where the in-process worker's data comes from.
enum InProcessSource {
    /// The file reader (smd + bigdata), handing out batches.
    Files(Reader),
    /// A shared-memory client: events as the server hands them out.
    Shmem { client: crate::shmem_source::ShmemSource, stopped: bool },
}

impl InProcessSource {
    fn stop(&mut self) {
        match self {
            InProcessSource::Files(reader) => reader.stop(),
            InProcessSource::Shmem { stopped, .. } => *stopped = true,
        }
    }

    /// Gives the worker what is ready (waiting a few ms when nothing is).
    fn hand_work(&mut self, worker: &mut Worker, spec: &JobSpec) {
        match self {
            InProcessSource::Files(reader) => {
                reader.poll(Duration::from_millis(5));
                if let Some(msg) = reader.next_work(0) {
                    if worker.process(&msg).is_err() {
                        reader.stop();
                    }
                }
            }
            InProcessSource::Shmem { client, stopped: false } => {
                if let Err(e) = client.pump(worker, spec.batch_events.max(1), Duration::from_millis(spec.flush_ms.max(5))) {
                    worker.error.get_or_insert(e);
                }
            }
            InProcessSource::Shmem { stopped: true, .. } => {}
        }
    }

    fn finished(&self) -> bool {
        match self {
            InProcessSource::Files(reader) => reader.finished().is_some(),
            InProcessSource::Shmem { client, stopped } => *stopped || client.done(),
        }
    }

    /// What the collector shows of the reading (shared memory has no reader: done from the start).
    fn status(&self) -> ReaderStatus {
        match self {
            InProcessSource::Files(reader) => {
                let finished = reader.finished().cloned();
                ReaderStatus {
                    events_built: reader.counters.events_built.load(std::sync::atomic::Ordering::Relaxed),
                    events_sent: reader.events_sent,
                    sent_to: vec![(1, reader.sent_to[0])],
                    newest: reader.counters.newest.load(std::sync::atomic::Ordering::Relaxed),
                    done: finished.is_some(),
                    error: finished.flatten(),
                    host: String::new(),
                }
            }
            InProcessSource::Shmem { .. } => ReaderStatus { done: true, ..Default::default() },
        }
    }
}

/// Runs the whole job in this process; returns the collector with the final results. Every
/// failure reaches the driver (if linked) as the job's final error.
pub fn run_inprocess(spec: &JobSpec, on_frame: &mut dyn FnMut(&Frame)) -> Result<Collector, String> {
    let mut emitter = Emitter::new(spec, on_frame)?;
    let mut collector = Collector::new(vec![1]);
    collector.max_rows = spec.max_rows;
    match run_with(spec, &mut emitter, &mut collector) {
        Ok(()) => {
            emitter.finish(&collector);
            Ok(collector)
        }
        Err(e) => {
            collector.error.get_or_insert_with(|| e.clone());
            emitter.finish(&collector);
            Err(e)
        }
    }
}

fn run_with(spec: &JobSpec, emitter: &mut Emitter, collector: &mut Collector) -> Result<(), String> {
    let mut worker = Worker::with_calib(spec.calib_dir.as_ref().map(std::path::PathBuf::from), spec.calib_settings()?);
    // Libraries first (the driver sends them when it hears from the job), then the queries.
    let hello = Hello::new(1, vec![1], &spec.source);
    let early_hello = !spec.functions.is_empty();
    if early_hello {
        emitter.hello(&hello);
    }
    emitter.libraries(collector, &spec.functions)?;
    for q in &spec.queries {
        let cmd = collector.command(q.clone())?;
        worker.command(&cmd);
    }
    let opened = spec.source().and_then(|source| {
        Ok(match source {
            Source::Shmem { tag, stop, .. } => InProcessSource::Shmem { client: crate::shmem_source::ShmemSource::new(&tag, stop), stopped: false },
            source => InProcessSource::Files(Reader::start(&source, 1, spec.reader_options()).map_err(|e| e.to_string())?),
        })
    });
    let mut source = opened.inspect_err(|e| collector.source_failed(e.clone()))?;
    if !early_hello {
        emitter.hello(&hello);
    }
    collector.reader_status(source.status());
    let report_every = Duration::from_millis(spec.report_ms);
    let mut last_report = Instant::now();
    loop {
        for cmd in emitter.commands(collector) {
            if cmd == Command::Stop {
                source.stop();
            }
            worker.command(&cmd);
        }
        source.hand_work(&mut worker, spec);
        let done = source.finished() || worker.error.is_some();
        if done || last_report.elapsed() >= report_every {
            collector.update(1, &worker.report(done))?;
            collector.reader_status(source.status());
            last_report = Instant::now();
            if done {
                emitter.tick(collector, true, true);
                break;
            }
        }
        emitter.tick(collector, false, false);
    }
    if let Some(path) = &spec.output {
        write_output(collector, path)?;
    }
    Ok(())
}
