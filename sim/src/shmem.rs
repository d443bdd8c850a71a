//! `beamtime sim --shmem`: the simulated DAQ served live through the DAQ's shared-memory
//! protocol (`shared/spec/shmem.md`), as the monitoring event builder serves it — each pulse's
//! stream datagrams event-built into one — or xtc2 files replayed as `shmemServer` does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmem::{Server, ServerConfig, ServerStats};
use xtc::file::DgramReader;
use xtc::writer::DgramWriter;
use xtc::TransitionId;

use crate::config::SimConfig;
use crate::run::{make_nodes, simulate, Progress, Sink};
use crate::truth::{FileTruth, StreamTruth, Truth};
use crate::SimError;

/// How long an unpaced feeder waits for its clients before publishing anyway, by default: slow
/// clients slow it down, stalled ones do not stop it (`--client-wait`).
pub const DEFAULT_CLIENT_WAIT: Duration = Duration::from_secs(1);

/// Flow control of an unpaced feeder, so that clients that keep up lose nothing and see
/// the datagrams in order: an event waits for a free buffer (the MEB asks the DAQ for the
/// next event only then); a transition waits until the clients have taken the events before
/// it, because a client takes transitions first and drops events older than the last Disable
/// (psana's rule); the first event after a transition waits until they have taken that.
fn wait_for_clients(server: &Server, service: TransitionId, after_transition: bool, wait: Duration) {
    if service.is_event() && !after_transition {
        server.wait_free_buffer(wait);
    } else {
        server.wait_drained(wait);
    }
}

/// What happened to the datagrams a feeder published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// The server's counters at the end.
    pub stats: ServerStats,
    /// Datagrams the server refused (larger than a buffer).
    pub refused: u64,
}

/// Publishes each pulse's stream datagrams as one event-built datagram.
pub struct ShmemSink<'a> {
    server: &'a Server,
    parts: Vec<Vec<u8>>,
    present: Vec<bool>,
    built: Vec<u8>,
    l1: Vec<u64>,
    refused: u64,
    /// Wait for the clients up to this long (unpaced runs), see [`wait_for_clients`].
    flow_control: Option<Duration>,
    last_was_transition: bool,
}

impl<'a> ShmemSink<'a> {
    pub fn new(server: &'a Server, streams: usize, flow_control: Option<Duration>) -> Self {
        ShmemSink {
            server,
            parts: vec![Vec::new(); streams],
            present: vec![false; streams],
            built: Vec::new(),
            l1: vec![0; streams],
            refused: 0,
            flow_control,
            last_was_transition: false,
        }
    }

    fn publish(&mut self, dg: &[u8]) {
        let service = xtc::Dgram::new(dg).map(|d| d.service()).unwrap_or(TransitionId::L1Accept);
        if let Some(wait) = self.flow_control {
            wait_for_clients(self.server, service, self.last_was_transition, wait);
        }
        self.last_was_transition = !service.is_event();
        if let Err(e) = self.server.publish(dg) {
            self.refused += 1;
            if self.refused == 1 {
                eprintln!("warning: {e} (further refusals are only counted)");
            }
        }
    }
}

impl Sink for ShmemSink<'_> {
    fn put(&mut self, stream: usize, service: TransitionId, timestamp: u64, env: u32, fill: &mut dyn FnMut(&mut DgramWriter)) -> Result<(), SimError> {
        let buf = &mut self.parts[stream];
        buf.clear();
        let mut w = DgramWriter::begin(buf, service, timestamp, env);
        fill(&mut w);
        w.finish();
        self.present[stream] = true;
        if service == TransitionId::L1Accept {
            self.l1[stream] += 1;
        }
        Ok(())
    }

    fn end_pulse(&mut self) -> Result<(), SimError> {
        let parts: Vec<&[u8]> = self.parts.iter().zip(&self.present).filter(|(_, p)| **p).map(|(b, _)| b.as_slice()).collect();
        let mut built = std::mem::take(&mut self.built);
        built.clear();
        shmem::event_build_into(&mut built, 0, &parts)?;
        self.present.iter_mut().for_each(|p| *p = false);
        self.publish(&built);
        self.built = built;
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<StreamTruth>, SimError> {
        let none = || FileTruth { file: String::new(), bytes: 0, datagrams: 0, l1: 0 };
        Ok(self
            .l1
            .iter()
            .enumerate()
            .map(|(s, &l1)| StreamTruth {
                stream: s as u32,
                l1,
                l1_every: 1, // the node's, set by `simulate`
                chunks: Vec::new(),
                smd: none(),
            })
            .collect())
    }
}

/// Starts the server and waits for its first client, as `shmemServer` does before serving.
pub fn start_server(config: ServerConfig, mut waiting: impl FnMut(&Server)) -> Result<Server, SimError> {
    let server = Server::start(config)?;
    waiting(&server);
    while !server.wait_for_clients(1, Duration::from_secs(1)) {}
    Ok(server)
}

/// Serves the simulated run of `cfg` to `server`'s clients; returns its truth (not saved:
/// nothing is written) and what the server did. Unpaced runs (`rate_hz` 0) go as fast as
/// the clients take the events; paced ones never wait for them (as the DAQ).
pub fn serve_run(cfg: &SimConfig, server: &Server, progress: impl FnMut(&Progress)) -> Result<(Truth, Served), SimError> {
    cfg.validate()?;
    // Constants go to files even when the data does not: a live reader calibrates with them.
    crate::run::deploy_constants(cfg, &make_nodes(cfg))?;
    serve_deployed_run(cfg, server, DEFAULT_CLIENT_WAIT, progress)
}

/// [`serve_run`] once the run's constants are deployed (`beamtime sim` writes them before its
/// first client connects); an unpaced feeder waits up to `client_wait` for its clients.
pub fn serve_deployed_run(
    cfg: &SimConfig,
    server: &Server,
    client_wait: Duration,
    progress: impl FnMut(&Progress),
) -> Result<(Truth, Served), SimError> {
    cfg.validate()?;
    let nodes = make_nodes(cfg);
    // One part per node: a Jungfrau's stream comes on top of `cfg.streams`.
    let mut sink = ShmemSink::new(server, nodes.len(), (cfg.rate_hz == 0.0).then_some(client_wait));
    let truth = simulate(cfg, nodes, &mut sink, progress)?;
    // Let the clients take the end of the run before the queues go away.
    server.wait_drained(Duration::from_secs(5));
    Ok((truth, Served { stats: server.stats(), refused: sink.refused }))
}

/// The largest datagram in `files` (to size the buffers of a replay).
pub fn largest_datagram(files: &[PathBuf]) -> Result<usize, SimError> {
    let mut largest = 0;
    for f in files {
        let mut r = DgramReader::open(f).map_err(|e| SimError::Config(e.to_string()))?;
        while let Some((_, dg)) = r.next_dgram().map_err(|e| SimError::Config(e.to_string()))? {
            largest = largest.max(dg.bytes().len());
        }
    }
    Ok(largest)
}

/// Replays `files` in order `loops` times (0 = forever), each datagram as stored, like
/// `shmemServer`: at `rate_hz` datagrams per second (transitions included), or, at 0, as
/// fast as the clients take the events.
pub fn serve_files(
    server: &Server,
    files: &[PathBuf],
    rate_hz: f64,
    loops: u64,
    client_wait: Duration,
    mut progress: impl FnMut(u64, u64),
) -> Result<Served, SimError> {
    let started = Instant::now();
    let (mut n, mut refused, mut last_report) = (0u64, 0u64, Instant::now());
    let mut round = 0u64;
    let mut after_transition = false;
    while loops == 0 || round < loops {
        round += 1;
        for f in files {
            let mut r = DgramReader::open(f).map_err(|e| SimError::Config(e.to_string()))?;
            while let Some((_, dg)) = r.next_dgram().map_err(|e| SimError::Config(e.to_string()))? {
                if rate_hz > 0.0 {
                    let due = started + Duration::from_secs_f64(n as f64 / rate_hz);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                } else {
                    wait_for_clients(server, dg.service(), after_transition, client_wait);
                }
                after_transition = !dg.service().is_event();
                match server.publish(dg.bytes()) {
                    Ok(_) => {}
                    Err(e) => {
                        refused += 1;
                        if refused == 1 {
                            eprintln!("warning: {}: {e} (further refusals are only counted)", f.display());
                        }
                    }
                }
                n += 1;
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    progress(round, n);
                }
            }
        }
    }
    server.wait_drained(Duration::from_secs(5));
    Ok(Served { stats: server.stats(), refused })
}
