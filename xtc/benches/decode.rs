//! Decode throughput on a simulated run (issue: XTC2 reader, "Performance").
//!
//! Phases, each timed side by side in one process on a run already in the page cache:
//!   read    – read the bigdata files in 4 MiB blocks (what the disk/page cache can deliver),
//!   walk    – every datagram of every bigdata file, its Xtc tree walked (psana's walk),
//!   events  – the run read as psana does (smd event building, bigdata fetched per event) and
//!             every field decoded into Arrow record batches of the `events` table,
//!   xtcreader – psana's C++ reference reader `xtcreader -f` on each bigdata file, if
//!             `XTCREADER=/path/to/xtcreader` is set (it reads each datagram and prints its
//!             header line; it does not walk the tree).
//! Environment: BEAMTIME_BENCH_EVENTS (default 1 000 000), BEAMTIME_BENCH_DIR, BEAMTIME_BENCH_REPEAT.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use xtc::dgram::walk;
use xtc::file::DgramReader;
use xtc::table::{EventsReader, TableOptions};
use xtc::{FormatError, Source, TransitionId};

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn best_of<T>(repeat: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..repeat {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.unwrap())
}

fn main() {
    let events: u64 = env_or("BEAMTIME_BENCH_EVENTS", 1_000_000);
    let repeat: usize = env_or("BEAMTIME_BENCH_REPEAT", 3);
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let dir = PathBuf::from(std::env::var("BEAMTIME_BENCH_DIR").unwrap_or_else(|_| format!("{target}/bench-run-{events}")));
    let mut cfg = sim::SimConfig::new(&dir);
    cfg.events = events;
    cfg.streams = 2;
    cfg.steps = 10;
    cfg.overwrite = true;
    if !cfg.truth_path().exists() {
        eprintln!("writing a simulated run of {events} events into {} …", dir.display());
        sim::write_run(&cfg).expect("simulated run");
    }
    let bigdata = files_in(&dir, ".xtc2");
    let smd = files_in(&dir.join("smalldata"), ".smd.xtc2");
    let big_bytes: u64 = bigdata.iter().map(|p| p.metadata().unwrap().len()).sum();
    let smd_bytes: u64 = smd.iter().map(|p| p.metadata().unwrap().len()).sum();
    let gb = big_bytes as f64 / 1e9;

    // read: the bandwidth the page cache delivers through read(2).
    let (t_read, _) = best_of(repeat, || {
        let mut buf = vec![0u8; 4 << 20];
        let mut n = 0u64;
        for p in &bigdata {
            let mut f = std::fs::File::open(p).unwrap();
            loop {
                let k = f.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
        }
        n
    });

    // walk: every datagram, its tree walked.
    let (t_walk, (walk_l1, nodes)) = best_of(repeat, || {
        let (mut l1, mut nodes) = (0u64, 0u64);
        for p in &bigdata {
            let mut r = DgramReader::open(p).unwrap();
            while let Some((_, dg)) = r.next_dgram().unwrap() {
                if dg.service() == TransitionId::L1Accept {
                    l1 += 1;
                }
                walk(dg.bytes(), &mut |_| {
                    nodes += 1;
                    Ok::<_, FormatError>(())
                })
                .unwrap();
            }
        }
        (l1, nodes)
    });

    // events: event building + bigdata fetch + every field into Arrow batches.
    let source = Source::parse(&format!("exp={}:run={}:dir={}", cfg.exp, cfg.run, dir.display())).unwrap();
    let (t_events, (rows, columns)) = best_of(repeat, || {
        let mut r = EventsReader::open(&source, TableOptions::default()).unwrap();
        let (mut rows, mut cols) = (0usize, 0usize);
        while let Some(b) = r.next_batch().unwrap() {
            rows += b.batch.num_rows();
            cols = b.batch.num_columns();
        }
        (rows, cols)
    });
    assert_eq!(rows as u64, events);

    // events, projected: the three columns a pump-probe query reads (plus the fixed ones).
    let projected = vec!["ipm2.raw.sum".to_string(), "diode.raw.signal".into(), "lasr.raw.laser_on".into()];
    let (t_proj, proj_cols) = best_of(repeat, || {
        let opts = TableOptions { columns: Some(projected.clone()), ..Default::default() };
        let mut r = EventsReader::open(&source, opts).unwrap();
        let (mut rows, mut cols) = (0usize, 0usize);
        while let Some(b) = r.next_batch().unwrap() {
            rows += b.batch.num_rows();
            cols = b.batch.num_columns();
        }
        assert_eq!(rows as u64, events);
        cols
    });

    // psana's C++ reader, when available.
    let xtcreader = std::env::var("XTCREADER").ok().map(|bin| {
        best_of(repeat, || {
            for p in &bigdata {
                let ok = Command::new(&bin).arg("-f").arg(p).stdout(Stdio::null()).status().unwrap().success();
                assert!(ok, "{bin} failed on {}", p.display());
            }
        })
        .0
    });

    let host = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap().trim().to_string()))
        .unwrap_or_default();
    println!("run: {events} events, {} streams, bigdata {:.1} MB in {} files, smd {:.1} MB; {columns} columns", cfg.streams, big_bytes as f64 / 1e6, bigdata.len(), smd_bytes as f64 / 1e6);
    println!("machine: {host}, {} cores; best of {repeat}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!();
    println!("| phase | seconds | events/s | GB/s (bigdata) | vs xtcreader |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, t: f64, ev: u64| {
        let ratio = xtcreader.map(|x| format!("{:.2}× faster", x / t)).unwrap_or_else(|| "—".into());
        println!("| {name} | {t:.3} | {:.2} M | {:.2} | {ratio} |", ev as f64 / t / 1e6, gb / t);
    };
    row("read (page cache → memory, 4 MiB reads)", t_read, events);
    row(&format!("walk every datagram's Xtc tree ({nodes} nodes)"), t_walk, walk_l1);
    row("events table: smd event building + bigdata fetch + every field → Arrow", t_events, events);
    row(&format!("events table projected to {proj_cols} columns (3 detector fields)"), t_proj, events);
    if let Some(x) = xtcreader {
        row("psana `xtcreader -f` (reads each datagram, prints its header)", x, walk_l1);
    }
}
