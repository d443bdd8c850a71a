//! The reader role (psana2's SMD0 + event builder): builds events from the small-data files
//! and hands each worker batches of whole datagrams — every transition the worker has not
//! seen, then its share of the L1s — so that each worker decodes a valid stream of its own
//! and fetches the bigdata itself.
//!
//! Reading runs on its own thread (a live file may make it wait); the rank's message loop
//! only moves finished batches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use xtc::{RunReader, Source, TransitionId};

use crate::wire::{StreamSpec, Work};

/// How the reader cuts batches.
#[derive(Clone, Copy, Debug)]
pub struct ReaderOptions {
    /// L1 events per batch.
    pub batch_events: usize,
    /// A batch older than this is handed out even if not full (live data).
    pub flush: Duration,
    /// Poll interval while waiting for growing files (live runs).
    pub poll: Duration,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            batch_events: contract::spec::DEFAULT_BATCH_EVENTS,
            flush: Duration::from_millis(contract::spec::DEFAULT_FLUSH_MS),
            poll: Duration::from_millis(contract::spec::DEFAULT_POLL_MS),
        }
    }
}

/// One transition's datagrams: (stream index, bytes) per member stream.
type Transition = Vec<(usize, Vec<u8>)>;

/// A batch as read: the datagrams per stream, and the transitions inside it (which also go
/// to the log, for the workers that do not get this batch).
struct ReadBatch {
    events: u64,
    first_event: u64,
    per_stream: Vec<Vec<u8>>,
    transitions: Vec<Transition>,
    newest: u64,
}

enum ReadItem {
    Batch(ReadBatch),
    End(Option<String>),
}

/// Opens a source for reading small data only (no bigdata fetch), with a short live poll.
pub fn open_smd(source: &Source, opts: &ReaderOptions) -> xtc::Result<RunReader> {
    let mut source = source.clone();
    if let Source::Run(run) = &mut source {
        if let Some(f) = run.live.as_mut() {
            // Keep psana's patience, but look often: latency is what live analysis is for.
            let patience = f.patience();
            f.poll = opts.poll;
            f.max_retries = (patience.as_millis() / opts.poll.as_millis().max(1)).max(1) as u32;
        }
    }
    Ok(RunReader::open(&source)?.without_bigdata())
}

/// Counters the reading thread updates.
#[derive(Default)]
pub struct ReadCounters {
    pub events_built: AtomicU64,
    pub newest: AtomicU64,
}

/// Hands out batches to workers. Owns the reading thread.
pub struct Reader {
    specs: Vec<StreamSpec>,
    run_hint: Option<u32>,
    rx: Receiver<ReadItem>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub counters: Arc<ReadCounters>,
    ready: VecDeque<(ReadBatch, usize, usize)>,
    /// Transitions since `log_base`, and how far each worker has seen them.
    log: VecDeque<Transition>,
    log_base: usize,
    seen: Vec<usize>,
    batches: u64,
    pub events_sent: u64,
    /// L1 events handed to each worker.
    pub sent_to: Vec<u64>,
    finished: Option<Option<String>>,
}

impl Reader {
    /// Starts reading `source` for `workers` workers.
    pub fn start(source: &Source, workers: usize, opts: ReaderOptions) -> xtc::Result<Reader> {
        let reader = open_smd(source, &opts)?;
        let live = match source {
            Source::Run(r) => r.live.map(|f| (opts.poll.as_millis() as u64, (f.patience().as_millis() / opts.poll.as_millis().max(1)) as u32)),
            _ => None,
        };
        let specs = (0..reader.stream_count())
            .map(|i| {
                let info = reader.stream_info(i);
                StreamSpec { stream: info.stream, label: info.path.clone(), smd: info.smd, bigdata: info.bigdata.clone(), follow: live }
            })
            .collect();
        let run_hint = match source {
            Source::Run(r) => Some(r.run),
            _ => None,
        };
        let (tx, rx) = sync_channel(8);
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(ReadCounters::default());
        let thread = {
            let stop = stop.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name("smd-reader".into())
                .spawn(move || {
                    let end = read_loop(reader, &opts, &stop, &counters, &mut |b| tx.send(ReadItem::Batch(b)).is_ok());
                    let _ = tx.send(ReadItem::End(end.err()));
                })
                .expect("spawn the reading thread")
        };
        Ok(Reader {
            specs,
            run_hint,
            rx,
            stop,
            thread: Some(thread),
            counters,
            ready: VecDeque::new(),
            log: VecDeque::new(),
            log_base: 0,
            seen: vec![0; workers],
            batches: 0,
            events_sent: 0,
            sent_to: vec![0; workers],
            finished: None,
        })
    }

    pub fn streams(&self) -> &[StreamSpec] {
        &self.specs
    }

    /// Asks the reading thread to stop; what was read is still handed out.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Moves finished batches from the reading thread; waits up to `wait` for one.
    pub fn poll(&mut self, wait: Duration) {
        if self.finished.is_some() {
            return;
        }
        let mut first = true;
        loop {
            let item = if first && !wait.is_zero() && self.ready.is_empty() {
                match self.rx.recv_timeout(wait) {
                    Ok(i) => i,
                    Err(RecvTimeoutError::Timeout) => return,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.finished = Some(Some("the reading thread ended unexpectedly".into()));
                        return;
                    }
                }
            } else {
                match self.rx.try_recv() {
                    Ok(i) => i,
                    Err(TryRecvError::Empty) => return,
                    Err(TryRecvError::Disconnected) => {
                        if self.finished.is_none() {
                            self.finished = Some(Some("the reading thread ended unexpectedly".into()));
                        }
                        return;
                    }
                }
            };
            first = false;
            match item {
                ReadItem::Batch(b) => {
                    let start = self.log_base + self.log.len();
                    self.log.extend(b.transitions.iter().cloned());
                    let end = self.log_base + self.log.len();
                    self.ready.push_back((b, start, end));
                }
                ReadItem::End(e) => {
                    self.finished = Some(e);
                    if let Some(t) = self.thread.take() {
                        let _ = t.join();
                    }
                    return;
                }
            }
        }
    }

    /// A batch is waiting for a worker.
    pub fn has_work(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The data has ended and every batch is handed out: `Some(error)` once the end is known.
    pub fn finished(&self) -> Option<&Option<String>> {
        if self.ready.is_empty() {
            self.finished.as_ref()
        } else {
            None
        }
    }

    /// The next batch for worker `w` (0-based among the workers) as a Work message.
    pub fn next_work(&mut self, w: usize) -> Option<Vec<u8>> {
        // A forgotten (dead) worker gets nothing: its request may still have been queued.
        if self.seen.get(w).is_none_or(|&s| s == usize::MAX) {
            return None;
        }
        let (batch, start, end) = self.ready.pop_front()?;
        let mut segments: Vec<(usize, usize)> = Vec::new();
        let mut body: Vec<&[u8]> = Vec::new();
        let from = self.seen[w].max(self.log_base);
        for t in self.log.range(from - self.log_base..start - self.log_base) {
            for (i, bytes) in t {
                segments.push((*i, bytes.len()));
                body.push(bytes);
            }
        }
        for (i, bytes) in batch.per_stream.iter().enumerate() {
            if !bytes.is_empty() {
                segments.push((i, bytes.len()));
                body.push(bytes);
            }
        }
        self.batches += 1;
        let work = Work { batch: self.batches, events: batch.events, first_event: batch.first_event, streams: self.specs.clone(), segments, run_hint: self.run_hint };
        let msg = crate::wire::encode(&work, &body);
        self.seen[w] = end;
        self.events_sent += batch.events;
        self.sent_to[w] += batch.events;
        self.compact();
        Some(msg)
    }

    /// Worker `w` is gone: the log no longer waits for it.
    pub fn forget(&mut self, w: usize) {
        self.seen[w] = usize::MAX;
        self.compact();
    }

    fn compact(&mut self) {
        let min = self.seen.iter().copied().min().unwrap_or(0);
        let min = if min == usize::MAX { self.log_base + self.log.len() } else { min };
        while self.log_base < min && !self.log.is_empty() {
            self.log.pop_front();
            self.log_base += 1;
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // The thread sees the flag, or a closed channel; it may be waiting on a live file,
        // so it is not joined.
        self.stop();
        drop(std::mem::replace(&mut self.rx, sync_channel(0).1));
    }
}

/// A monotonic clock read per event: the coarse clock (a few ms resolution, far below the
/// flush interval) costs a fraction of the precise one.
fn coarse_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC_COARSE exists on every Linux since 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Reads built steps into batches until the end of the data, an error, or `stop`.
fn read_loop(
    mut reader: RunReader,
    opts: &ReaderOptions,
    stop: &AtomicBool,
    counters: &ReadCounters,
    send: &mut dyn FnMut(ReadBatch) -> bool,
) -> Result<(), String> {
    let n = reader.stream_count();
    let mut next_event = 0u64;
    // Each batch's buffers start at the previous batch's sizes: no regrowing (and copying,
    // and page-faulting) their way up for every batch.
    let fresh = |first: u64, like: &ReadBatch| ReadBatch {
        events: 0,
        first_event: first,
        per_stream: like.per_stream.iter().map(|v| Vec::with_capacity(v.len())).collect(),
        transitions: Vec::new(),
        newest: 0,
    };
    let mut batch = ReadBatch { events: 0, first_event: 0, per_stream: vec![Vec::new(); n], transitions: Vec::new(), newest: 0 };
    let mut started = coarse_now();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let built = match reader.next() {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                if batch.events > 0 || !batch.transitions.is_empty() {
                    {
                    let next = fresh(next_event, &batch);
                    send(std::mem::replace(&mut batch, next));
                }
                }
                return Err(e.to_string());
            }
        };
        if batch.events == 0 && batch.transitions.is_empty() {
            started = coarse_now();
        }
        if built.service.is_event() {
            for (i, dg) in reader.members() {
                batch.per_stream[i].extend_from_slice(dg.bytes());
            }
            batch.events += 1;
            next_event += 1;
            batch.newest = built.timestamp;
            counters.events_built.fetch_add(1, Ordering::Relaxed);
            counters.newest.store(built.timestamp, Ordering::Relaxed);
        } else {
            let mut t: Transition = Vec::new();
            for (i, dg) in reader.members() {
                batch.per_stream[i].extend_from_slice(dg.bytes());
                t.push((i, dg.bytes().to_vec()));
            }
            batch.transitions.push(t);
        }
        let full = batch.events as usize >= opts.batch_events;
        let ends = matches!(built.service, TransitionId::EndRun | TransitionId::Unconfigure);
        if full || ends || coarse_now().saturating_sub(started) >= opts.flush {
            let next = fresh(next_event, &batch);
            if !send(std::mem::replace(&mut batch, next)) {
                return Ok(());
            }
        }
    }
    if batch.events > 0 || !batch.transitions.is_empty() {
        send(batch);
    }
    Ok(())
}
