//! A simulated run and the offline oracle shared by the job's tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use polars::prelude::*;
use query::{Catalog, LoadOptions};

/// 12 000 events in 6 steps over 3 streams (the third at 1/10 rate), with bigdata chunks
/// switching every ~1 MB, so that workers must follow chunkinfo.
pub fn sim_run() -> &'static sim::Truth {
    static RUN: OnceLock<sim::Truth> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch_dir("run");
        let mut cfg = sim::SimConfig::new(&dir);
        cfg.exp = "tstjob01".into();
        cfg.events = 12_000;
        cfg.steps = 6;
        cfg.streams = 3;
        cfg.chunk_bytes = 1 << 20;
        cfg.overwrite = true;
        sim::write_run(&cfg).expect("simulated run")
    })
}

/// A run of `events` events in 4 steps over 2 streams, written at `rate_hz` (0: as fast as
/// it can) into `dir`, replacing what is there.
pub fn sim_config(dir: impl Into<PathBuf>, exp: &str, events: u64, rate_hz: f64) -> sim::SimConfig {
    let mut cfg = sim::SimConfig::new(dir.into());
    cfg.exp = exp.into();
    cfg.events = events;
    cfg.steps = 4;
    cfg.streams = 2;
    cfg.rate_hz = rate_hz;
    cfg.overwrite = true;
    cfg
}

/// A live query over everything read (mode total).
pub fn set(name: &str, sql: &str) -> contract::Command {
    contract::Command::Set { name: name.into(), sql: sql.into(), mode: String::new(), generation: 0, save: None }
}

pub fn scratch_dir(what: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("beamtime-job-{}", env!("CARGO_CRATE_NAME"))).join(what);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The whole events table, read once by the offline reader.
pub fn catalog() -> &'static Catalog {
    static CAT: OnceLock<Catalog> = OnceLock::new();
    CAT.get_or_init(|| {
        let mut c = Catalog::new();
        c.load_run("events", &sim_run().source, LoadOptions::default()).unwrap();
        c
    })
}

/// Exact for integers and strings, 1e-12 relative for floats; rows compared after sorting.
pub fn assert_same(ours: &DataFrame, oracle: &DataFrame, sort_by: &[&str], what: &str) {
    let sort = |d: &DataFrame| if sort_by.is_empty() { d.clone() } else { d.sort(sort_by.to_vec(), Default::default()).unwrap() };
    let (a, b) = (sort(ours), sort(oracle));
    assert_eq!(a.shape(), b.shape(), "{what}: shape\nours {a}\noracle {b}");
    for (ca, cb) in a.columns().iter().zip(b.columns()) {
        assert_eq!(ca.name(), cb.name(), "{what}: column names");
        let (sa, sb) = (ca.as_materialized_series(), cb.as_materialized_series());
        for i in 0..a.height() {
            let (va, vb) = (sa.get(i).unwrap(), sb.get(i).unwrap());
            let same = match (va.extract::<f64>(), vb.extract::<f64>()) {
                (Some(x), Some(y)) if va.dtype().is_float() || vb.dtype().is_float() => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300),
                (Some(x), Some(y)) => x == y,
                _ => va.is_null() == vb.is_null() && va.to_string() == vb.to_string(),
            };
            assert!(same, "{what}: column {} row {i}: ours {va} oracle {vb}\nours {a}\noracle {b}", ca.name());
        }
    }
}

/// The oracle: `sql` run by polars' own SQL engine over the whole events table (dotted names
/// quoted), not through the live planner that `Catalog::sql` shares with the job.
pub fn oracle(sql: &str) -> DataFrame {
    let events = catalog().get("events").unwrap();
    let columns: Vec<String> = events.get_column_names().iter().map(|c| c.to_string()).collect();
    let quoted = query::rewrite::quote_dotted_names(sql, &|c| columns.iter().any(|k| k == c)).sql;
    let mut ctx = polars::sql::SQLContext::new();
    ctx.register("events", events.clone().lazy());
    ctx.execute(&quoted).and_then(|lf| lf.collect()).unwrap_or_else(|e| panic!("oracle {sql}: {e}"))
}

/// The same values bit for bit (floats by their bits), after sorting: what re-running a
/// notebook must give.
pub fn assert_identical(a: &DataFrame, b: &DataFrame, sort_by: &[&str], what: &str) {
    let sort = |d: &DataFrame| if sort_by.is_empty() { d.clone() } else { d.sort(sort_by.to_vec(), Default::default()).unwrap() };
    let (a, b) = (sort(a), sort(b));
    assert_eq!(a.shape(), b.shape(), "{what}\n{a}\n{b}");
    for (ca, cb) in a.columns().iter().zip(b.columns()) {
        assert_eq!((ca.name(), ca.dtype()), (cb.name(), cb.dtype()), "{what}");
        let (sa, sb) = (ca.as_materialized_series(), cb.as_materialized_series());
        for i in 0..a.height() {
            let (va, vb) = (sa.get(i).unwrap(), sb.get(i).unwrap());
            let same = match (&va, &vb) {
                (AnyValue::Float64(x), AnyValue::Float64(y)) => x.to_bits() == y.to_bits(),
                (AnyValue::Float32(x), AnyValue::Float32(y)) => x.to_bits() == y.to_bits(),
                _ => va.to_string() == vb.to_string(),
            };
            assert!(same, "{what}: column {} row {i}: {va} vs {vb}", ca.name());
        }
    }
}

/// Queries with their oracle SQL (polars over the whole table: float32 cast to double, since
/// polars adds float32 in float32; first/last over rows in timestamp order, since polars'
/// take table order and keep nulls) and the columns to sort by. `fim` is on 1 event in 10.
pub const QUERIES: &[(&str, &str, &[&str])] = &[
    (
        "SELECT step, count(*) AS n, avg(ipm2.raw.sum) AS ipm, sum(hsd.fex.area) AS area, stddev(ipm2.raw.xpos) AS sd FROM events GROUP BY step",
        "SELECT step, count(*) AS n, avg(ipm2.raw.sum::double) AS ipm, sum(hsd.fex.area::double) AS area, stddev(ipm2.raw.xpos::double) AS sd FROM events GROUP BY step",
        &["step"],
    ),
    (
        "SELECT bin(\"scan.step_value\", 0.5) AS d, count(*) AS n, sum(diode.raw.signal) AS s FROM events WHERE gmd.raw.millijoulesperpulse > 0.5 GROUP BY d",
        "SELECT floor(\"scan.step_value\" / 0.5) * 0.5 AS d, count(*) AS n, sum(diode.raw.signal::double) AS s FROM events WHERE gmd.raw.millijoulesperpulse > 0.5 GROUP BY d",
        &["d"],
    ),
    (
        "SELECT hist(ipm2.raw.sum, 0, 4, 100) AS x, count(*) AS n FROM events",
        "SELECT 0 + floor((ipm2.raw.sum - 0) / 0.04) * 0.04 AS x, count(*) AS n FROM events WHERE ipm2.raw.sum >= 0 AND ipm2.raw.sum < 4 GROUP BY x",
        &["x"],
    ),
    (
        // A histogram with values outside [lo, hi) on both sides, of the sparse detector.
        "SELECT hist(fim.fex.intensity, 0.5, 1.5, 20) AS x, count(*) AS n, avg(ipm2.raw.sum) AS i FROM events GROUP BY x",
        "SELECT 0.5 + floor((fim.fex.intensity - 0.5) / 0.05) * 0.05 AS x, count(*) AS n, avg(ipm2.raw.sum::double) AS i FROM events \
         WHERE fim.fex.intensity >= 0.5 AND fim.fex.intensity < 1.5 GROUP BY x",
        &["x"],
    ),
    (
        "SELECT count(fim.fex.intensity) AS nf, min(timestamp) AS t0, max(pulse_id) AS p1, first(step) AS s0, last(step) AS s1 FROM events",
        "SELECT count(fim.fex.intensity) AS nf, min(timestamp) AS t0, max(pulse_id) AS p1, first(step) AS s0, last(step) AS s1 FROM (SELECT * FROM events ORDER BY timestamp)",
        &[],
    ),
    (
        "SELECT step, first(fim.fex.intensity) AS f, last(fim.fex.intensity) AS l, sum(fim.fex.intensity) AS s, var_pop(fim.fex.intensity) AS v FROM events GROUP BY step",
        "SELECT step, first(fim.fex.intensity) AS f, last(fim.fex.intensity) AS l, sum(fim.fex.intensity::double) AS s, \
         var(fim.fex.intensity::double) * (count(fim.fex.intensity) - 1) / count(fim.fex.intensity) AS v \
         FROM (SELECT * FROM events WHERE fim.fex.intensity IS NOT NULL ORDER BY timestamp) GROUP BY step",
        &["step"],
    ),
    (
        "SELECT timestamp, step, ipm2.raw.sum FROM events WHERE ipm2.raw.sum > 3.5",
        "SELECT timestamp, step, ipm2.raw.sum FROM events WHERE ipm2.raw.sum > 3.5",
        &["timestamp"],
    ),
];

/// Runs the job of `spec` under mpirun with `ranks` ranks (its description written into `dir`)
/// and waits at most `limit` for it to end (killed and failed after that).
pub fn run_mpi(spec: &contract::JobSpec, ranks: usize, dir: &std::path::Path, limit: std::time::Duration) -> std::process::ExitStatus {
    // SAFETY: every test sets the same value before launching; nothing reads it concurrently
    // with a different expectation.
    unsafe { std::env::set_var("BEAMTIME_JOB", env!("CARGO_BIN_EXE_beamtime-job")) };
    let mut cmd = contract::launch::command(None, ranks, spec, &dir.join("job.json")).unwrap();
    cmd.stdout(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("mpirun (apt install openmpi-bin libopenmpi-dev)");
    wait_child(&mut child, limit)
}

/// The job's exit status, waiting at most `limit` (killed and failed after that).
pub fn wait_child(child: &mut std::process::Child, limit: std::time::Duration) -> std::process::ExitStatus {
    let t = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("the MPI job did not finish within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
