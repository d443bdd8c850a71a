//! `beamtime sim`: the command line of the simulated DAQ.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use crate::config::{next_free_run, SimConfig, DEFAULT_EXP};
use crate::run::write_run_with_progress;

const MIB: f64 = (1u64 << 20) as f64;

#[derive(clap::Args, Clone, Debug)]
pub struct SimArgs {
    /// The xtc directory to write into (smd files go to its smalldata/)
    /// [default: beamtime-sim in the system temp directory]
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Experiment name
    #[arg(long, default_value = DEFAULT_EXP)]
    pub exp: String,
    /// Run number [default: the next free one in the directory]
    #[arg(long)]
    pub run: Option<u32>,
    /// L1Accept events in the run
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Scan steps (the pump-probe delay goes from -2 to +3 ps over them)
    #[arg(long, default_value_t = 10)]
    pub steps: u32,
    /// Streams (DRP nodes): s000 beam data, s001 digitizer (+ camera), s002… a FIM at 1/10 rate
    #[arg(long, default_value_t = 2)]
    pub streams: u32,
    /// Events per second of wall time, flushing as it goes so live readers see the files grow;
    /// 0 = as fast as possible (timestamps then show a 1 kHz run)
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seed of every random value and of the model parameters (time zero, width)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Start a new bigdata chunk at the next step once a chunk exceeds this many MiB
    /// (the DAQ's threshold is 500 GiB)
    #[arg(long, default_value_t = 512_000.0)]
    pub chunk_mb: f64,
    /// Also record camera frames of WIDTHxHEIGHT u16 pixels, e.g. 64x48
    #[arg(long, value_name = "WxH", value_parser = parse_image)]
    pub image: Option<(u32, u32)>,
    /// Also record a Jungfrau of N modules of 512x1024 pixels (1 to 8 = a 4M) in a stream of its
    /// own (after the others): detector `jungfrau` as psana's files (alg raw 0.2.0, segment =
    /// module), with real gain switching, and its constants (pedestals, pixel_gain,
    /// pixel_offset, pixel_status, pixel_rms) written for the run into the calib dir
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub jungfrau: u32,
    /// The area detectors (Jungfrau, epix10ka, epixM320, Archon) record every K-th event (1 =
    /// every event; the default, 200 Hz of the 1 kHz timestamps, is odd so that 1 frame in 4 is
    /// a laser-off reference)
    #[arg(long, value_name = "K", default_value_t = crate::config::DEFAULT_JUNGFRAU_EVERY)]
    pub jungfrau_every: u64,
    /// Also record an epix10ka of N panels of 352x384 (4 = a quad `epixquad` as psana's files,
    /// 1 `epix10ka`, 5 to 16 `epix10k2M`) in a stream of its own: raw 2.0.1 and config
    /// (asicPixelConfig, trbit) per segment, ASICs set to FH, FM, FL and auto-ranging gain modes;
    /// constants (pedestals, pixel_gain, pixel_status, pixel_rms; (7, N, 352, 384)) go into the
    /// calib dir
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub epix10ka: u32,
    /// Also record an epixM320 (`epixm`, raw 0.1.0 (4, 192, 384), gain bit 15) in a stream of its
    /// own; pedestals (3, 4, 192, 384) and pixel_status go into the calib dir
    #[arg(long)]
    pub epixm320: bool,
    /// Also record an Archon of ROWS rows (`archon`, raw 1.0.0 `value` (ROWS, 4800): 16 banks of
    /// 264 real and 36 fake columns) in a stream of its own; pedestals go into the calib dir
    #[arg(long, value_name = "ROWS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=512))]
    pub archon: u32,
    /// Give the camera (--image) per-pixel dark levels and gains and write its constants
    /// (pedestals, pixel_gain) into the calib dir (Camera::CalibV1/cam)
    #[arg(long, requires = "image")]
    pub cam_calib: bool,
    /// The calib dir the area detectors' constants go into, in psana's layout
    /// (<DIR>/<Group>/<det>/<ctype>/<run>-end.data, e.g. Jungfrau::CalibV1/jungfrau)
    /// [default: <dir>/calib]
    #[arg(long, value_name = "DIR")]
    pub calib_dir: Option<PathBuf>,
    /// SlowUpdates (EPICS values) per second of data time; 0 = none
    #[arg(long, default_value_t = 1.0)]
    pub slow_hz: f64,
    /// Replace an existing run with the same number even if the simulator did not write it
    /// (an earlier simulated run is always replaced)
    #[arg(long)]
    pub force: bool,
    /// Serve the run live through the DAQ's shared-memory protocol under this tag instead of
    /// writing files (read it with `beamtime dump shmem=TAG`, psana's DataSource(shmem=TAG) or
    /// AMI); each pulse's streams are event-built into one datagram. Waits for the first
    /// client; with --rate 0 it goes as fast as the clients take the events
    #[arg(long, value_name = "TAG")]
    pub shmem: Option<String>,
    /// Client queues = the most clients at a time [--shmem]
    #[arg(long, default_value_t = 1, requires = "shmem")]
    pub clients: usize,
    /// Event buffers (at most /proc/sys/fs/mqueue/msg_max unless root) [--shmem]
    #[arg(long, default_value_t = 8, requires = "shmem")]
    pub buffers: usize,
    /// Bytes per buffer, e.g. 1048576, 0x100000, 4M [default: 1M, or what the largest datagram needs] [--shmem]
    #[arg(long, value_parser = parse_size, requires = "shmem")]
    pub buffer_size: Option<usize>,
    /// Serial mode: every event passes through every client in turn (default: distributed,
    /// each event to one client) [--shmem]
    #[arg(long, requires = "shmem")]
    pub serial: bool,
    /// Unpaced (--rate 0): how long to wait for slow clients to take the events before
    /// publishing anyway, seconds [--shmem]
    #[arg(long, value_name = "S", default_value_t = 1.0, requires = "shmem")]
    pub client_wait: f64,
    /// Serve these xtc2 files as stored instead of simulating, like shmemServer [--shmem]
    #[arg(long, num_args = 1.., value_name = "FILE", requires = "shmem")]
    pub replay: Vec<PathBuf>,
    /// Replay the files this many times; 0 = until stopped [--replay]
    #[arg(long, default_value_t = 1, requires = "replay")]
    pub loops: u64,
}

/// The largest event-built L1Accept of a simulated run, with room for the small detectors.
pub fn largest_event_bytes(cfg: &SimConfig) -> usize {
    let camera = cfg.image.map_or(0, |(w, h)| (w * h) as usize * 2);
    let jungfrau = cfg.jungfrau as usize * crate::jungfrau::MODULE_DATAGRAM_BYTES;
    use crate::area::{ARCHON_COLS, EPIXM_ASIC, EPIXM_ASICS, EPIX_COLS, EPIX_PANEL};
    let epix10ka = cfg.epix10ka as usize * ((EPIX_PANEL + 4 * EPIX_COLS) * 2 + 256);
    let epixm320 = if cfg.epixm320 { EPIXM_ASICS * EPIXM_ASIC * 2 + 256 } else { 0 };
    let archon = if cfg.archon > 0 { cfg.archon as usize * ARCHON_COLS * 2 + 256 } else { 0 };
    camera + jungfrau + epix10ka + epixm320 + archon + (64 << 10)
}

/// The buffer size serving `cfg` takes: `given`, or 1 MiB or what its largest event needs. A
/// given size its events do not fit is an error now, rather than a refused event at every shot.
pub fn shmem_buffer_size(cfg: &SimConfig, given: Option<usize>) -> Result<usize, String> {
    let needed = largest_event_bytes(cfg);
    let enough = needed.max(1 << 20).div_ceil(4096) * 4096;
    match given {
        None => Ok(enough),
        Some(size) if size >= needed => Ok(size),
        Some(size) => {
            let jungfrau = if cfg.jungfrau > 0 { format!(", of which {} Jungfrau module(s) of 1 MiB each", cfg.jungfrau) } else { String::new() };
            Err(format!("--buffer-size {size} is too small: an event of this run takes up to {needed} bytes{jungfrau}; use --buffer-size {enough} or more (or leave it out)"))
        }
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let bad = || format!("'{s}': a size in bytes is expected, e.g. 1048576, 0x100000, 512K or 4M");
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return usize::from_str_radix(hex, 16).map_err(|_| bad());
    }
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        _ => (t, 1),
    };
    num.parse::<usize>().ok().and_then(|n| n.checked_mul(mult)).ok_or_else(bad)
}

fn parse_image(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("'{s}': expected WIDTHxHEIGHT, e.g. 64x48");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?))
}

impl SimArgs {
    /// The run these arguments describe (resolving the default directory and run number).
    pub fn config(&self) -> Result<SimConfig, Box<dyn Error>> {
        let dir = self.dir.clone().unwrap_or_else(|| std::env::temp_dir().join("beamtime-sim"));
        if !(self.chunk_mb.is_finite() && self.chunk_mb >= 0.0) {
            return Err(format!("--chunk-mb {}: a size ≥ 0 is expected", self.chunk_mb).into());
        }
        let mut cfg = SimConfig::new(&dir);
        cfg.exp = self.exp.clone();
        cfg.run = self.run.unwrap_or_else(|| next_free_run(&dir, &self.exp));
        cfg.events = self.events;
        cfg.steps = self.steps;
        cfg.streams = self.streams;
        cfg.rate_hz = self.rate;
        cfg.seed = self.seed;
        cfg.chunk_bytes = (self.chunk_mb * MIB) as u64;
        cfg.image = self.image;
        cfg.jungfrau = self.jungfrau;
        cfg.jungfrau_every = self.jungfrau_every;
        cfg.epix10ka = self.epix10ka;
        cfg.epixm320 = self.epixm320;
        cfg.archon = self.archon;
        cfg.cam_calib = self.cam_calib;
        cfg.calib_dir = self.calib_dir.clone();
        cfg.slow_update_hz = self.slow_hz;
        cfg.overwrite = self.force;
        cfg.validate()?;
        Ok(cfg)
    }
}

pub fn run(args: SimArgs) -> Result<(), Box<dyn Error>> {
    if args.shmem.is_some() {
        return run_shmem(args);
    }
    let cfg = args.config()?;
    let pacing = if cfg.rate_hz > 0.0 { format!("at {} Hz in real time", cfg.rate_hz) } else { "as fast as possible".into() };
    println!(
        "beamtime sim: run {} of {} into {}: {} events, {} steps, {} streams, {pacing}",
        cfg.run,
        cfg.exp,
        cfg.dir.display(),
        cfg.events,
        cfg.steps,
        cfg.streams
    );
    if cfg.rate_hz > 0.0 {
        println!("follow it live with: {}:live", cfg.source());
    }
    let started = Instant::now();
    let truth = write_run_with_progress(&cfg, |p| {
        if p.events < p.total {
            eprintln!("  {} / {} events, step {} of {}, {:.1} s", p.events, p.total, p.step + 1, p.steps, p.elapsed.as_secs_f64());
        }
    })?;
    let secs = started.elapsed().as_secs_f64();
    let bytes: u64 = truth.streams.iter().map(|s| s.smd.bytes + s.chunks.iter().map(|c| c.bytes).sum::<u64>()).sum();
    println!(
        "wrote {} events in {:.2} s ({:.0} events/s, {:.1} MB/s); timestamps {} to {}",
        truth.events,
        secs,
        truth.events as f64 / secs.max(1e-9),
        bytes as f64 / 1e6 / secs.max(1e-9),
        truth.first_time_utc,
        truth.last_time_utc
    );
    for s in &truth.streams {
        let big: u64 = s.chunks.iter().map(|c| c.bytes).sum();
        let names: Vec<&str> = s.chunks.iter().map(|c| c.file.as_str()).collect();
        let chunks = match names.as_slice() {
            [one] => one.to_string(),
            [first, .., last] => format!("{first} … {last}"),
            [] => String::new(),
        };
        println!(
            "  s{:03}: {} L1Accepts, {} chunk(s) {chunks} ({:.1} MB); {} ({:.1} MB)",
            s.stream,
            s.l1,
            s.chunks.len(),
            big as f64 / 1e6,
            s.smd.file,
            s.smd.bytes as f64 / 1e6
        );
    }
    println!("  truth: {}", cfg.truth_path().display());
    println!("read it with: {}", truth.source);
    Ok(())
}

/// `--shmem`: a shared-memory server fed with the simulated run or the replayed files.
fn run_shmem(args: SimArgs) -> Result<(), Box<dyn Error>> {
    let tag = args.shmem.clone().unwrap_or_default();
    let replay = !args.replay.is_empty();
    let cfg = if replay { None } else { Some(args.config()?) };
    let size = match &cfg {
        Some(c) => shmem_buffer_size(c, args.buffer_size)?,
        None => {
            let needed = crate::shmem::largest_datagram(&args.replay)?;
            args.buffer_size.unwrap_or_else(|| (needed.max(1 << 20)).div_ceil(4096) * 4096)
        }
    };
    let mut sc = shmem::ServerConfig::new(&tag);
    sc.n_events = args.buffers;
    sc.n_queues = args.clients;
    sc.buffer_size = size;
    sc.mode = if args.serial { shmem::Mode::Serial } else { shmem::Mode::Distributed };
    // The DAQ's server leaves its segment for the next one (spec §1); the simulator, started and
    // stopped many times on a workstation, removes it on exit (Ctrl-C, SIGTERM or the end) so
    // that /dev/shm (memory) does not fill up. Clients still attached keep their mapping.
    sc.remove_segment_on_drop = true;
    let what = match &cfg {
        Some(c) => format!("run {} of {} ({} events, {} steps, {} streams)", c.run, c.exp, c.events, c.steps, c.streams),
        None => format!("{} file(s), {}", args.replay.len(), if args.loops == 0 { "looping until stopped".to_string() } else { format!("{} time(s)", args.loops) }),
    };
    let pacing = if args.rate > 0.0 { format!("at {} Hz", args.rate) } else { "as fast as the clients take the events".into() };
    if !(args.client_wait.is_finite() && args.client_wait >= 0.0) {
        return Err(format!("--client-wait {}: seconds ≥ 0 expected", args.client_wait).into());
    }
    let client_wait = std::time::Duration::from_secs_f64(args.client_wait);
    // The constants are in place before a client can ask for them.
    if let Some(c) = &cfg {
        crate::run::deploy_constants(c, &crate::run::make_nodes(c))?;
    }
    let server = crate::shmem::start_server(sc, |s| {
        println!(
            "beamtime sim: serving {what} on shared memory '{tag}' ({} × {:.1} MiB buffers, {} client queue(s), {} mode), {pacing}",
            s.config().n_events,
            s.config().buffer_size as f64 / MIB,
            s.config().n_queues,
            if args.serial { "serial" } else { "distributed" }
        );
        println!("waiting for the first client, e.g. `beamtime dump shmem={tag}` (Ctrl-C stops and removes the queues)");
    })?;
    println!("client connected: serving");
    let started = Instant::now();
    let served = match &cfg {
        Some(c) => {
            let (truth, served) = crate::shmem::serve_deployed_run(c, &server, client_wait, |p| {
                if p.events < p.total {
                    eprintln!("  {} / {} events, step {} of {}, {:.1} s", p.events, p.total, p.step + 1, p.steps, p.elapsed.as_secs_f64());
                }
            })?;
            println!("served run {} of {}: {} events, timestamps {} to {}", c.run, c.exp, truth.events, truth.first_time_utc, truth.last_time_utc);
            served
        }
        None => crate::shmem::serve_files(&server, &args.replay, args.rate, args.loops, client_wait, |round, n| eprintln!("  round {round}: {n} datagrams"))?,
    };
    let st = &served.stats;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "events: {} published in {secs:.2} s, {} queued (per queue {:?}), {} stolen from queues, {} dropped (no free buffer), {} dropped (queues full); transitions: {} published, {} skipped; {} refused (too large); clients: {} connected, {} rejected",
        st.events_published,
        st.events_queued,
        st.queued_per_queue,
        st.stolen,
        st.dropped_no_buffer,
        st.dropped_queues_full,
        st.transitions_published,
        st.transitions_skipped,
        served.refused,
        st.clients_accepted,
        st.clients_rejected
    );
    drop(server);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn arguments_make_a_config() {
        let dir = std::env::temp_dir().join("beamtime-sim-cli-test-none");
        let cli = Cli::try_parse_from([
            "sim", "--dir", dir.to_str().unwrap(), "--run", "7", "--events", "50", "--image", "16x8", "--chunk-mb", "0.5", "--rate", "100",
        ])
        .unwrap();
        let cfg = cli.sim.config().unwrap();
        assert_eq!((cfg.run, cfg.events, cfg.image, cfg.chunk_bytes, cfg.rate_hz), (7, 50, Some((16, 8)), 1 << 19, 100.0));
        assert_eq!((cfg.exp.as_str(), cfg.steps, cfg.streams), (DEFAULT_EXP, 10, 2));
        assert_eq!(cfg.source(), format!("exp={DEFAULT_EXP}:run=7:dir={}", dir.display()));
        // No run in an empty directory: run 1.
        let cli = Cli::try_parse_from(["sim", "--dir", dir.to_str().unwrap()]).unwrap();
        assert_eq!(cli.sim.config().unwrap().run, 1);
    }

    #[test]
    fn shmem_buffers_fit_a_jungfrau_event() {
        let mut cfg = SimConfig::new("/nonexistent");
        assert_eq!(shmem_buffer_size(&cfg, None), Ok(1 << 20));
        for (modules, mib) in [(1, 2), (8, 9)] {
            cfg.jungfrau = modules;
            let size = shmem_buffer_size(&cfg, None).unwrap();
            // The raw arrays and every small detector's data.
            assert!(size >= modules as usize * (1 << 20) + (64 << 10) && size <= mib << 20, "{modules} modules: {size}");
            let err = shmem_buffer_size(&cfg, Some(1 << 20)).unwrap_err();
            assert!(err.contains("too small") && err.contains(&format!("{modules} Jungfrau module(s)")) && err.contains(&size.to_string()), "{err}");
            assert_eq!(shmem_buffer_size(&cfg, Some(size)), Ok(size));
        }
    }

    #[test]
    fn bad_arguments_say_why() {
        assert!(parse_image("64").unwrap_err().contains("WIDTHxHEIGHT"));
        assert_eq!(parse_image("64X48"), Ok((64, 48)));
        let cli = Cli::try_parse_from(["sim", "--steps", "0", "--dir", "/nonexistent"]).unwrap();
        assert!(cli.sim.config().unwrap_err().to_string().contains("steps"));
    }
}
