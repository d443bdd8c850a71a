//! Writing a run as the LCLS-II DAQ does (spec §13): per stream, bigdata chunks
//! `<exp>-r<RRRR>-s<SSS>-c<CCC>.xtc2` and one smd file `smalldata/<exp>-r<RRRR>-s<SSS>-c000.smd.xtc2`,
//! each named `….inprogress` until it is complete.
//!
//! A live reader may follow the files while they grow. Two rules make that safe: bytes reach
//! a file only as whole datagrams appended in order, and a stream's smd bytes are written only
//! after the bigdata bytes they point to (bigdata is always flushed first).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xtc::writer::{write_smd, DgramWriter, NamesDef};
use xtc::TransitionId;

use crate::clock::{self, pulse_timestamp, Clock};
use crate::config::{existing_run_files, SimConfig};
use crate::detectors::{step_docstring, L1Record, Node};
use crate::area::{Archon, AreaDetector, Epix10ka, Epixm320};
use crate::jungfrau::JungfrauTruth;
use crate::model::{Beamline, Model, Shot};
use crate::truth::{DetectorTruth, FileTruth, StepTruth, StreamTruth, Truth, TRUTH_FORMAT};
use crate::SimError;

/// Pending bytes per stream file before they are written out (as-fast-as-possible mode).
const FLUSH_BYTES: usize = 1 << 20;

/// In real-time mode, the longest a written datagram waits before a live reader can see it.
const LIVE_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// `env` bits below the service: readout group g is bit g (0: every stream, 1: the mixed-rate
/// streams, 2: a Jungfrau below full rate); the L0Accept bit of the trigger byte on L1Accepts
/// (spec §2.2).
const L0_ACCEPT: u32 = 1 << 16;

/// How far a run has got, reported about once a second.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub events: u64,
    pub total: u64,
    pub step: u32,
    pub steps: u32,
    pub elapsed: Duration,
}

/// Writes the run described by `cfg` and returns (and saves) its ground truth.
pub fn write_run(cfg: &SimConfig) -> Result<Truth, SimError> {
    write_run_with_progress(cfg, |_| {})
}

/// [`write_run`], calling `progress` about once a second of wall time.
pub fn write_run_with_progress(cfg: &SimConfig, progress: impl FnMut(&Progress)) -> Result<Truth, SimError> {
    cfg.validate()?;
    prepare_dir(cfg)?;
    let nodes = make_nodes(cfg);
    deploy_constants(cfg, &nodes)?;
    let outs = nodes.iter().map(|n| StreamOut::create(cfg, n.stream, n.smdinfo())).collect::<Result<_, _>>()?;
    let truth = simulate(cfg, nodes, &mut Files { outs, chunk_bytes: cfg.chunk_bytes }, progress)?;
    truth.save(&cfg.truth_path())?;
    Ok(truth)
}

/// Where the simulated DAQ's datagrams go: the run's files ([`write_run`]) or, event-built
/// pulse by pulse, a shared-memory server (`crate::shmem`). Both get the same datagrams.
pub trait Sink {
    /// Stream `stream`'s datagram of the current pulse; `fill` writes its Names/ShapesData.
    fn put(&mut self, stream: usize, service: TransitionId, timestamp: u64, env: u32, fill: &mut dyn FnMut(&mut DgramWriter)) -> Result<(), SimError>;
    /// Every stream that records the current pulse has been put.
    fn end_pulse(&mut self) -> Result<(), SimError> {
        Ok(())
    }
    /// At an Enable: the chunk stream `stream` goes on in, as (chunk id, bare file name), when
    /// it switches chunks there (files only); the Enable then carries `chunkinfo`.
    fn next_chunk(&mut self, _stream: usize) -> Option<(u32, String)> {
        None
    }
    /// The Enable announcing the next chunk has been put: switch to it.
    fn switch_chunk(&mut self, _stream: usize) -> Result<(), SimError> {
        Ok(())
    }
    /// Makes everything put so far visible (paced runs call it while they wait).
    fn flush(&mut self) -> Result<(), SimError> {
        Ok(())
    }
    /// The run is over: what each stream holds.
    fn finish(&mut self) -> Result<Vec<StreamTruth>, SimError>;
}

/// The DRP nodes of a run, one per stream; each area detector gets a stream of its own after
/// the others: the Jungfrau, the epix10ka, the epixM320, the Archon, those the run has.
pub fn make_nodes(cfg: &SimConfig) -> Vec<Node> {
    let mut nodes: Vec<Node> = (0..cfg.streams).map(|s| Node::new(s, cfg.streams, cfg.seed, cfg.image)).collect();
    if cfg.cam_calib {
        nodes.iter_mut().for_each(|n| n.calibrate_cam(cfg.seed));
    }
    if cfg.jungfrau > 0 {
        nodes.push(Node::jungfrau(cfg.streams, cfg.seed, cfg.jungfrau, cfg.jungfrau_every));
    }
    let (seed, every) = (cfg.seed, cfg.jungfrau_every);
    let next = |nodes: &Vec<Node>| nodes.len() as u32;
    if cfg.epix10ka > 0 {
        let node = Node::area(next(&nodes), seed, every, |s| AreaDetector::Epix10ka(Epix10ka::new(s, seed, cfg.epix10ka)));
        nodes.push(node);
    }
    if cfg.epixm320 {
        let node = Node::area(next(&nodes), seed, every, |s| AreaDetector::Epixm320(Epixm320::new(s, seed)));
        nodes.push(node);
    }
    if cfg.archon > 0 {
        let node = Node::area(next(&nodes), seed, every, |s| AreaDetector::Archon(Archon::new(s, seed, cfg.archon)));
        nodes.push(node);
    }
    nodes
}

/// Writes the area detectors' calibration constants for the run (and the camera's with
/// `--cam-calib`) before any data: a live reader can calibrate from the first event.
pub fn deploy_constants(cfg: &SimConfig, nodes: &[Node]) -> Result<(), SimError> {
    if let Some(jf) = nodes.iter().find_map(Node::jungfrau_detector) {
        crate::jungfrau::deploy(jf, &cfg.calib_dir(), cfg.run)?;
    }
    for n in nodes {
        if let Some(a) = n.area_detector() {
            a.deploy(&cfg.calib_dir(), cfg.run)?;
        }
        n.deploy_cam_constants(&cfg.calib_dir(), cfg.run)?;
    }
    Ok(())
}

/// Runs the simulated DAQ of `cfg` (validated) into `sink` and returns the ground truth (not
/// saved). The datagrams are the same whatever the sink.
pub fn simulate<S: Sink>(cfg: &SimConfig, nodes: Vec<Node>, sink: &mut S, mut progress: impl FnMut(&Progress)) -> Result<Truth, SimError> {
    // Paced runs are "now" (live readers measure how fresh their events are); others are
    // reproducible from the seed.
    let start_sec = cfg.start_epics_sec.unwrap_or_else(|| {
        if cfg.rate_hz > 0.0 {
            // Start on a whole second, so that event timestamps match the wall clock.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            std::thread::sleep(Duration::from_nanos(1_000_000_000 - now.subsec_nanos() as u64));
            (now.as_secs() + 1).saturating_sub(631_152_000) as u32
        } else {
            clock::start_from_seed(cfg.seed)
        }
    });
    let model = Model::from_seed(cfg.seed);
    let mut beamline = Beamline::new(model.clone(), cfg.seed);
    let detectors = nodes
        .iter()
        .flat_map(|n| n.names().into_iter().map(|(def, data_in)| DetectorTruth::new(n.stream, def, data_in)))
        .collect();
    let run_groups = nodes.iter().fold(0, |g, n| g | 1 << n.readout_group());
    let mut run = RunWriter {
        clock: Clock::new(start_sec, cfg.data_rate_hz()),
        nodes,
        sink,
        transitions: BTreeMap::new(),
        groups: run_groups,
    };
    let clock_info = run.clock.info().clone();

    let first_timestamp = run.transition(TransitionId::Configure, |n, w| n.write_configure(w))?;
    run.transition(TransitionId::BeginRun, |n, w| n.write_begin_run(w, &cfg.exp, cfg.run))?;

    // SlowUpdates fall due on the data clock, so a run's files do not depend on pacing.
    let slow_period = (cfg.slow_update_hz > 0.0).then(|| ((clock::BASE_RATE_HZ / cfg.slow_update_hz).round() as u64).max(1));
    let mut next_slow = clock_info.start_pulse_id + slow_period.unwrap_or(0);
    let pace = (cfg.rate_hz > 0.0).then_some(cfg.rate_hz);
    let started = Instant::now();
    let mut last_report = started;
    let mut last_flush = started;
    let mut index = 0u64;
    let mut steps = Vec::with_capacity(cfg.steps as usize);
    for step in 0..cfg.steps {
        let delay = model.delay_ps(step, cfg.steps);
        run.transition(TransitionId::BeginStep, |n, w| n.write_begin_step(w, step, delay))?;
        run.enable()?;
        let mut acc = StepAcc::new(cfg.streams, run.nodes.len(), cfg.image.is_some());
        for _ in 0..events_in_step(cfg.events, cfg.steps, step) {
            if let Some(rate) = pace {
                let due = started + Duration::from_secs_f64(index as f64 / rate);
                let now = Instant::now();
                // Let a live reader see everything so far while we wait, and regularly when
                // writing cannot keep up with the rate.
                if due > now || now - last_flush >= LIVE_FLUSH_INTERVAL {
                    run.sink.flush()?;
                    last_flush = now;
                }
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            while let Some(period) = slow_period.filter(|_| run.clock.peek_event() >= next_slow) {
                run.transition(TransitionId::SlowUpdate, |n, w| n.write_slow_update(w, delay))?;
                acc.slow_updates += 1;
                next_slow += period;
            }
            let pulse = run.clock.event();
            let shot = beamline.shot(index, pulse, pulse_timestamp(pulse), delay);
            run.l1(&shot, &mut acc)?;
            index += 1;
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                progress(&Progress { events: index, total: cfg.events, step, steps: cfg.steps, elapsed: started.elapsed() });
            }
        }
        run.transition(TransitionId::Disable, |_, _| {})?;
        run.transition(TransitionId::EndStep, |_, _| {})?;
        steps.push(acc.finish(step, delay));
    }
    let last_timestamp = run.transition(TransitionId::EndRun, |_, _| {})?;
    let mut streams = run.sink.finish()?;
    for (s, node) in streams.iter_mut().zip(&run.nodes) {
        s.l1_every = node.l1_every();
    }
    let step_delays: Vec<(u32, f64)> = steps.iter().map(|s: &StepTruth| (s.step, s.delay_ps)).collect();
    let jungfrau = run.nodes.iter().find_map(Node::jungfrau_detector).map(|jf| {
        let (hot_pixels, dead_pixels) = jf.hot_and_dead();
        JungfrauTruth {
            stream: cfg.streams,
            modules: cfg.jungfrau,
            every: cfg.jungfrau_every,
            calib_dir: cfg.calib_dir(),
            params: jf.params.clone(),
            geometry: jf.geometry.clone(),
            hot_pixels,
            dead_pixels,
            frames: jf.frames.clone(),
            steps: crate::jungfrau::step_truths(jf, &step_delays),
        }
    });
    let (mut epix10ka, mut epixm320, mut archon) = (None, None, None);
    for n in &run.nodes {
        let (stream, every, dir) = (n.stream, n.l1_every(), cfg.calib_dir());
        match n.area_detector() {
            Some(AreaDetector::Epix10ka(d)) => epix10ka = Some(d.truth(stream, every, dir)),
            Some(AreaDetector::Epixm320(d)) => epixm320 = Some(d.truth(stream, every, dir)),
            Some(AreaDetector::Archon(d)) => archon = Some(d.truth(stream, every, dir)),
            None => {}
        }
    }
    let cam = run.nodes.iter().find_map(|n| n.cam_truth(cfg.calib_dir()));
    progress(&Progress { events: index, total: cfg.events, step: cfg.steps.saturating_sub(1), steps: cfg.steps, elapsed: started.elapsed() });

    Ok(Truth {
        format: TRUTH_FORMAT.into(),
        source: cfg.source(),
        config: cfg.clone(),
        model,
        clock: clock_info,
        events: index,
        first_timestamp,
        last_timestamp,
        first_time_utc: clock::utc_string(first_timestamp),
        last_time_utc: clock::utc_string(last_timestamp),
        transitions: run.transitions,
        streams,
        steps,
        detectors,
        jungfrau,
        epix10ka,
        epixm320,
        archon,
        cam,
    })
}

/// Events of step `step`: an even share, the first `events % steps` steps getting one more.
pub fn events_in_step(events: u64, steps: u32, step: u32) -> u64 {
    events / steps as u64 + u64::from((step as u64) < events % steps as u64)
}

/// Creates the directories and clears the way: the files of an earlier run with the same
/// experiment and number are removed when the simulator wrote it (its truth file is there) or
/// when `overwrite` is set; otherwise they are left alone and the run is refused.
fn prepare_dir(cfg: &SimConfig) -> Result<(), SimError> {
    let smd_dir = cfg.dir.join("smalldata");
    std::fs::create_dir_all(&smd_dir).map_err(|e| SimError::io(&smd_dir, e))?;
    let existing = existing_run_files(&cfg.dir, &cfg.exp, cfg.run);
    if existing.is_empty() {
        return Ok(());
    }
    if !cfg.overwrite && !cfg.truth_path().exists() {
        return Err(SimError::RunExists { dir: cfg.dir.clone(), exp: cfg.exp.clone(), run: cfg.run, files: existing.len() });
    }
    for f in existing {
        std::fs::remove_file(&f).map_err(|e| SimError::io(&f, e))?;
    }
    Ok(())
}

struct RunWriter<'s, S: Sink> {
    clock: Clock,
    nodes: Vec<Node>,
    sink: &'s mut S,
    transitions: BTreeMap<String, u64>,
    /// Readout groups of the partition.
    groups: u32,
}

impl<S: Sink> RunWriter<'_, S> {
    /// Writes a transition into every stream, with the same timestamp; returns it.
    fn transition(&mut self, service: TransitionId, mut fill: impl FnMut(&mut Node, &mut DgramWriter)) -> Result<u64, SimError> {
        let ts = pulse_timestamp(self.clock.transition());
        for (i, node) in self.nodes.iter_mut().enumerate() {
            self.sink.put(i, service, ts, self.groups, &mut |w| fill(node, w))?;
        }
        self.sink.end_pulse()?;
        *self.transitions.entry(service.name().into()).or_default() += 1;
        Ok(ts)
    }

    /// The Enable of a step. A stream whose chunk has grown past the threshold puts
    /// `chunkinfo` into it, ends the chunk with it and goes on in the next one (spec §13.4).
    fn enable(&mut self) -> Result<(), SimError> {
        let ts = pulse_timestamp(self.clock.transition());
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let next = self.sink.next_chunk(i);
            self.sink.put(i, TransitionId::Enable, ts, self.groups, &mut |w| {
                node.write_enable(w, next.as_ref().map(|(id, n)| (*id, n.as_str())))
            })?;
            if next.is_some() {
                self.sink.switch_chunk(i)?;
            }
        }
        self.sink.end_pulse()?;
        *self.transitions.entry(TransitionId::Enable.name().into()).or_default() += 1;
        Ok(())
    }

    /// Writes the L1Accept of `shot` into every stream that records it.
    fn l1(&mut self, shot: &Shot, acc: &mut StepAcc) -> Result<(), SimError> {
        let groups = self.nodes.iter().filter(|n| n.records(shot.index)).fold(0, |g, n| g | 1 << n.readout_group());
        let env = L0_ACCEPT | groups;
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if !node.records(shot.index) {
                continue;
            }
            let mut rec = L1Record::default();
            self.sink.put(i, TransitionId::L1Accept, shot.timestamp, env, &mut |w| rec = node.write_l1(w, shot))?;
            acc.record(node.stream, &rec);
        }
        self.sink.end_pulse()?;
        acc.shot(shot);
        Ok(())
    }
}

/// The run's files, stream by stream.
struct Files {
    outs: Vec<StreamOut>,
    chunk_bytes: u64,
}

impl Sink for Files {
    fn put(&mut self, stream: usize, service: TransitionId, timestamp: u64, env: u32, fill: &mut dyn FnMut(&mut DgramWriter)) -> Result<(), SimError> {
        self.outs[stream].put(service, timestamp, env, fill)
    }

    fn next_chunk(&mut self, stream: usize) -> Option<(u32, String)> {
        let out = &self.outs[stream];
        (out.chunk_len > self.chunk_bytes).then(|| (out.chunk + 1, chunk_name(&out.base, out.chunk + 1)))
    }

    fn switch_chunk(&mut self, stream: usize) -> Result<(), SimError> {
        self.outs[stream].next_chunk()
    }

    fn flush(&mut self) -> Result<(), SimError> {
        self.outs.iter_mut().try_for_each(StreamOut::flush)
    }

    /// Flushes every stream, renames the bigdata chunks, then the smd files (a reader that
    /// waits for the renames sees complete bigdata first).
    fn finish(&mut self) -> Result<Vec<StreamTruth>, SimError> {
        for out in &mut self.outs {
            out.close_chunk()?;
        }
        let mut streams = Vec::with_capacity(self.outs.len());
        for out in &mut self.outs {
            out.flush()?;
            let smd = smd_name(&out.base);
            rename_done(&out.dir.join(&smd))?;
            streams.push(StreamTruth {
                stream: out.stream,
                l1: out.l1,
                l1_every: 1, // the node's, set by `simulate`
                chunks: std::mem::take(&mut out.chunks),
                smd: FileTruth { file: smd, bytes: out.smd_len, datagrams: out.smd_datagrams, l1: out.l1 },
            });
        }
        Ok(streams)
    }
}

/// One stream's open files and pending bytes.
struct StreamOut {
    stream: u32,
    dir: PathBuf,
    /// `<exp>-r<RRRR>-s<SSS>`.
    base: String,
    smdinfo: NamesDef,
    chunk: u32,
    chunk_file: File,
    chunk_path: PathBuf,
    /// Bytes of the current chunk, written or pending: the next datagram's offset.
    chunk_len: u64,
    chunk_datagrams: u64,
    chunk_l1: u64,
    big: Vec<u8>,
    smd_file: File,
    smd_path: PathBuf,
    smd: Vec<u8>,
    smd_len: u64,
    smd_datagrams: u64,
    l1: u64,
    /// Closed chunks.
    chunks: Vec<FileTruth>,
}

impl StreamOut {
    fn create(cfg: &SimConfig, stream: u32, smdinfo: &NamesDef) -> Result<Self, SimError> {
        let base = format!("{}-s{stream:03}", cfg.run_prefix());
        let (smd_file, smd_path) = create_inprogress(&cfg.dir.join(smd_name(&base)))?;
        let (chunk_file, chunk_path) = create_inprogress(&cfg.dir.join(chunk_name(&base, 0)))?;
        Ok(StreamOut {
            stream,
            dir: cfg.dir.clone(),
            base,
            smdinfo: smdinfo.clone(),
            chunk: 0,
            chunk_file,
            chunk_path,
            chunk_len: 0,
            chunk_datagrams: 0,
            chunk_l1: 0,
            big: Vec::with_capacity(FLUSH_BYTES * 2),
            smd_file,
            smd_path,
            smd: Vec::with_capacity(FLUSH_BYTES * 2),
            smd_len: 0,
            smd_datagrams: 0,
            l1: 0,
            chunks: Vec::new(),
        })
    }

    /// Appends one datagram built by `fill` and its smd record.
    fn put(&mut self, service: TransitionId, timestamp: u64, env: u32, fill: &mut dyn FnMut(&mut DgramWriter)) -> Result<(), SimError> {
        let start = self.big.len();
        let mut w = DgramWriter::begin(&mut self.big, service, timestamp, env);
        fill(&mut w);
        let size = w.finish() as u64;
        let smd_start = self.smd.len();
        write_smd(&mut self.smd, &self.big[start..], self.chunk_len, &self.smdinfo);
        self.smd_len += (self.smd.len() - smd_start) as u64;
        self.smd_datagrams += 1;
        self.chunk_len += size;
        self.chunk_datagrams += 1;
        if service == TransitionId::L1Accept {
            self.chunk_l1 += 1;
            self.l1 += 1;
        }
        if self.big.len() >= FLUSH_BYTES || self.smd.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending bytes: bigdata first, so that every smd record on disk points at
    /// bigdata already on disk.
    fn flush(&mut self) -> Result<(), SimError> {
        if !self.big.is_empty() {
            self.chunk_file.write_all(&self.big).map_err(|e| SimError::io(&self.chunk_path, e))?;
            self.big.clear();
        }
        if !self.smd.is_empty() {
            self.smd_file.write_all(&self.smd).map_err(|e| SimError::io(&self.smd_path, e))?;
            self.smd.clear();
        }
        Ok(())
    }

    /// Completes the current chunk: flushes it, renames it and records it.
    fn close_chunk(&mut self) -> Result<(), SimError> {
        self.flush()?;
        let name = chunk_name(&self.base, self.chunk);
        rename_done(&self.dir.join(&name))?;
        self.chunks.push(FileTruth { file: name, bytes: self.chunk_len, datagrams: self.chunk_datagrams, l1: self.chunk_l1 });
        Ok(())
    }

    /// Closes the current chunk and creates the next one, before the smd record of the Enable
    /// that names it reaches the disk.
    fn next_chunk(&mut self) -> Result<(), SimError> {
        self.close_chunk()?;
        self.chunk += 1;
        (self.chunk_file, self.chunk_path) = create_inprogress(&self.dir.join(chunk_name(&self.base, self.chunk)))?;
        self.chunk_len = 0;
        self.chunk_datagrams = 0;
        self.chunk_l1 = 0;
        Ok(())
    }
}

/// `<base>-c<CCC>.xtc2`, the bare name `chunkinfo` carries.
fn chunk_name(base: &str, chunk: u32) -> String {
    format!("{base}-c{chunk:03}.xtc2")
}

/// The smd file, relative to the run directory.
fn smd_name(base: &str) -> String {
    format!("smalldata/{base}-c000.smd.xtc2")
}

fn inprogress(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".inprogress");
    PathBuf::from(s)
}

fn create_inprogress(path: &Path) -> Result<(File, PathBuf), SimError> {
    let p = inprogress(path);
    let f = File::create(&p).map_err(|e| SimError::io(&p, e))?;
    Ok((f, p))
}

/// Gives a complete file its final name.
fn rename_done(path: &Path) -> Result<(), SimError> {
    std::fs::rename(inprogress(path), path).map_err(|e| SimError::io(path, e))
}

/// A step's truth, accumulated event by event in event order.
struct StepAcc {
    events: u64,
    l1_per_stream: Vec<u64>,
    laser_on: u64,
    xray_on: u64,
    slow_updates: u64,
    diode: f64,
    diode_on: f64,
    diode_off: f64,
    ipm2: f64,
    gmd: f64,
    hsd_area: Option<i64>,
    cam: Option<u64>,
    /// Indexed by FIM segment.
    fim: Vec<f64>,
    first_ts: Option<u64>,
    last_ts: Option<u64>,
}

impl StepAcc {
    /// `streams` as configured, `nodes` with the Jungfrau's.
    fn new(streams: u32, nodes: usize, camera: bool) -> Self {
        StepAcc {
            events: 0,
            l1_per_stream: vec![0; nodes],
            laser_on: 0,
            xray_on: 0,
            slow_updates: 0,
            diode: 0.0,
            diode_on: 0.0,
            diode_off: 0.0,
            ipm2: 0.0,
            gmd: 0.0,
            hsd_area: (streams > 1).then_some(0),
            cam: camera.then_some(0),
            fim: vec![0.0; streams.saturating_sub(2) as usize],
            first_ts: None,
            last_ts: None,
        }
    }

    fn record(&mut self, stream: u32, rec: &L1Record) {
        self.l1_per_stream[stream as usize] += 1;
        if let (Some(a), Some(sum)) = (rec.hsd_area, self.hsd_area.as_mut()) {
            *sum += a;
        }
        if let (Some(c), Some(sum)) = (rec.cam_sum, self.cam.as_mut()) {
            *sum += c;
        }
        if let Some((seg, v)) = rec.fim {
            self.fim[seg as usize] += v;
        }
    }

    fn shot(&mut self, s: &Shot) {
        self.events += 1;
        self.laser_on += u64::from(s.laser_on);
        self.xray_on += u64::from(s.xray_on);
        self.diode += s.diode;
        if s.laser_on {
            self.diode_on += s.diode;
        } else {
            self.diode_off += s.diode;
        }
        self.ipm2 += s.ipm2.sum;
        self.gmd += s.gmd_mj as f64;
        self.first_ts.get_or_insert(s.timestamp);
        self.last_ts = Some(s.timestamp);
    }

    fn finish(self, step: u32, delay_ps: f64) -> StepTruth {
        let mut sums = BTreeMap::from([
            ("diode.raw.signal".to_string(), self.diode),
            ("ipm2.raw.sum".to_string(), self.ipm2),
            ("gmd.raw.millijoulesperpulse".to_string(), self.gmd),
        ]);
        for (seg, v) in self.fim.iter().enumerate() {
            sums.insert(format!("{}.fex.intensity", column_det("fim", seg as u32)), *v);
        }
        let mut int_sums = BTreeMap::new();
        if let Some(a) = self.hsd_area {
            int_sums.insert("hsd.fex.area".to_string(), a);
        }
        if let Some(c) = self.cam {
            int_sums.insert("cam.raw.image".to_string(), c as i64);
        }
        StepTruth {
            step,
            delay_ps,
            step_value: step as f64,
            step_docstring: step_docstring(step),
            events: self.events,
            l1_per_stream: self.l1_per_stream,
            laser_on: self.laser_on,
            xray_on: self.xray_on,
            slow_updates: self.slow_updates,
            sums,
            int_sums,
            diode_signal_laser_on_sum: self.diode_on,
            diode_signal_laser_off_sum: self.diode_off,
            first_timestamp: self.first_ts,
            last_timestamp: self.last_ts,
        }
    }
}

/// The column prefix of a detector segment: `<det>` for segment 0, `<det>_<seg>` otherwise.
pub fn column_det(det: &str, segment: u32) -> String {
    if segment == 0 { det.to_string() } else { format!("{det}_{segment}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_spread_over_steps() {
        let per: Vec<u64> = (0..4).map(|s| events_in_step(10, 4, s)).collect();
        assert_eq!(per, [3, 3, 2, 2]);
        assert_eq!(events_in_step(0, 3, 2), 0);
    }
}
