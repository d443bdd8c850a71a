//! The catalog: names, order, runs, and save/load round trips through every file format.

mod common;

use common::{catalog, f64s, i64s, sim_run, strs};
use query::polars::prelude::*;
use query::{Catalog, LoadOptions, QueryError};

fn tiny(v: i64) -> DataFrame {
    DataFrame::new_infer_height(vec![Column::new("x".into(), [v, v + 1])]).unwrap()
}

#[test]
fn names_order_replace_remove() {
    let mut c = Catalog::new();
    assert!(c.is_empty());
    for (i, n) in ["zeta", "alpha", "_m1"].iter().enumerate() {
        let info = c.insert(n, tiny(i as i64)).unwrap();
        assert_eq!((info.name.as_str(), info.rows, info.columns), (*n, 2, 1));
        assert_eq!(info.schema, [("x".to_string(), "i64".to_string())]);
    }
    assert_eq!(c.names(), ["zeta", "alpha", "_m1"]);
    // Replacing keeps the place.
    c.insert("zeta", tiny(10)).unwrap();
    assert_eq!(c.names(), ["zeta", "alpha", "_m1"]);
    assert_eq!(i64s(c.get("zeta").unwrap(), "x"), [10, 11]);
    assert_eq!(i64s(&c.remove("alpha").unwrap(), "x"), [1, 2]);
    assert!(c.remove("alpha").is_none());
    assert!(c.get("alpha").is_none());
    assert_eq!(c.list().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["zeta", "_m1"]);
    assert_eq!(c.list()[0].to_string(), "zeta: 2 rows × 1 columns (x i64)");
    assert_eq!(c.len(), 2);
}

#[test]
fn bad_table_names() {
    let mut c = Catalog::new();
    for n in ["", "1abc", "my-table", "a b", "a.b", "événements", "select", "FROM", "where", &"x".repeat(65)] {
        match c.insert(n, tiny(0)) {
            Err(e @ QueryError::InvalidName { .. }) => assert!(e.to_string().starts_with(&format!("invalid table name {n:?}: ")), "{e}"),
            other => panic!("{n:?}: {other:?}"),
        }
    }
    assert!(c.is_empty());
    // Ordinary names, also ones that are SQL words in some contexts.
    for n in ["events", "run14", "T", "data", "_", "steps", "value"] {
        c.insert(n, tiny(0)).unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(i64s(&c.sql(&format!("SELECT sum(x) AS s FROM {n}")).unwrap(), "s"), [1], "{n}");
    }
    let e = c.load_run("bad name", &sim_run().source, LoadOptions::default()).unwrap_err();
    assert!(matches!(e, QueryError::InvalidName { .. }), "{e}");
    let e = c.load_file("9", "x.parquet").unwrap_err();
    assert!(matches!(e, QueryError::InvalidName { .. }), "{e}");
}

#[test]
fn load_run_options_and_errors() {
    let truth = sim_run();
    let mut c = Catalog::new();
    let opts = LoadOptions { batch_size: 1000, columns: Some(vec!["ipm2.raw.sum".into(), "scan.motor".into()]) };
    let info = c.load_run("ipm", &truth.source, opts).unwrap();
    assert_eq!(info.rows as u64, truth.events);
    let names: Vec<&str> = info.schema.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"ipm2.raw.sum") && names.contains(&"scan.motor") && names.contains(&"step"), "{names:?}");
    assert!(!names.contains(&"diode.raw.signal"), "{names:?}");
    let time = info.schema.iter().find(|(n, _)| n == "time").unwrap();
    assert_eq!(time.1, "datetime[ns, UTC]");

    let e = c.load_run("x", "exp=nope:run=1:dir=/nonexistent/dir", LoadOptions::default()).unwrap_err();
    assert!(matches!(e, QueryError::Read { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/dir"), "{e}");
    let e = c.load_run("x", "", LoadOptions::default()).unwrap_err();
    assert!(matches!(e, QueryError::Source { .. } | QueryError::Read { .. }), "{e:?}");
    assert_eq!(c.names(), ["ipm"], "failed loads add nothing");
}

/// A corrupt run: the reader's error (file and byte offset) reaches the user unchanged.
#[test]
fn load_run_corrupt_file_names_file_and_offset() {
    let truth = sim_run();
    let dir = common::scratch_dir("corrupt");
    for e in std::fs::read_dir(&truth.config.dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("smalldata")).unwrap();
    for e in std::fs::read_dir(truth.config.dir.join("smalldata")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join("smalldata").join(p.file_name().unwrap())).unwrap();
    }
    // Corrupt the 10th datagram of stream 0's smd file: a root extent smaller than its header.
    let smd = dir.join("smalldata").join(format!("{}-s000-c000.smd.xtc2", truth.config.run_prefix()));
    let mut bytes = std::fs::read(&smd).unwrap();
    let mut at = 0;
    for _ in 0..10 {
        at += xtc::dgram::dgram_size(&bytes[at..]).unwrap();
    }
    let at = at + 20;
    bytes[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
    std::fs::write(&smd, &bytes).unwrap();
    let src = truth.source.replace(&truth.config.dir.display().to_string(), &dir.display().to_string());
    let e = Catalog::new().load_run("events", &src, LoadOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, QueryError::Read { .. }), "{msg}");
    assert!(msg.contains(&format!("{}: offset {at}: ", smd.display())), "{msg}");
}

fn assert_same_table(a: &DataFrame, b: &DataFrame) {
    assert_eq!(a.schema(), b.schema());
    assert!(a.equals_missing(b), "tables differ");
}

#[test]
fn save_and_load_every_format() {
    let cat = catalog();
    let events = cat.get("events").unwrap().clone();
    let dir = common::scratch_dir("formats");
    let mut c = cat.clone();
    for ext in ["parquet", "arrow", "ipc", "feather", "arrows"] {
        let path = dir.join(format!("events.{ext}"));
        c.save("events", &path).unwrap();
        assert!(!dir.join(format!("events.{ext}.partial")).exists());
        let info = c.load_file(&format!("from_{ext}"), &path).unwrap();
        assert_eq!((info.rows, info.columns), (events.height(), events.width()));
        assert_same_table(&events, c.get(&format!("from_{ext}")).unwrap());
    }

    // CSV holds no arrays: a clear error names them, and no file is left behind.
    let e = c.save("events", dir.join("events.csv")).unwrap_err().to_string();
    assert!(e.contains("cam.raw.image") && e.contains("parquet"), "{e}");
    assert!(!dir.join("events.csv").exists());

    // Scalar columns go through CSV: floats bit for bit, strings, integers, times.
    let scalars = c
        .sql(r#"SELECT timestamp, time, step, diode.raw.signal, gmd.raw.millijoulesperpulse, hsd.fex.peak_ampl, "epics.XPP:USR:SAMPLE:NAME", scan.motor FROM events"#)
        .unwrap();
    c.insert("scalars", scalars.clone()).unwrap();
    let csv = dir.join("scalars.csv");
    c.save("scalars", &csv).unwrap();
    c.load_file("from_csv", &csv).unwrap();
    let back = c.get("from_csv").unwrap();
    assert_eq!(back.get_column_names(), scalars.get_column_names());
    assert_eq!(i64s(back, "timestamp"), i64s(&scalars, "timestamp"));
    assert_eq!(i64s(back, "step"), i64s(&scalars, "step"));
    assert_eq!(i64s(back, "hsd.fex.peak_ampl"), i64s(&scalars, "hsd.fex.peak_ampl"));
    for col in ["diode.raw.signal", "scan.motor"] {
        assert_eq!(f64s(back, col), f64s(&scalars, col), "{col}");
    }
    // An f32 column reads back as f64; its shortest f32 text gives back the same f32.
    let f32s = |df: &DataFrame| df.column("gmd.raw.millijoulesperpulse").unwrap().cast(&DataType::Float32).unwrap();
    assert!(f32s(back).as_materialized_series().equals(f32s(&scalars).as_materialized_series()));
    assert_eq!(strs(back, "epics.XPP:USR:SAMPLE:NAME"), strs(&scalars, "epics.XPP:USR:SAMPLE:NAME"));
    // Times come back as UTC datetimes, to the microsecond (polars' CSV date parser);
    // `timestamp` above keeps the nanoseconds.
    let us = |df: &DataFrame| df.column("time").unwrap().cast(&DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))).unwrap();
    assert_eq!(back.column("time").unwrap().dtype(), &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)));
    assert!(us(back).as_materialized_series().equals(us(&scalars).as_materialized_series()));
}

#[test]
fn file_errors_are_clear() {
    let c = catalog();
    let dir = common::scratch_dir("errors");
    let e = c.save("events", dir.join("events.txt")).unwrap_err().to_string();
    assert!(e.contains("extension .txt") && e.contains(".parquet"), "{e}");
    let e = c.save("events", dir.join("noext")).unwrap_err().to_string();
    assert!(e.contains("no extension"), "{e}");
    let e = c.save("events", dir.join("missing/sub/e.parquet")).unwrap_err().to_string();
    assert!(e.contains("does not exist") && e.contains("missing/sub"), "{e}");
    let e = c.save("nope", dir.join("e.parquet")).unwrap_err();
    assert!(matches!(e, QueryError::UnknownTable { .. }), "{e}");
    let e = c.save("events", &dir).unwrap_err().to_string();
    assert!(e.contains("extension") || e.contains("directory"), "{e}");

    let mut c = c;
    let e = c.load_file("t", dir.join("absent.parquet")).unwrap_err().to_string();
    assert!(e.contains("absent.parquet") && e.contains("No such file"), "{e}");
    std::fs::write(dir.join("junk.parquet"), b"this is not parquet").unwrap();
    std::fs::write(dir.join("junk.arrow"), b"nor arrow").unwrap();
    std::fs::write(dir.join("junk.arrows"), b"nor an arrow stream").unwrap();
    for f in ["junk.parquet", "junk.arrow", "junk.arrows"] {
        let e = c.load_file("t", dir.join(f)).unwrap_err().to_string();
        assert!(e.contains(f) && e.contains("not a readable"), "{e}");
    }
    let e = c.load_file("t", dir.join("x.json")).unwrap_err().to_string();
    assert!(e.contains("extension .json"), "{e}");
    assert!(c.get("t").is_none());
}

#[test]
fn mixed_rate_sample_loads() {
    let mut c = Catalog::new();
    let info = c.load_run("mixed", &common::mixed_rate_source(), LoadOptions::default()).unwrap();
    assert!(info.rows > 0);
    let df = c.sql("SELECT count(*) AS n, count(DISTINCT step) AS steps FROM mixed").unwrap();
    assert_eq!(i64s(&df, "n"), [info.rows as i64]);
}
