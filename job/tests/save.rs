//! `--save` through the job: per-event rows written by the workers and an aggregate's result
//! saved beside them as a summary in the same HDF5 file (psana's `save_summary`), in one
//! process (one file) and under mpirun (a part per worker, joined). Values against the
//! offline reader's events table.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use contract::Command;
use job::inproc::{run_inprocess, JobSpec};

fn saved(name: &str, sql: &str, path: &Path) -> Command {
    Command::Set { name: name.into(), sql: sql.into(), mode: String::new(), generation: 0, save: Some(path.to_string_lossy().into_owned()) }
}

/// The offline reader's `ipm2.raw.sum` per timestamp, and their exact-as-f64 sum.
fn oracle() -> (BTreeMap<u64, Option<f64>>, f64, usize) {
    let events = common::catalog().sql(r#"SELECT timestamp, "ipm2.raw.sum" AS i0 FROM events"#).unwrap();
    let ts = events.column("timestamp").unwrap().u64().unwrap().clone();
    let i0 = events.column("i0").unwrap().f64().unwrap().clone();
    let by_ts: BTreeMap<u64, Option<f64>> = ts.into_no_null_iter().zip(i0.iter()).collect();
    let present: Vec<f64> = by_ts.values().flatten().copied().collect();
    // The live sum is exact (fixed point): the correctly rounded sum is its oracle.
    let total = present.iter().fold(0.0f64, |a, b| a + b);
    (by_ts, total, present.len())
}

fn spec(paths: &Path) -> JobSpec {
    let mut spec = JobSpec::new(&common::sim_run().source);
    spec.batch_events = 500;
    spec.queries = vec![
        saved("rows", r#"SELECT "ipm2.raw.sum" AS "ipm2.sum" FROM events"#, paths),
        saved("totals", r#"SELECT count(*) AS n, count("ipm2.raw.sum") AS "ipm2.n", sum("ipm2.raw.sum") AS "ipm2.total" FROM events"#, paths),
    ];
    spec
}

fn check(path: &Path, virtual_rows: bool) {
    let (by_ts, total, present) = oracle();
    let f = hdf5::File::open(path).unwrap();
    let ts = f.dataset("timestamp").unwrap();
    assert_eq!(ts.layout() == hdf5::dataset::Layout::Virtual, virtual_rows);
    let ts = ts.read_raw::<i64>().unwrap();
    let i0 = f.dataset("ipm2/sum").unwrap().read_raw::<f64>().unwrap();
    assert_eq!(ts.len(), by_ts.len(), "one row per event");
    for (t, v) in ts.iter().zip(&i0) {
        match by_ts[&(*t as u64)] {
            Some(x) => assert_eq!(*v, x, "timestamp {t}"),
            None => assert!(v.is_nan(), "timestamp {t}: missing is NaN"),
        }
    }
    // The aggregate, as psana's summaries: ordinary datasets of shape (1,).
    let n = f.dataset("n").unwrap();
    assert_eq!((n.shape(), n.layout()), (vec![1], hdf5::dataset::Layout::Contiguous));
    assert_eq!(n.read_raw::<u32>().map(|v| v[0] as usize).or_else(|_| n.read_raw::<i64>().map(|v| v[0] as usize)).unwrap(), by_ts.len());
    assert_eq!(f.dataset("ipm2/n").unwrap().read_raw::<i64>().map(|v| v[0] as usize).or_else(|_| f.dataset("ipm2/n").unwrap().read_raw::<u32>().map(|v| v[0] as usize)).unwrap(), present);
    let got = f.dataset("ipm2/total").unwrap().read_raw::<f64>().unwrap()[0];
    assert!((got - total).abs() <= 1e-12 * total.abs(), "sum {got} vs {total}");
}

#[test]
fn one_process_writes_rows_and_the_summary_into_one_file() {
    let dir = common::scratch_dir("inproc");
    let path = dir.join("run.h5");
    let c = run_inprocess(&spec(&path), &mut |_| {}).unwrap();
    assert!(c.result("rows").is_some_and(|r| r.column("closed").unwrap().bool().unwrap().all()));
    assert!(!dir.join("run_part0.h5").exists(), "one process: psana's serial mode");
    check(&path, false);
}

#[test]
fn workers_write_parts_the_collector_joins_them_and_adds_the_summary() {
    let dir = common::scratch_dir("mpi");
    let path = dir.join("run.h5");
    assert!(common::run_mpi(&spec(&path), 5, &dir, Duration::from_secs(120)).success());
    let parts: Vec<String> = (0..3).map(|i| format!("run_part{i}.h5")).collect();
    for p in &parts {
        assert!(dir.join(p).exists(), "{p}");
    }
    check(&path, true);
}
