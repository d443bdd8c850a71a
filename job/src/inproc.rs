//! Running the job: what every driver shares (the job's description, frame emission, the
//! kernel link), and the in-process driver (`--ranks 1`): reader, one worker and the
//! collector in one process, no MPI.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xtc::Source;

use crate::collector::{Collector, Frame};
use crate::feed::{Distributor, FeedOptions};
use crate::link::Link;
use crate::wire::{Command, ReaderStatus};
use crate::worker::Worker;

/// What a job reads and computes; passed to `beamtime-job` as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobSpec {
    /// A psana data source string.
    pub source: String,
    /// The queries to start with (`Command::Set`).
    pub queries: Vec<Command>,
    /// Result frames per second at most.
    pub frame_rate: f64,
    /// How often a worker reports its states.
    pub report_ms: u64,
    pub batch_events: usize,
    pub flush_ms: u64,
    pub poll_ms: u64,
    /// The kernel's ROUTER endpoint, when a kernel drives the job.
    pub connect: Option<String>,
    /// Row queries keep at most this many newest rows.
    pub max_rows: usize,
    /// The calibration directory (`%source … --calib-dir`), for detector reductions on the
    /// workers.
    #[serde(default)]
    pub calib_dir: Option<String>,
    /// Where rank 0 writes the final result (`.parquet`, `.arrow`, `.csv`); with several
    /// queries, `<stem>.<query>.<ext>`.
    pub output: Option<std::path::PathBuf>,
}

impl JobSpec {
    pub fn new(source: &str) -> Self {
        let f = FeedOptions::default();
        JobSpec {
            source: source.to_string(),
            queries: Vec::new(),
            frame_rate: 5.0,
            report_ms: 100,
            batch_events: f.batch_events,
            flush_ms: f.flush.as_millis() as u64,
            poll_ms: f.poll.as_millis() as u64,
            connect: None,
            max_rows: crate::collector::DEFAULT_MAX_ROWS,
            calib_dir: None,
            output: None,
        }
    }

    pub fn feed_options(&self) -> FeedOptions {
        FeedOptions {
            batch_events: self.batch_events.max(1),
            flush: Duration::from_millis(self.flush_ms),
            poll: Duration::from_millis(self.poll_ms.max(1)),
        }
    }

    pub fn source(&self) -> Result<Source, String> {
        Source::parse(&self.source).map_err(|e| e.to_string())
    }
}

/// Sends frames to the kernel (if linked) and to a callback, at most `frame_rate` per second.
pub struct Emitter<'a> {
    pub link: Option<Link>,
    period: Duration,
    last: Option<Instant>,
    /// Every query's frame goes out at least this often, so that rate, age and dead or
    /// stalled ranks show even when no result changes.
    last_full: Instant,
    on_frame: &'a mut dyn FnMut(&Frame),
}

impl<'a> Emitter<'a> {
    pub fn new(spec: &JobSpec, on_frame: &'a mut dyn FnMut(&Frame)) -> Result<Self, String> {
        let link = match &spec.connect {
            Some(e) => Some(Link::connect(e)?),
            None => None,
        };
        let period = Duration::from_secs_f64(1.0 / spec.frame_rate.clamp(0.01, 1000.0));
        Ok(Emitter { link, period, last: None, last_full: Instant::now(), on_frame })
    }

    pub fn hello(&self, info: &serde_json::Value) {
        if let Some(l) = &self.link {
            l.send("hello", info, None);
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
                l.send("frame", &f.header, Some(f.ipc.clone()));
            }
            (self.on_frame)(&f);
        }
    }

    /// Commands from the kernel, checked by the collector; each gets an `ack`.
    pub fn commands(&self, c: &mut Collector) -> Vec<Command> {
        let Some(l) = &self.link else { return Vec::new() };
        let mut ok = Vec::new();
        for cmd in l.commands() {
            let res = cmd.and_then(|cmd| c.command(cmd));
            match res {
                Ok(cmd) => {
                    l.send("ack", &serde_json::json!({"ok": true, "command": cmd}), None);
                    if !matches!(cmd, Command::Resend { .. }) {
                        ok.push(cmd); // what the workers need to hear
                    }
                }
                Err(e) => l.send("ack", &serde_json::json!({"ok": false, "error": e}), None),
            }
        }
        ok
    }

    pub fn finish(self, c: &Collector) {
        if let Some(l) = self.link {
            l.send("end", &serde_json::json!({"events": c.events_read(), "error": c.error}), None);
            l.close();
        }
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
        query::write_file(&mut df, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

/// Where the in-process worker's data comes from.
enum Feeder {
    /// The file reader (smd + bigdata), handing out batches.
    Files(Distributor),
    /// A shared-memory client: events as the server hands them out.
    Shmem { feed: crate::shmem_feed::ShmemFeed, stopped: bool },
}

impl Feeder {
    fn stop(&mut self) {
        match self {
            Feeder::Files(dist) => dist.stop(),
            Feeder::Shmem { stopped, .. } => *stopped = true,
        }
    }

    /// Gives the worker what is ready (waiting a few ms when nothing is).
    fn feed(&mut self, worker: &mut Worker, spec: &JobSpec) {
        match self {
            Feeder::Files(dist) => {
                dist.poll(Duration::from_millis(5));
                if let Some(msg) = dist.next_work(0) {
                    if worker.process(&msg).is_err() {
                        dist.stop();
                    }
                }
            }
            Feeder::Shmem { feed, stopped: false } => {
                if let Err(e) = feed.pump(worker, spec.batch_events.max(1), Duration::from_millis(spec.flush_ms.max(5))) {
                    worker.error.get_or_insert(e);
                }
            }
            Feeder::Shmem { stopped: true, .. } => {}
        }
    }

    fn finished(&self) -> bool {
        match self {
            Feeder::Files(dist) => dist.finished().is_some(),
            Feeder::Shmem { feed, stopped } => *stopped || feed.done(),
        }
    }

    /// What the collector shows of the reading (shared memory has no reader: done from the start).
    fn status(&self) -> ReaderStatus {
        match self {
            Feeder::Files(dist) => {
                let finished = dist.finished().cloned();
                ReaderStatus {
                    events_built: dist.counters.events_built.load(std::sync::atomic::Ordering::Relaxed),
                    events_sent: dist.events_sent,
                    sent_to: vec![(1, dist.sent_to[0])],
                    newest: dist.counters.newest.load(std::sync::atomic::Ordering::Relaxed),
                    done: finished.is_some(),
                    error: finished.flatten(),
                }
            }
            Feeder::Shmem { .. } => ReaderStatus { done: true, ..Default::default() },
        }
    }
}

/// Runs the whole job in this process; returns the collector with the final results.
pub fn run_inprocess(spec: &JobSpec, on_frame: &mut dyn FnMut(&Frame)) -> Result<Collector, String> {
    let mut feeder = match spec.source()? {
        Source::Shmem { tag, stop, .. } => Feeder::Shmem { feed: crate::shmem_feed::ShmemFeed::new(&tag, stop), stopped: false },
        source => Feeder::Files(Distributor::start(&source, 1, spec.feed_options()).map_err(|e| e.to_string())?),
    };
    let mut collector = Collector::new(vec![1]);
    collector.max_rows = spec.max_rows;
    let mut worker = Worker::new();
    for q in &spec.queries {
        let cmd = collector.command(q.clone())?;
        worker.command(&cmd);
    }
    let mut emitter = Emitter::new(spec, on_frame)?;
    emitter.hello(&serde_json::json!({"ranks": 1, "workers": [1], "source": spec.source, "pid": std::process::id()}));
    collector.reader_status(feeder.status());
    let report_every = Duration::from_millis(spec.report_ms);
    let mut last_report = Instant::now();
    loop {
        for cmd in emitter.commands(&mut collector) {
            if cmd == Command::Stop {
                feeder.stop();
            }
            worker.command(&cmd);
        }
        feeder.feed(&mut worker, spec);
        let done = feeder.finished() || worker.error.is_some();
        if done || last_report.elapsed() >= report_every {
            collector.update(1, &worker.report(done))?;
            collector.reader_status(feeder.status());
            last_report = Instant::now();
            if done {
                emitter.tick(&mut collector, true, true);
                break;
            }
        }
        emitter.tick(&mut collector, false, false);
    }
    if let Some(path) = &spec.output {
        write_output(&collector, path)?;
    }
    emitter.finish(&collector);
    Ok(collector)
}
