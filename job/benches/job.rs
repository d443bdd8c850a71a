//! Live-analysis throughput and latency (`cargo bench -p beamtime-job --bench job`).
//!
//! Throughput: a simulated run of `BEAMTIME_BENCH_EVENTS` (default 2 M) events through read →
//! decode → partial → merge, for (a) filter + bin + sum/avg, (b) a 100-bin histogram, (c) a
//! row query; in one process and under mpirun with 1, 2 and 4 workers. Latency: paced runs at
//! 10 kHz and 120 Hz followed live; the age of the newest event when each frame leaves the
//! collector, p50/p99. Results are printed as Markdown for BENCHMARKS.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use job::inproc::{run_inprocess, JobSpec};
use contract::{JobEndpoint, JobMessage};
use contract::Command;

/// As in `beamtime-job`: the in-process runs here are the job's code in this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const QUERIES: &[(&str, &str)] = &[
    ("(a) filter + bin + sum/avg", "SELECT bin(ipm2.raw.sum, 0.25) AS b, count(*) AS n, sum(hsd.fex.area) AS area, avg(diode.raw.signal) AS sig FROM events WHERE gmd.raw.millijoulesperpulse > 0.5 GROUP BY b"),
    ("(b) 100-bin histogram", "SELECT hist(ipm2.raw.sum, 0, 4, 100) AS x, count(*) AS n FROM events"),
    ("(c) row query", "SELECT timestamp, ipm2.raw.sum, diode.raw.signal FROM events WHERE ipm2.raw.sum > 3.9"),
];

fn set(sql: &str) -> Command {
    Command::Set { name: "q".into(), sql: sql.into(), mode: String::new(), generation: 0, save: None }
}

fn bench_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    target.join("bench-job")
}

fn run_of(events: u64) -> sim::Truth {
    let dir = bench_dir().join(format!("run-{events}"));
    let truth = dir.join("tstbench-r0001.truth.json");
    if let Ok(t) = std::fs::read(&truth) {
        if let Ok(t) = serde_json::from_slice::<sim::Truth>(&t) {
            return t;
        }
    }
    eprintln!("writing a simulated run of {events} events into {} …", dir.display());
    let mut cfg = sim::SimConfig::new(&dir);
    cfg.exp = "tstbench".into();
    cfg.events = events;
    cfg.steps = 20;
    cfg.streams = 2;
    cfg.overwrite = true;
    sim::write_run(&cfg).unwrap()
}

fn mpi(spec: &JobSpec, ranks: usize) -> f64 {
    let dir = bench_dir().join("mpi");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = contract::launch::command(None, ranks, spec, &dir.join("job.json")).unwrap();
    cmd.stdout(std::process::Stdio::null());
    let t = Instant::now();
    let s = cmd.status().expect("mpirun");
    assert!(s.success(), "mpirun failed");
    t.elapsed().as_secs_f64()
}

/// Reads every file under `dir` once (into the page cache).
fn warm(dir: &std::path::Path) {
    use std::io::Read;
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut buf = vec![0u8; 1 << 20];
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            warm(&p);
        } else if let Ok(mut f) = std::fs::File::open(&p) {
            while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

/// CPU time of the calling thread.
/// CPU seconds of the whole process: the worker, the reader and polars' own threads.
fn process_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: as thread_cpu_secs.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer; CLOCK_THREAD_CPUTIME_ID is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// One Jungfrau module on every event, through the whole in-process job: raw decoding alone,
/// then `calib` and `image` on top, per CPU-second of the worker thread (side by side in one run).
/// The first batch of `source` through one worker: its update message (what every worker
/// sends the collector), for the query `sql`.
fn one_update(source: &str, sql: &str, calib_dir: Option<PathBuf>) -> Vec<u8> {
    one_report(source, sql, calib_dir, false).0
}

/// A worker's update after one batch; `routed`: as in a merge tree, with its states apart in a
/// states message.
fn one_report(source: &str, sql: &str, calib_dir: Option<PathBuf>, routed: bool) -> (Vec<u8>, Option<Vec<u8>>) {
    let (update, states, _) = one_report_and_frames(source, sql, calib_dir, routed);
    (update, states)
}

/// [`one_report`], and its states as the worker hands them to a combiner on its own rank.
#[allow(clippy::type_complexity)]
fn one_report_and_frames(source: &str, sql: &str, calib_dir: Option<PathBuf>, routed: bool) -> (Vec<u8>, Option<Vec<u8>>, Option<(job::wire::Member, Vec<(job::wire::StatePart, polars::prelude::DataFrame)>)>) {
    let source = xtc::Source::parse(source).unwrap();
    let mut reader = job::Reader::start(&source, 1, job::ReaderOptions { batch_events: 4096, ..Default::default() }).unwrap();
    let msg = loop {
        reader.poll(Duration::from_millis(10));
        if let Some(m) = reader.next_work(0) {
            break m;
        }
    };
    let mut c = job::Collector::new(vec![2]);
    let cmd = c.command(set(sql)).unwrap();
    let mut w = job::Worker::with_calib(calib_dir, Vec::new());
    w.command(&cmd);
    if routed {
        w.states_to = Some(0);
    }
    w.process(&msg).unwrap();
    let update = w.report(false);
    let frames = w.take_state_frames(2, false);
    // The same states again, encoded as they leave a rank.
    w.resend_all();
    let _ = w.report(false);
    (update, w.take_states(2, false), frames)
}

/// What the collector spends per frame with N workers: N updates decoded and stored (each
/// worker reports about once per frame) and the merged, finalized, encoded result.
fn collector_merge(truth: &sim::Truth) {
    let frames: u64 = std::env::var("BEAMTIME_BENCH_JUNGFRAU_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let jf = bench_dir().join(format!("jungfrau-{frames}"));
    let jf_source = format!("exp=tstjfbench:run=1:dir={}", jf.display());
    println!("### Collector: merge cost per frame against the number of workers\n");
    println!("| query | state per worker | 1 worker | 4 | 16 | 64 workers |");
    println!("|---|---|---|---|---|---|");
    let cases: [(&str, &str, &str, Option<PathBuf>); 4] = [
        ("(a) filter + bin + sum/avg", QUERIES[0].1, &truth.source, None),
        ("(b) 100-bin histogram", QUERIES[1].1, &truth.source, None),
        ("1000-bin histogram by step (20 steps)", "SELECT step, hist(ipm2.raw.sum, 0, 4, 1000) AS x, count(*) AS n FROM events GROUP BY step, x", &truth.source, None),
        ("mean image of a Jungfrau module (0.5 Mpx)", "SELECT avg(jungfrau.raw.calib) AS m FROM events", &jf_source, Some(jf.join("calib"))),
    ];
    for (label, sql, source, calib) in cases.clone() {
        let update = one_update(source, sql, calib);
        let mut row = format!("| {label} | {:.1} kB |", update.len() as f64 / 1e3);
        for n in [1, 4, 16, 64] {
            let ranks: Vec<i32> = (2..2 + n).collect();
            let mut c = job::Collector::new(ranks.clone());
            c.command(set(sql)).unwrap();
            let rounds = if update.len() > 1_000_000 { 3 } else { 20 };
            let mut best = f64::INFINITY;
            for _ in 0..rounds {
                let t = Instant::now();
                for &r in &ranks {
                    c.update(r, &update).unwrap();
                }
                let f = c.frames(true, false);
                assert_eq!(f.len(), 1);
                assert!(f[0].header.error.is_none(), "{:?}", f[0].header.error);
                best = best.min(t.elapsed().as_secs_f64());
            }
            row.push_str(&format!(" {:.2} ms |", best * 1e3));
        }
        println!("{row}");
    }
    println!("\n(best of 20 rounds, 3 for the image; a frame period is 100 ms at the default 10 Hz)\n");
    // The same in a merge tree of fan-in 8: a combiner merges its children's states with its
    // own (on its own rank, in parallel with the others); the collector, the combiners'.
    println!("With the merge tree (fan-in 8, the default): per frame, the busiest combiner | the collector\n");
    println!("| query | 16 workers | 64 workers |");
    println!("|---|---|---|");
    for (label, sql, source, calib) in &cases {
        let (update, states, own) = one_report_and_frames(source, sql, calib.clone(), true);
        let states = states.expect("a routed worker's states");
        let (own_member, own_parts) = own.expect("a routed worker's states");
        let mut row = format!("| {label} |");
        for n in [16, 64] {
            let ranks: Vec<i32> = (2..2 + n).collect();
            let tree = job::tree::MergeTree::new(&ranks, 8, 0);
            let cmd = {
                let mut c = job::Collector::new(ranks.clone());
                c.command(set(sql)).unwrap()
            };
            let rounds = if states.len() > 1_000_000 { 3 } else { 20 };
            let (mut combiner_best, mut collector_best) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..rounds {
                // The busiest combiner: the first worker, with the most children.
                let t = Instant::now();
                let mut k = job::combiner::Combiner::new(2, tree.children(2));
                k.command(&cmd);
                // Its own worker's states as they are (never encoded on this rank).
                k.hold(2, vec![own_member.clone()], own_parts.clone());
                for c in tree.children(2) {
                    k.absorb(c, &states).unwrap();
                }
                let (combined, errors) = k.report();
                assert!(errors.is_empty(), "{errors:?}");
                combiner_best = combiner_best.min(t.elapsed().as_secs_f64());
                let mut c = job::Collector::new(ranks.clone());
                c.set_merge_tree(&tree);
                c.command(set(sql)).unwrap();
                let t = Instant::now();
                for &r in &ranks {
                    c.update(r, &update).unwrap();
                    if tree.parent(r) == 0 {
                        c.states(r, &combined).unwrap();
                    }
                }
                let f = c.frames(true, false);
                assert!(f[0].header.error.is_none(), "{:?}", f[0].header.error);
                collector_best = collector_best.min(t.elapsed().as_secs_f64());
            }
            row.push_str(&format!(" {:.2} ms \\| {:.2} ms |", combiner_best * 1e3, collector_best * 1e3));
        }
        println!("{row}");
    }
    println!();
    // The reader alone: small data read and events built into batches, no worker.
    let source = xtc::Source::parse(&truth.source).unwrap();
    let t = Instant::now();
    let cpu = process_cpu_secs();
    let mut reader = job::Reader::start(&source, 1, job::ReaderOptions::default()).unwrap();
    let mut batches = 0;
    while reader.finished().is_none() {
        reader.poll(Duration::from_millis(5));
        while reader.next_work(0).is_some() {
            batches += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let built = reader.counters.events_built.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(built, truth.events);
    println!(
        "Reader alone (no workers): {built} events in {batches} batches, {:.2} M events/s wall clock, {:.2} M events per process CPU-second (psana2's published SMD0 rate: 1.53 M events/s)\n",
        built as f64 / secs / 1e6,
        built as f64 / (process_cpu_secs() - cpu) / 1e6
    );
}

fn jungfrau_through_the_job() {
    let frames: u64 = std::env::var("BEAMTIME_BENCH_JUNGFRAU_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let dir = bench_dir().join(format!("jungfrau-{frames}"));
    let truth_path = dir.join("tstjfbench-r0001.truth.json");
    let truth: sim::Truth = match std::fs::read(&truth_path).ok().and_then(|t| serde_json::from_slice(&t).ok()) {
        Some(t) => t,
        None => {
            eprintln!("writing a simulated run of {frames} Jungfrau frames into {} …", dir.display());
            let mut cfg = sim::SimConfig::new(&dir);
            cfg.exp = "tstjfbench".into();
            cfg.events = frames;
            cfg.steps = 2;
            cfg.streams = 1;
            cfg.jungfrau = 1;
            cfg.jungfrau_every = 1;
            cfg.overwrite = true;
            sim::write_run(&cfg).unwrap()
        }
    };
    warm(&dir);
    println!("### One Jungfrau module per event through the job (in-process, {frames} frames)\n");
    println!("| query | frames per worker CPU-second | per process CPU-second (all threads) | GB/s of raw | wall clock | vs decoding alone |");
    println!("|---|---|---|---|---|---|");
    let queries = [
        (
            "raw decoded",
            "SELECT count(jungfrau.raw.raw) AS n FROM events",
        ),
        (
            "`calib`",
            "SELECT count(jungfrau.raw.calib) AS n FROM events",
        ),
        (
            "`image`",
            "SELECT count(jungfrau.raw.image) AS n FROM events",
        ),
        (
            "(a) `roi_sum(calib, …)` by step",
            "SELECT step, sum(roi_sum(jungfrau.raw.calib, 100, 200, 100, 300)) AS s FROM events GROUP BY step",
        ),
        (
            "`count_above(image, 5)` by step",
            "SELECT step, avg(count_above(jungfrau.raw.image, 5)) AS n FROM events GROUP BY step",
        ),
        (
            "`avg(calib)` by step (mean image)",
            "SELECT step, avg(jungfrau.raw.calib) AS m FROM events GROUP BY step",
        ),
        (
            "(b) `avg(radial(image, …))` by step",
            "SELECT step, avg(radial(jungfrau.raw.image, 515, 257, 0, 500, 100)) AS p FROM events GROUP BY step",
        ),
        (
            "(c) `sum(calib)` (mean image)",
            "SELECT sum(jungfrau.raw.calib) AS s, count(*) AS n FROM events",
        ),
        (
            "`photons(calib, 10)` by step",
            "SELECT step, sum(photons(jungfrau.raw.calib, 10)) AS n FROM events GROUP BY step",
        ),
        (
            "`droplets(calib, 20, 5)` by step",
            "SELECT step, avg(droplets(jungfrau.raw.calib, 20, 5)) AS n FROM events GROUP BY step",
        ),
    ];
    // Each query in turn, three rounds; the best round of each counts (the machine is shared).
    let mut best = [(0f64, f64::INFINITY, 0f64); 10];
    for _round in 0..3 {
        for (k, (label, sql)) in queries.iter().enumerate() {
            // One query only (for profiling): BEAMTIME_BENCH_JUNGFRAU=<part of its label>.
            if std::env::var("BEAMTIME_BENCH_JUNGFRAU").is_ok_and(|only| k > 0 && !label.contains(&only)) {
                continue;
            }
            let mut spec = JobSpec::new(&truth.source);
            spec.queries = vec![set(sql)];
            spec.calib_dir = Some(dir.join("calib").to_string_lossy().into_owned());
            if let Some(ms) = std::env::var("BEAMTIME_BENCH_FLUSH_MS").ok().and_then(|v| v.parse().ok()) {
                spec.flush_ms = ms;
            }
            let t = Instant::now();
            let cpu = thread_cpu_secs();
            let all_cpu = process_cpu_secs();
            let c = run_inprocess(&spec, &mut |_| {}).unwrap();
            let worker_cpu = thread_cpu_secs() - cpu;
            let all_cpu = process_cpu_secs() - all_cpu;
            assert_eq!(c.events_read(), frames);
            let rate = frames as f64 / worker_cpu;
            if rate > best[k].0 {
                best[k] = (rate, t.elapsed().as_secs_f64(), frames as f64 / all_cpu);
            }
        }
    }
    // What every calib/image run spends once on reading the constants (psana's NDArrIO text).
    let load = {
        let spec = detector::DetectorSpec::new("jungfrau", detector::DetectorKind::Jungfrau).unwrap();
        let t = thread_cpu_secs();
        detector::DetectorConstants::from_calib_dir(spec, &dir.join("calib"), "jungfrau", 1, 0).unwrap();
        thread_cpu_secs() - t
    };
    for (k, (label, _)) in queries.iter().enumerate() {
        let (rate, wall, all) = best[k];
        // Per frame, the constants' one-time load left out (it is part of the wall clock).
        let net = if k == 0 { rate } else { frames as f64 / (frames as f64 / rate - load) };
        println!("| {label} | {net:.0} | {all:.0} | {:.2} | {wall:.2} s | {:.2}× |", net * (512 * 1024 * 2) as f64 / 1e9, net / best[0].0);
    }
    println!("\n(best of 3 rounds; per frame without the constants' one-time load, {load:.2} s of CPU for 39 MB of NDArrIO text, which the wall clock includes)\n");
}

/// `--save`: one row per event written by the worker, HDF5 (psana's layout) and Parquet, alone
/// and beside a live aggregate; rates per CPU-second of the worker thread (which also collects,
/// in one process), side by side in one run.
fn save_throughput(truth: &sim::Truth, events: u64) {
    const ROWS: &str = "SELECT ipm2.raw.sum, diode.raw.signal, gmd.raw.millijoulesperpulse, hsd.fex.area, lasr.raw.laser_on FROM events";
    let dir = bench_dir().join("save");
    std::fs::create_dir_all(&dir).unwrap();
    let saved = |name: &str, path: Option<&str>| Command::Set {
        name: name.into(),
        sql: ROWS.into(),
        mode: String::new(),
        generation: 0,
        save: path.map(|p| dir.join(p).to_string_lossy().into_owned()),
    };
    let cases: Vec<(&str, Vec<Command>, Option<&str>)> = vec![
        ("(a) alone (no rows saved)", vec![set(QUERIES[0].1)], None),
        ("(a) + rows saved to .h5", vec![set(QUERIES[0].1), saved("rows", Some("rows.h5"))], Some("rows.h5")),
        ("(a) + rows saved to .parquet", vec![set(QUERIES[0].1), saved("rows", Some("rows.parquet"))], Some("rows.parquet")),
        ("rows to the collector (no --save)", vec![saved("rows", None)], None),
        ("rows saved to .h5", vec![saved("rows", Some("rows.h5"))], Some("rows.h5")),
        ("rows saved to .parquet", vec![saved("rows", Some("rows.parquet"))], Some("rows.parquet")),
    ];
    const ROUNDS: usize = 3;
    println!("### Small data (`--save`): {events} events, 8 columns per row, one worker in one process, median of {ROUNDS} interleaved rounds\n");
    println!("| queries | per worker core | rows/s saved | MB/s written | file |");
    println!("|---|---|---|---|---|");
    // Worker-thread CPU seconds per case and round, the cases interleaved (this machine drifts).
    let mut secs = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (i, (_, queries, _)) in cases.iter().enumerate() {
            let mut spec = JobSpec::new(&truth.source);
            spec.queries = queries.clone();
            let cpu = thread_cpu_secs();
            let c = run_inprocess(&spec, &mut |_| {}).unwrap();
            secs[i].push(thread_cpu_secs() - cpu);
            assert_eq!(c.events_read(), truth.events);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base_rate = events as f64 / median(&mut secs[0].clone());
    for ((label, _, file), mut s) in cases.into_iter().zip(secs) {
        let worker_cpu = median(&mut s);
        let rate = events as f64 / worker_cpu;
        let bytes = file.map(|f| du(&dir.join(f))).unwrap_or(0);
        let (rows, mb) = match file {
            Some(_) => (format!("{:.2} M", rate / 1e6), format!("{:.0}", bytes as f64 / worker_cpu / 1e6)),
            None => ("–".into(), "–".into()),
        };
        let size = file.map_or("–".to_string(), |f| format!("{f}: {:.0} MB", bytes as f64 / 1e6));
        let ratio = if label.starts_with("(a)") { format!(" ({:.2}× (a) alone)", rate / base_rate) } else { String::new() };
        println!("| {label} | {:.2} M ev/s{ratio} | {rows} | {mb} | {size} |", rate / 1e6);
    }
    println!();
}

/// Bytes of a file, or of the files in a folder.
fn du(path: &std::path::Path) -> u64 {
    match std::fs::read_dir(path) {
        Ok(entries) => entries.flatten().map(|e| e.metadata().map_or(0, |m| m.len())).sum(),
        Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench --list
    }
    // SAFETY: set before any thread of ours starts.
    unsafe { std::env::set_var("BEAMTIME_JOB", env!("CARGO_BIN_EXE_beamtime-job")) };
    let events: u64 = std::env::var("BEAMTIME_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let truth = run_of(events);
    // Read the run once so that every query finds it in the page cache (the first query would
    // otherwise also measure the disk).
    warm(&bench_dir().join(format!("run-{events}")));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // In-process only (for profiling and quick ratios): BEAMTIME_BENCH_QUICK=1.
    let quick = std::env::var_os("BEAMTIME_BENCH_QUICK").is_some();
    // Only the small-data section: BEAMTIME_BENCH_SAVE=only.
    if std::env::var("BEAMTIME_BENCH_SAVE").is_ok_and(|v| v == "only") {
        save_throughput(&truth, events);
        return;
    }
    println!("### Throughput: {events} events, {cores} cores\n");
    println!("| query | per worker core | in-process (1 worker) | mpirun 1 worker | mpirun 2 workers | mpirun 4 workers |");
    println!("|---|---|---|---|---|---|");
    // One query only (for profiling): BEAMTIME_BENCH_QUERY=a|b|c.
    let only = std::env::var("BEAMTIME_BENCH_QUERY").ok();
    for (label, sql) in QUERIES {
        if only.as_ref().is_some_and(|q| !label.starts_with(&format!("({q})"))) {
            continue;
        }
        let mut spec = JobSpec::new(&truth.source);
        spec.queries = vec![set(sql)];
        spec.output = Some(bench_dir().join("out.arrow"));
        let t = Instant::now();
        let cpu = thread_cpu_secs();
        let c = run_inprocess(&spec, &mut |_| {}).unwrap();
        // This thread is the worker (and the collector); the reader has its own thread.
        let worker_cpu = thread_cpu_secs() - cpu;
        assert_eq!(c.events_read(), truth.events);
        let inproc = t.elapsed().as_secs_f64();
        let mut row = format!("| {label} | {:.2} M ev/s | {:.2} M ev/s |", events as f64 / worker_cpu / 1e6, events as f64 / inproc / 1e6);
        for workers in [1, 2, 4] {
            if quick {
                break;
            }
            let secs = mpi(&spec, workers + 2);
            row.push_str(&format!(" {:.2} M ev/s |", events as f64 / secs / 1e6));
        }
        println!("{row}");
    }
    println!("\n(per worker core: events per CPU-second of the in-process worker thread, which also collects; the others are wall-clock rates of the whole job, start-up included; under mpirun the reader and the collector are ranks too)\n");
    jungfrau_through_the_job();
    collector_merge(&truth);
    save_throughput(&truth, events);
    if quick {
        return;
    }
    println!("### Live latency: event written → frame leaves the collector\n");
    println!("| rate | frames | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (rate, secs) in [(10_000.0, 10.0), (120.0, 10.0)] {
        let dir = bench_dir().join(format!("live-{rate}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = sim::SimConfig::new(&dir);
        cfg.exp = "tstlat".into();
        cfg.events = (rate * secs) as u64;
        cfg.steps = 2;
        cfg.streams = 2;
        cfg.rate_hz = rate;
        cfg.overwrite = true;
        let c2 = cfg.clone();
        let writer = std::thread::spawn(move || sim::write_run(&c2).unwrap());
        let ep = JobEndpoint::bind().unwrap();
        let mut spec = JobSpec::new(&format!("{}:live", cfg.source()));
        spec.queries = vec![set(QUERIES[0].1)];
        spec.connect = Some(ep.endpoint().to_string());
        spec.frame_rate = 10.0;
        spec.report_ms = 50;
        let dirm = bench_dir().join("mpi-live");
        std::fs::create_dir_all(&dirm).unwrap();
        let mut cmd = contract::launch::command(None, 3, &spec, &dirm.join("job.json")).unwrap();
        cmd.stdout(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut ages = Vec::new();
        let t = Instant::now();
        loop {
            match ep.recv_timeout(Duration::from_millis(200)) {
                Some(Ok(JobMessage::Frame(h, _))) if !h.done && t.elapsed() > Duration::from_secs(1) => {
                    if let Some(a) = h.newest_age_s {
                        ages.push(a);
                    }
                }
                Some(Ok(JobMessage::Finished(_))) => break,
                _ if t.elapsed() > Duration::from_secs(120) => break,
                _ => {}
            }
        }
        let _ = child.wait();
        writer.join().unwrap();
        ages.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q = |p: f64| ages.get(((ages.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN) * 1e3;
        println!("| {rate} Hz | {} | {:.0} ms | {:.0} ms | {:.0} ms |", ages.len(), q(0.5), q(0.99), q(1.0));
    }
}
