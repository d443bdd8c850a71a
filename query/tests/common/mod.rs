//! A simulated run shared by the tests of one test binary, and small helpers.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use query::polars::prelude::*;
use query::{Catalog, LoadOptions};

/// 3000 events in 5 steps over 2 streams, with 8×4 camera frames (a fixed-size list column).
pub fn sim_run() -> &'static sim::Truth {
    static RUN: OnceLock<sim::Truth> = OnceLock::new();
    RUN.get_or_init(|| {
        // One directory per test binary: binaries run in parallel, tests within one share it.
        let dir = scratch_dir("run");
        let mut cfg = sim::SimConfig::new(&dir);
        cfg.events = 3000;
        cfg.steps = 5;
        cfg.image = Some((8, 4));
        cfg.overwrite = true;
        sim::write_run(&cfg).expect("simulated run")
    })
}

/// A fresh, empty directory for this test binary under cargo's scratch space.
pub fn scratch_dir(what: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("beamtime-query-{}", env!("CARGO_CRATE_NAME"))).join(what);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A catalog holding the simulated run as `events`.
pub fn catalog() -> Catalog {
    static CAT: OnceLock<Catalog> = OnceLock::new();
    CAT.get_or_init(|| {
        let mut c = Catalog::new();
        // An odd batch size: the table is built from many batches.
        let info = c.load_run("events", &sim_run().source, LoadOptions { batch_size: 777, columns: None }).unwrap();
        assert_eq!(info.rows, 3000);
        c
    })
    .clone()
}

/// The sample run in the shared data (2 streams at different rates).
pub fn mixed_rate_source() -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/xtc2/mixed_rate");
    format!("exp=xpptut15:run=14:dir={}", dir.display())
}

pub fn assert_close(a: f64, b: f64, what: &str) {
    let tol = 1e-12 * a.abs().max(b.abs()).max(f64::MIN_POSITIVE);
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b} (difference {})", a - b);
}

pub fn f64s(df: &DataFrame, col: &str) -> Vec<Option<f64>> {
    let c = df.column(col).unwrap_or_else(|e| panic!("{col}: {e}")).cast(&DataType::Float64).unwrap();
    c.f64().unwrap().iter().collect()
}

pub fn i64s(df: &DataFrame, col: &str) -> Vec<i64> {
    let c = df.column(col).unwrap_or_else(|e| panic!("{col}: {e}")).cast(&DataType::Int64).unwrap();
    c.i64().unwrap().iter().map(|v| v.expect("no nulls")).collect()
}

pub fn strs(df: &DataFrame, col: &str) -> Vec<Option<String>> {
    let c = df.column(col).unwrap_or_else(|e| panic!("{col}: {e}")).cast(&DataType::String).unwrap();
    c.str().unwrap().iter().map(|v| v.map(str::to_string)).collect()
}

/// The oracle: `sql` run by polars' own SQL engine over `df` registered as `events` (dotted
/// names quoted), without the live planner that `Catalog::sql` uses for aggregates.
pub fn polars_sql(df: &DataFrame, sql: &str) -> DataFrame {
    let columns: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    let quoted = query::rewrite::quote_dotted_names(sql, &|c| columns.iter().any(|k| k == c)).sql;
    let mut ctx = query::polars::sql::SQLContext::new();
    ctx.register("events", df.clone().lazy());
    ctx.execute(&quoted).and_then(|lf| lf.collect()).unwrap_or_else(|e| panic!("oracle {sql}: {e}"))
}
