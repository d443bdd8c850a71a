//! SQL over a simulated run's events table, checked against the simulator's truth file.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{assert_close, catalog, f64s, i64s, sim_run};
use query::polars::prelude::*;
use query::{Catalog, QueryError};

/// The per-step query, quoted or not, equals the truth: counts exactly, sums within 1e-12.
fn check_per_step(df: &DataFrame) {
    let truth = sim_run();
    assert_eq!(df.height(), truth.steps.len());
    assert_eq!(i64s(df, "step"), truth.steps.iter().map(|s| s.step as i64).collect::<Vec<_>>());
    assert_eq!(i64s(df, "n"), truth.steps.iter().map(|s| s.events as i64).collect::<Vec<_>>());
    assert_eq!(i64s(df, "laser"), truth.steps.iter().map(|s| s.laser_on as i64).collect::<Vec<_>>());
    for (i, s) in truth.steps.iter().enumerate() {
        assert_close(f64s(df, "diode")[i].unwrap(), s.sums["diode.raw.signal"], "diode.raw.signal");
        assert_close(f64s(df, "ipm2")[i].unwrap(), s.sums["ipm2.raw.sum"], "ipm2.raw.sum");
        assert_close(f64s(df, "gmd")[i].unwrap(), s.sums["gmd.raw.millijoulesperpulse"], "gmd");
        assert_eq!(i64s(df, "area")[i], s.int_sums["hsd.fex.area"]);
    }
    assert_eq!(i64s(df, "n").iter().sum::<i64>(), 3000);
}

#[test]
fn per_step_sums_equal_the_truth() {
    let quoted = catalog()
        .sql(
            r#"SELECT step, count(*) AS n, sum("diode.raw.signal") AS diode, sum("ipm2.raw.sum") AS ipm2,
                      sum(CAST("gmd.raw.millijoulesperpulse" AS DOUBLE)) AS gmd, sum("hsd.fex.area") AS area,
                      sum("lasr.raw.laser_on") AS laser
               FROM events GROUP BY step ORDER BY step"#,
        )
        .unwrap();
    check_per_step(&quoted);

    let unquoted = catalog()
        .sql(
            "SELECT step, count(*) AS n, sum(diode.raw.signal) AS diode, sum(ipm2.raw.sum) AS ipm2,
                    sum(gmd.raw.millijoulesperpulse::double) AS gmd, sum(hsd.fex.area) AS area,
                    sum(lasr.raw.laser_on) AS laser -- ipm2.raw.sum in a comment stays
             FROM events GROUP BY step ORDER BY step",
        )
        .unwrap();
    check_per_step(&unquoted);
    assert!(quoted.equals_missing(&unquoted));
}

#[test]
fn where_on_laser_on() {
    let truth = sim_run();
    let on = catalog()
        .sql("SELECT step, count(*) AS n, sum(diode.raw.signal) AS s FROM events WHERE lasr.raw.laser_on = 1 GROUP BY step ORDER BY step")
        .unwrap();
    let off = catalog()
        .sql("SELECT step, count(*) AS n, sum(diode.raw.signal) AS s FROM events WHERE NOT lasr.raw.laser_on = 1 GROUP BY step ORDER BY step")
        .unwrap();
    for (i, st) in truth.steps.iter().enumerate() {
        assert_eq!(i64s(&on, "n")[i], st.laser_on as i64);
        assert_eq!(i64s(&off, "n")[i], (st.events - st.laser_on) as i64);
        assert_close(f64s(&on, "s")[i].unwrap(), st.diode_signal_laser_on_sum, "laser-on diode");
        assert_close(f64s(&off, "s")[i].unwrap(), st.diode_signal_laser_off_sum, "laser-off diode");
    }
    // The pump-probe signal: the laser-on mean minus the laser-off mean, per step.
    let diff = catalog()
        .sql(
            "SELECT step, avg(CASE WHEN lasr.raw.laser_on = 1 THEN diode.raw.signal END)
                        - avg(CASE WHEN lasr.raw.laser_on = 0 THEN diode.raw.signal END) AS d
             FROM events GROUP BY step ORDER BY step",
        )
        .unwrap();
    for (i, st) in truth.steps.iter().enumerate() {
        let expect = st.diode_signal_laser_on_sum / st.laser_on as f64
            - st.diode_signal_laser_off_sum / (st.events - st.laser_on) as f64;
        let got = f64s(&diff, "d")[i].unwrap();
        assert!((got - expect).abs() <= 1e-9 * expect.abs().max(1.0), "step {i}: {got} vs {expect}");
    }
}

#[test]
fn scan_and_epics_columns() {
    let truth = sim_run();
    let df = catalog()
        .sql(r#"SELECT step, min(scan.motor) AS lo, max(scan.motor) AS hi, count(DISTINCT "epics.XPP:USR:SAMPLE:NAME") AS names FROM events GROUP BY step ORDER BY step"#)
        .unwrap();
    for (i, st) in truth.steps.iter().enumerate() {
        assert_eq!(f64s(&df, "lo")[i], Some(st.delay_ps));
        assert_eq!(f64s(&df, "hi")[i], Some(st.delay_ps));
        // EPICS values are null until the first SlowUpdate, then one sample name.
        assert!(i64s(&df, "names")[i] <= 1);
    }
    let names = catalog().sql(r#"SELECT DISTINCT "epics.XPP:USR:SAMPLE:NAME" AS name FROM events WHERE "epics.XPP:USR:SAMPLE:NAME" IS NOT NULL"#).unwrap();
    assert_eq!(common::strs(&names, "name"), [Some("Fe(bpy)3 50 mM in H2O".to_string())]);
    // The unquoted form with ':' is matched as well (documented as quoted-only).
    let pv = catalog().sql(r#"SELECT count(*) AS n FROM events WHERE epics.HX2:DVD:GCC:01:PMON > 0"#).unwrap();
    let q = catalog().sql(r#"SELECT count(*) AS n FROM events WHERE "epics.HX2:DVD:GCC:01:PMON" > 0"#).unwrap();
    assert!(pv.equals(&q));
    assert!(i64s(&q, "n")[0] > 0);
}

#[test]
fn join_of_two_tables() {
    let truth = sim_run();
    let mut cat = catalog();
    let steps = DataFrame::new_infer_height(vec![
        Column::new("step".into(), truth.steps.iter().map(|s| s.step as i64).collect::<Vec<_>>()),
        Column::new("delay".into(), truth.steps.iter().map(|s| s.delay_ps).collect::<Vec<_>>()),
    ])
    .unwrap();
    cat.insert("steps", steps).unwrap();
    let df = cat
        .sql(
            "SELECT e.step, s.delay, count(*) AS n, sum(e.ipm2.raw.sum) AS ipm2, max(e.scan.motor) AS motor
             FROM events AS e JOIN steps s ON e.step = s.step
             WHERE s.delay > -1e6
             GROUP BY e.step, s.delay ORDER BY e.step",
        )
        .unwrap();
    assert_eq!(df.height(), truth.steps.len());
    for (i, st) in truth.steps.iter().enumerate() {
        assert_eq!(i64s(&df, "step")[i], st.step as i64);
        assert_eq!(f64s(&df, "delay")[i], Some(st.delay_ps));
        assert_eq!(f64s(&df, "motor")[i], Some(st.delay_ps));
        assert_eq!(i64s(&df, "n")[i], st.events as i64);
        assert_close(f64s(&df, "ipm2")[i].unwrap(), st.sums["ipm2.raw.sum"], "joined ipm2");
    }
    // USING merges the keys under one name.
    let using = cat.sql("SELECT step, count(*) AS n FROM events JOIN steps USING (step) GROUP BY step ORDER BY step").unwrap();
    assert_eq!(i64s(&using, "n"), truth.steps.iter().map(|s| s.events as i64).collect::<Vec<_>>());
    // Polars merges the right-hand key into the left one: the error says so.
    let e = cat.sql("SELECT s.step, count(*) FROM events e JOIN steps s ON e.step = s.step GROUP BY s.step ORDER BY s.step").unwrap_err().to_string();
    assert!(e.contains("s.step is a join key"), "{e}");
}

#[test]
fn read_parquet_of_a_saved_table() {
    let truth = sim_run();
    let cat = catalog();
    let dir = common::scratch_dir("parquet");
    let path = dir.join("events.parquet");
    cat.save("events", &path).unwrap();
    let q = format!("SELECT step, count(*) AS n, sum(ipm2.raw.sum) AS ipm2 FROM read_parquet('{}') GROUP BY step ORDER BY step", path.display());
    let df = cat.sql(&q).unwrap();
    for (i, st) in truth.steps.iter().enumerate() {
        assert_eq!(i64s(&df, "n")[i], st.events as i64);
        assert_close(f64s(&df, "ipm2")[i].unwrap(), st.sums["ipm2.raw.sum"], "ipm2 from parquet");
    }
    // And against a table: the file and the table agree row for row.
    let q = format!(
        "SELECT count(*) AS n FROM events e JOIN read_parquet('{}') f ON e.timestamp = f.timestamp WHERE e.diode.raw.signal = f.diode.raw.signal",
        path.display()
    );
    assert_eq!(i64s(&cat.sql(&q).unwrap(), "n"), [3000]);
    // read_csv and read_ipc too.
    let small = cat.sql("SELECT step, timestamp, diode.raw.signal FROM events WHERE step = 2").unwrap();
    let mut c2 = Catalog::new();
    c2.insert("small", small).unwrap();
    c2.save("small", dir.join("small.csv")).unwrap();
    c2.save("small", dir.join("small.arrow")).unwrap();
    for f in ["read_csv('small.csv')", "read_ipc('small.arrow')"] {
        let q = format!("SELECT count(*) AS n, sum(diode.raw.signal) AS s FROM {}", f.replace("small.", &format!("{}/small.", dir.display())));
        let df = c2.sql(&q).unwrap();
        assert_eq!(i64s(&df, "n"), [truth.steps[2].events as i64], "{f}");
        assert_close(f64s(&df, "s")[0].unwrap(), truth.steps[2].sums["diode.raw.signal"], f);
    }
}

#[test]
fn aggregate_functions() {
    let cat = catalog();
    let df = cat.get("events").unwrap();
    let x: Vec<f64> = f64s(df, "ipm2.raw.sum").into_iter().map(Option::unwrap).collect();
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let mut sorted = x.clone();
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[1499] + sorted[1500]) / 2.0;
    let r = cat
        .sql(
            "SELECT count(ipm2.raw.sum) AS n, sum(ipm2.raw.sum) AS s, avg(ipm2.raw.sum) AS a, min(ipm2.raw.sum) AS lo,
                    max(ipm2.raw.sum) AS hi, stddev(ipm2.raw.sum) AS sd, variance(ipm2.raw.sum) AS v,
                    median(ipm2.raw.sum) AS med, first(ipm2.raw.sum) AS f, last(ipm2.raw.sum) AS l,
                    corr(ipm2.raw.sum, diode.raw.signal) AS c, covar_samp(ipm2.raw.sum, ipm2.raw.sum) AS cv
             FROM events",
        )
        .unwrap();
    let g = |c: &str| f64s(&r, c)[0].unwrap();
    assert_eq!(g("n"), 3000.0);
    assert_close(g("s"), x.iter().sum(), "sum");
    assert!((g("a") - mean).abs() <= 1e-12 * mean.abs());
    assert_eq!(g("lo"), sorted[0]);
    assert_eq!(g("hi"), sorted[2999]);
    assert!((g("v") - var).abs() <= 1e-9 * var, "variance {} vs {var}", g("v"));
    assert!((g("sd") - var.sqrt()).abs() <= 1e-9 * var.sqrt());
    assert!((g("cv") - var).abs() <= 1e-9 * var);
    assert_eq!(g("med"), median);
    assert_eq!(g("f"), x[0]);
    assert_eq!(g("l"), x[2999]);
    assert!(g("c").abs() <= 1.0);
}

#[test]
fn unknown_column_lists_close_names() {
    let cat = catalog();
    for q in [
        r#"SELECT avg("ipm2.raw.sm") FROM events"#,
        "SELECT avg(ipm2.raw.sm) FROM events",
        "SELECT step FROM events WHERE ipm2.raw.sm > 0",
        "SELECT e.ipm2.raw.sm FROM events e",
    ] {
        match cat.sql(q) {
            Err(QueryError::UnknownColumn { column, suggestions }) => {
                assert_eq!(column, "ipm2.raw.sm", "{q}");
                assert_eq!(suggestions.first().map(String::as_str), Some("ipm2.raw.sum"), "{q}");
                assert!(suggestions.len() <= 5);
            },
            other => panic!("{q}: {other:?}"),
        }
    }
    let e = cat.sql("SELECT stepp FROM events").unwrap_err();
    assert_eq!(e.to_string(), r#"unknown column "stepp"; did you mean "step"?"#);
    let e = cat.sql("SELECT diode FROM events").unwrap_err();
    match &e {
        QueryError::UnknownColumn { column, suggestions } => {
            assert_eq!(column, "diode");
            assert_eq!(suggestions, &["diode.raw.signal"]);
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_table_lists_tables() {
    let mut cat = catalog();
    cat.insert("other", DataFrame::new_infer_height(vec![Column::new("x".into(), [1i64])]).unwrap()).unwrap();
    let e = cat.sql("SELECT * FROM evnts").unwrap_err();
    match &e {
        QueryError::UnknownTable { name, available } => {
            assert_eq!(name, "evnts");
            assert_eq!(available, &["events", "other"]);
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(e.to_string(), r#"no table named "evnts"; tables: events, other"#);
    let e = Catalog::new().sql("SELECT 1 FROM t").unwrap_err();
    assert_eq!(e.to_string(), r#"no table named "t"; there are no tables yet"#);
}

#[test]
fn syntax_errors() {
    let cat = catalog();
    for q in ["SELEC step FROM events", "SELECT step FROM events WHERE", "SELECT (step FROM events", "", "  ", "SELECT 'unterminated FROM events"] {
        match cat.sql(q) {
            Err(QueryError::Syntax(m)) => assert!(!m.is_empty()),
            other => panic!("{q:?}: {other:?}"),
        }
    }
    let e = cat.sql("SELEC step FROM events").unwrap_err().to_string();
    assert!(e.starts_with("SQL syntax error: "), "{e}");
    assert!(e.contains("SELEC"), "{e}");
    // Two statements at once.
    assert!(cat.sql("SELECT 1; SELECT 2").is_err());
}

#[test]
fn bad_file_in_sql() {
    let e = catalog().sql("SELECT * FROM read_parquet('/nonexistent/x.parquet')").unwrap_err().to_string();
    assert!(e.contains("/nonexistent/x.parquet") || e.contains("No such file"), "{e}");
}

#[test]
fn cancel() {
    let cat = catalog();
    let q = "SELECT step, count(*) AS n FROM events GROUP BY step ORDER BY step";
    let never = AtomicBool::new(false);
    assert!(cat.sql_with_cancel(q, &never).unwrap().equals(&cat.sql(q).unwrap()));
    // Planning errors come back as they are.
    assert!(matches!(cat.sql_with_cancel("SELECT nope FROM events", &never), Err(QueryError::UnknownColumn { .. })));
    assert!(matches!(cat.sql_with_cancel(q, &AtomicBool::new(true)), Err(QueryError::Cancelled)));

    // A slow query with little memory: 40 cross joins of 9 million pairs each, no rows out
    // (about 2 s); cancelled after 30 ms. Its thread finishes in the background.
    let part = |k: usize| format!("SELECT a.diode.raw.signal AS x FROM events a CROSS JOIN events b WHERE a.diode.raw.signal + b.diode.raw.signal > {k}.5");
    let slow = (0..40).map(part).collect::<Vec<_>>().join(" UNION ALL ");
    let flag = AtomicBool::new(false);
    let t0 = Instant::now();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            flag.store(true, Ordering::Relaxed);
        });
        cat.sql_with_cancel(&slow, &flag)
    });
    assert!(matches!(r, Err(QueryError::Cancelled)), "{r:?}");
    assert!(t0.elapsed() < Duration::from_millis(500), "{:?}", t0.elapsed());
}

#[test]
fn rewrite_is_visible() {
    let cat = catalog();
    assert_eq!(
        cat.rewrite_sql("SELECT avg(ipm2.raw.sum), 'ipm2.raw.sum' FROM events e WHERE e.lasr.raw.laser_on = 1"),
        r#"SELECT avg("ipm2.raw.sum"), 'ipm2.raw.sum' FROM events e WHERE e."lasr.raw.laser_on" = 1"#
    );
}

#[test]
fn arrays_literals_and_duplicate_names() {
    let cat = catalog();
    // Fixed-size arrays take subscripts (1-based) and array functions.
    let df = cat.sql("SELECT cam.raw.image[1] AS first, array_sum(cam.raw.image) AS total, array_length(ipm2.raw.channels) AS n FROM events LIMIT 3").unwrap();
    let events = cat.get("events").unwrap();
    let image = events.column("cam.raw.image").unwrap().cast(&DataType::List(Box::new(DataType::UInt16))).unwrap();
    let image = image.as_materialized_series().list().unwrap().clone();
    for i in 0..3 {
        let row = image.get_as_series(i).unwrap();
        let px: Vec<i64> = row.cast(&DataType::Int64).unwrap().i64().unwrap().iter().map(Option::unwrap).collect();
        assert_eq!(i64s(&df, "first")[i], px[0]);
        assert_eq!(i64s(&df, "total")[i], px.iter().sum::<i64>());
        assert_eq!(i64s(&df, "n")[i], 4);
    }
    // `1e3` is a float literal (polars alone rejects it).
    let df = cat.sql("SELECT count(*) AS n FROM events WHERE step < 1e3 AND scan.motor > -1E+9").unwrap();
    assert_eq!(i64s(&df, "n"), [3000]);
    // Two aggregates of one column need names.
    let e = cat.sql("SELECT min(time), max(time) FROM events").unwrap_err().to_string();
    assert!(e.contains("both be named \"time\"") && e.contains(" AS "), "{e}");
    let df = cat.sql("SELECT min(time) AS t0, max(time) AS t1 FROM events").unwrap();
    assert_eq!(df.column("t0").unwrap().dtype(), &DataType::Datetime(TimeUnit::Nanoseconds, Some(TimeZone::UTC)));
}
