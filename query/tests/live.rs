//! The exactness oracle of live queries: partial → merge → finalize over random batch splits,
//! any number of workers and any arrival order equals the same SQL run once over the whole
//! table by polars itself (integers exactly, floats within 1e-12 relative: polars adds in
//! f64 with its own rounding), and `%%sql` over the table gives the same bits. Float results
//! are bit-identical across splits and worker counts.

mod common;

use query::polars::prelude::*;
use query::{LiveQuery, QueryError};

/// A small deterministic generator (no dependency needed for shuffles).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

fn columns(df: &DataFrame) -> Vec<String> {
    df.get_column_names().iter().map(|c| c.to_string()).collect()
}

/// Splits `df` into random batches, hands them round-robin to `workers`, each merges its own
/// partials, then the worker states are merged in a shuffled order.
fn live(q: &LiveQuery, df: &DataFrame, workers: usize, rng: &mut Lcg) -> DataFrame {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < df.height() {
        let n = 1 + rng.next(700);
        batches.push(df.slice(at as i64, n.min(df.height() - at)));
        at += n;
    }
    let mut per_worker: Vec<Vec<DataFrame>> = vec![Vec::new(); workers];
    for (i, b) in batches.iter().enumerate() {
        per_worker[i % workers].push(q.partial(b).unwrap());
    }
    let mut states: Vec<DataFrame> = per_worker.iter().filter(|p| !p.is_empty()).map(|p| q.merge(p).unwrap()).collect();
    for i in (1..states.len()).rev() {
        let j = rng.next(i + 1);
        states.swap(i, j);
    }
    q.finalize(&q.merge(&states).unwrap()).unwrap()
}

fn assert_same(ours: &DataFrame, oracle: &DataFrame, sort_by: &[&str], what: &str) {
    let sort = |d: &DataFrame| if sort_by.is_empty() { d.clone() } else { d.sort(sort_by.to_vec(), Default::default()).unwrap() };
    let (a, b) = (sort(ours), sort(oracle));
    assert_eq!(a.shape(), b.shape(), "{what}: shape\nours {a}\noracle {b}");
    for (ca, cb) in a.columns().iter().zip(b.columns()) {
        let (sa, sb) = (ca.as_materialized_series(), cb.as_materialized_series());
        for i in 0..a.height() {
            let (va, vb) = (sa.get(i).unwrap(), sb.get(i).unwrap());
            let (fa, fb) = (va.extract::<f64>(), vb.extract::<f64>());
            let same = match (fa, fb) {
                (Some(x), Some(y)) if va.dtype().is_float() || vb.dtype().is_float() => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300),
                (Some(x), Some(y)) => x == y,
                _ => va.is_null() == vb.is_null() && va.to_string() == vb.to_string(),
            };
            assert!(same, "{what}: column {} row {i}: ours {va} oracle {vb}", ca.name());
        }
    }
}

/// The same values, bit for bit (NaN equal to NaN), after sorting.
fn assert_identical(a: &DataFrame, b: &DataFrame, sort_by: &[&str], what: &str) {
    let sort = |d: &DataFrame| if sort_by.is_empty() { d.clone() } else { d.sort(sort_by.to_vec(), Default::default()).unwrap() };
    let (a, b) = (sort(a), sort(b));
    assert_eq!(a.shape(), b.shape(), "{what}");
    for (ca, cb) in a.columns().iter().zip(b.columns()) {
        assert_eq!(ca.dtype(), cb.dtype(), "{what}: column {}", ca.name());
        let (sa, sb) = (ca.as_materialized_series(), cb.as_materialized_series());
        for i in 0..a.height() {
            let (va, vb) = (sa.get(i).unwrap(), sb.get(i).unwrap());
            let bits = |v: &AnyValue| match v {
                AnyValue::Float64(x) => Some(x.to_bits()),
                AnyValue::Float32(x) => Some(x.to_bits() as u64),
                _ => None,
            };
            let same = match (bits(&va), bits(&vb)) {
                (Some(x), Some(y)) => x == y,
                _ => va.to_string() == vb.to_string(),
            };
            assert!(same, "{what}: column {} row {i}: {va} vs {vb}", ca.name());
        }
    }
}

fn check(sql: &str, oracle_sql: &str, sort_by: &[&str]) {
    let cat = common::catalog();
    let events = cat.get("events").unwrap();
    let q = LiveQuery::plan(sql, &columns(events)).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let oracle = common::polars_sql(events, oracle_sql);
    // %%sql over the whole table: the same numbers as live, to the bit.
    let offline = cat.sql(sql).unwrap_or_else(|e| panic!("%%sql {sql}: {e}"));
    assert_same(&offline, &oracle, sort_by, &format!("%%sql {sql}"));
    let mut rng = Lcg(sql.len() as u64);
    for workers in [1, 2, 4, 8] {
        for round in 0..3 {
            let ours = live(&q, events, workers, &mut rng);
            let what = format!("{sql} [{workers} workers, round {round}]");
            assert_same(&ours, &oracle, sort_by, &what);
            assert_identical(&ours, &offline, sort_by, &what);
        }
    }
}

#[test]
fn scalar_aggregates_over_the_whole_run() {
    let sql = "SELECT count(*) AS n, count(\"epics.HX2:DVD:GCC:01:PMON\") AS n_pv, sum(hsd.fex.area) AS area, \
               avg(diode.raw.signal) AS sig, min(ipm2.raw.sum) AS lo, max(ipm2.raw.sum) AS hi, \
               variance(diode.raw.signal) AS v, stddev(ipm2.raw.sum) AS s FROM events";
    // Polars adds float32 in float32: the oracle adds the same values as float64.
    let oracle = "SELECT count(*) AS n, count(\"epics.HX2:DVD:GCC:01:PMON\") AS n_pv, sum(hsd.fex.area::double) AS area, \
               avg(diode.raw.signal::double) AS sig, min(ipm2.raw.sum) AS lo, max(ipm2.raw.sum) AS hi, \
               variance(diode.raw.signal::double) AS v, stddev(ipm2.raw.sum::double) AS s FROM events";
    check(sql, oracle, &[]);
}

#[test]
fn per_step_laser_on_means_in_order() {
    let sql = "SELECT step, scan.motor AS delay, count(*) AS n, avg(diode.raw.signal) AS sig, sum(gmd.raw.millijoulesperpulse) AS e \
               FROM events WHERE lasr.raw.laser_on = 1 GROUP BY step, scan.motor ORDER BY step";
    let oracle = "SELECT step, scan.motor AS delay, count(*) AS n, avg(diode.raw.signal::double) AS sig, sum(gmd.raw.millijoulesperpulse::double) AS e \
               FROM events WHERE lasr.raw.laser_on = 1 GROUP BY step, scan.motor ORDER BY step";
    check(sql, oracle, &[]);
}

#[test]
fn binned_and_histogrammed() {
    check(
        "SELECT bin(ipm2.raw.sum, 0.5) AS b, count(*) AS n, sum(diode.raw.signal) AS s FROM events GROUP BY b ORDER BY b",
        "SELECT floor(ipm2.raw.sum / 0.5) * 0.5 AS b, count(*) AS n, sum(diode.raw.signal) AS s FROM events GROUP BY b ORDER BY b",
        &[],
    );
    check(
        "SELECT hist(diode.raw.signal, 0, 2, 100) AS h, count(*) AS n FROM events GROUP BY h ORDER BY h",
        "SELECT 0 + floor((diode.raw.signal - 0) / (2.0 / 100)) * (2.0 / 100) AS h, count(*) AS n FROM events \
         WHERE diode.raw.signal >= 0 AND diode.raw.signal < 2 GROUP BY h ORDER BY h",
        &[],
    );
}

#[test]
fn first_and_last_by_timestamp() {
    // The oracle orders the rows by timestamp first: polars' first/last take table order.
    check(
        "SELECT step, first(diode.raw.signal) AS f, last(ipm2.raw.sum) AS l, min(timestamp) AS t0 FROM events GROUP BY step ORDER BY step",
        "SELECT step, first(diode.raw.signal) AS f, last(ipm2.raw.sum) AS l, min(timestamp) AS t0 \
         FROM (SELECT * FROM events ORDER BY timestamp) GROUP BY step ORDER BY step",
        &[],
    );
}

#[test]
fn count_distinct_merges_the_value_sets() {
    check(
        "SELECT count(DISTINCT step) AS steps, count(DISTINCT \"epics.XPP:USR:SAMPLE:NAME\") AS names, count(*) AS n FROM events",
        "SELECT count(DISTINCT step) AS steps, count(DISTINCT \"epics.XPP:USR:SAMPLE:NAME\") AS names, count(*) AS n FROM events",
        &[],
    );
    check(
        "SELECT lasr.raw.laser_on AS on, count(DISTINCT step) AS steps FROM events GROUP BY on",
        "SELECT lasr.raw.laser_on AS on, count(DISTINCT step) AS steps FROM events GROUP BY on",
        &["on"],
    );
}

#[test]
fn row_queries_stream_rows() {
    let sql = "SELECT timestamp, diode.raw.signal FROM events WHERE diode.raw.signal > 1.0 ORDER BY timestamp LIMIT 7";
    check(sql, sql, &[]);
}

#[test]
fn what_cannot_be_merged_says_why_and_what_to_write() {
    let cat = common::catalog();
    let cols = columns(cat.get("events").unwrap());
    let err = |sql: &str| match LiveQuery::plan(sql, &cols) {
        Err(QueryError::NotLive(m)) => m,
        other => panic!("{sql}: expected NotLive, got {other:?}"),
    };
    assert!(err("SELECT median(diode.raw.signal) FROM events").contains("hist("));
    assert!(err("SELECT step, diode.raw.signal FROM events GROUP BY step").contains("neither grouped nor aggregated"));
    assert!(err("SELECT count(*) FROM events e JOIN other o ON e.step = o.step").contains("FROM events"));
    assert!(err("SELECT step, count(*) FROM events GROUP BY step HAVING count(*) > 3").contains("HAVING"));
    assert!(err("SELECT sum(DISTINCT step) FROM events").contains("count(DISTINCT x) is"));
    assert!(matches!(LiveQuery::plan("SELEC 1", &cols), Err(QueryError::Syntax(_))));
}

/// A row query over a window of events: the prune reports the oldest rows it removed when they
/// are a prefix of what was shown (so a display can be sent the change), and None otherwise.
#[test]
fn row_windows_prune_a_prefix_or_say_they_did_not() {
    let cols = vec!["__event".to_string(), "x".to_string()];
    let q = LiveQuery::plan_mode("SELECT x FROM events", &cols, query::LiveMode::Events(160)).unwrap();
    assert!(q.streams_rows());
    let events = |ids: &[u64]| df!("__event" => ids, "x" => ids.iter().map(|i| *i as f64 * 0.5).collect::<Vec<f64>>()).unwrap();
    let all: Vec<u64> = (0..400).collect();
    let rows = q.partial(&events(&all)).unwrap();
    // Bins of 10 events; the newest is 39, so bins 24..=39 stay: events 240..399.
    let (kept, removed) = q.prune_rows(&rows, 350).unwrap();
    assert_eq!(removed, Some(240));
    assert_eq!(kept.height(), 160);
    assert_eq!(q.finalize(&kept).unwrap().column("x").unwrap().f64().unwrap().get(0), Some(120.0));
    // A late row of an old bin between kept ones: what left is not the oldest rows.
    let rows = q.partial(&events(&[300, 50, 310, 400])).unwrap();
    let (kept, removed) = q.prune_rows(&rows, 3).unwrap();
    assert_eq!((kept.height(), removed), (3, None));
    // Everything since the start: nothing leaves.
    let total = LiveQuery::plan("SELECT x FROM events", &cols).unwrap();
    assert_eq!(total.prune_rows(&total.partial(&events(&all)).unwrap(), 400).unwrap().1, Some(0));
    // ORDER BY makes the result something else than the rows in arrival order.
    assert!(!LiveQuery::plan("SELECT x FROM events ORDER BY x", &cols).unwrap().streams_rows());
}

/// A detector on 1 event in 10 (nulls elsewhere), rows out of timestamp order: first/last are
/// the non-null values with the smallest/largest timestamp, hist leaves out-of-range values
/// out, sums of float32 come back in f64 — live at any split, and `%%sql` the same bits.
#[test]
fn a_sparse_detector_live_and_offline() {
    let n = 5000u64;
    // Timestamps in a scrambled order (a permutation of 0..n, times 7).
    let ts: Vec<u64> = (0..n).map(|i| (i * 2654435761) % n * 7 + 1000).collect();
    let x: Vec<Option<f32>> =
        (0..n).map(|i| (i % 10 == 3).then(|| ((i * 37) % 1000) as f32 / 8.0 - 20.0 + if i % 7 == 0 { 1e-3 } else { 0.0 })).collect();
    let step: Vec<u32> = (0..n).map(|i| (i / 1000) as u32).collect();
    let events = df!("timestamp" => &ts, "x" => &x, "step" => &step).unwrap();
    let mut cat = query::Catalog::new();
    cat.insert("events", events.clone()).unwrap();
    let cols = columns(&events);

    // The oracle: walked in the test.
    let present: Vec<(u64, f32, u32)> = (0..n as usize).filter_map(|i| x[i].map(|v| (ts[i], v, step[i]))).collect();
    let first = present.iter().min_by_key(|p| p.0).unwrap().1;
    let last = present.iter().max_by_key(|p| p.0).unwrap().1;
    let sum: f64 = present.iter().map(|p| p.1 as f64).sum(); // values k/8 and ±1e-3: f64 adds them exactly enough
    let in_range = present.iter().filter(|p| p.1 >= 0.0 && p.1 < 50.0).count() as u64;

    let sql = "SELECT first(x) AS f, last(x) AS l, sum(x) AS s, count(x) AS n, avg(x) AS m, stddev(x) AS sd FROM events";
    let q = LiveQuery::plan(sql, &cols).unwrap();
    let offline = cat.sql(sql).unwrap();
    let mut rng = Lcg(99);
    for workers in [1, 2, 4, 8] {
        let ours = live(&q, &events, workers, &mut rng);
        assert_identical(&ours, &offline, &[], &format!("sparse [{workers} workers]"));
    }
    assert_eq!(common::f64s(&offline, "f"), [Some(first as f64)]);
    assert_eq!(common::f64s(&offline, "l"), [Some(last as f64)]);
    assert_eq!(offline.column("s").unwrap().dtype(), &DataType::Float64);
    common::assert_close(common::f64s(&offline, "s")[0].unwrap(), sum, "sum");
    assert_eq!(common::i64s(&offline, "n"), [present.len() as i64]);

    let sql = "SELECT hist(x, 0, 50, 10) AS h, count(*) AS n FROM events GROUP BY h ORDER BY h";
    let q = LiveQuery::plan(sql, &cols).unwrap();
    let offline = cat.sql(sql).unwrap();
    assert!(common::f64s(&offline, "h").iter().all(|h| h.is_some_and(|h| (0.0..50.0).contains(&h))), "{offline}");
    assert_eq!(common::i64s(&offline, "n").iter().sum::<i64>() as u64, in_range);
    for workers in [1, 3, 8] {
        assert_identical(&live(&q, &events, workers, &mut rng), &offline, &["h"], "hist");
    }
}
