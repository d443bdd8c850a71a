//! The job in one process (reader → worker → collector, as `--ranks 1` runs it) gives what
//! the same SQL gives over the whole table, for every kind of query, with batches cut small
//! enough that states are merged many times and chunk switches fall inside batches.

mod common;

use job::inproc::{run_inprocess, JobSpec};
use contract::Command;

fn run(sql: &str, mode: &str, batch_events: usize) -> job::Collector {
    let mut spec = JobSpec::new(&common::sim_run().source);
    spec.queries = vec![Command::Set { name: "q".into(), sql: sql.into(), mode: mode.into(), generation: 0, save: None }];
    spec.batch_events = batch_events;
    let mut frames = 0;
    let c = run_inprocess(&spec, &mut |f| {
        frames += 1;
        assert_eq!(f.header.query, "q");
        assert!(f.header.error.is_none(), "{sql}: {:?}", f.header.error);
    })
    .unwrap();
    assert!(frames >= 1, "a final frame is always sent");
    c
}

#[test]
fn every_query_kind_matches_the_offline_result() {
    let cat = common::catalog();
    for (sql, oracle_sql, sort_by) in common::QUERIES {
        let oracle = common::oracle(oracle_sql);
        // %%sql over the whole table: within rounding of polars' result, and the live result
        // must be the same bits at every batch size.
        let offline = cat.sql(sql).unwrap_or_else(|e| panic!("%%sql {sql}: {e}"));
        common::assert_same(&offline, &oracle, sort_by, &format!("%%sql {sql}"));
        for batch in [997, 4096, 12_000] {
            let c = run(sql, "total", batch);
            assert_eq!(c.events_read(), common::sim_run().events, "{sql}: every event read");
            let what = format!("{sql} [batch {batch}]");
            common::assert_same(c.result("q").unwrap(), &oracle, sort_by, &what);
            common::assert_identical(c.result("q").unwrap(), &offline, sort_by, &what);
        }
    }
}

#[test]
fn step_and_run_modes_keep_the_newest_step_and_run() {
    let sql = "SELECT count(*) AS n, sum(ipm2.raw.sum) AS s FROM events";
    let last_step = common::oracle("SELECT max(step) AS m FROM events").column("m").unwrap().u32().unwrap().get(0).unwrap();
    let oracle = common::oracle(&format!("SELECT count(*) AS n, sum(ipm2.raw.sum::double) AS s FROM events WHERE step = {last_step}"));
    let c = run(sql, "step", 1500);
    common::assert_same(c.result("q").unwrap(), &oracle, &[], "step mode");
    let whole = common::oracle("SELECT count(*) AS n, sum(ipm2.raw.sum::double) AS s FROM events");
    let c = run(sql, "run", 1500);
    common::assert_same(c.result("q").unwrap(), &whole, &[], "run mode (one run)");
}

/// psana's timestamp (seconds since the EPICS epoch << 32 | nanoseconds) as ns since 1970.
fn unix_ns(ts: u64) -> i64 {
    const EPICS_EPOCH_UNIX_S: i64 = 631_152_000; // 1990-01-01 UTC
    ((ts >> 32) as i64 + EPICS_EPOCH_UNIX_S) * 1_000_000_000 + (ts & 0xffff_ffff) as i64
}

#[test]
fn a_window_covers_the_newest_events_only() {
    // The simulated run's timestamps show 1 kHz: 12 000 events span 12 s of event time. A
    // window of 2 s is kept as 16 bins of 125 ms of UTC time (bin = ⌊t / 125 ms⌋): the newest
    // bin and the 15 before it. The oracle computes that boundary from the timestamps alone.
    let events = common::catalog().get("events").unwrap();
    let ts: Vec<u64> = events.column("timestamp").unwrap().u64().unwrap().into_no_null_iter().collect();
    let sum: Vec<f64> = events.column("ipm2.raw.sum").unwrap().cast(&polars::prelude::DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().collect();
    let bin = |t: u64| unix_ns(t).div_euclid(125_000_000);
    let newest_bin = ts.iter().map(|&t| bin(t)).max().unwrap();
    let kept: Vec<usize> = (0..ts.len()).filter(|&i| bin(ts[i]) > newest_bin - 16).collect();
    let (t0, t1) = (kept.iter().map(|&i| ts[i]).min().unwrap(), kept.iter().map(|&i| ts[i]).max().unwrap());
    let s: f64 = kept.iter().map(|&i| sum[i]).sum();

    let sql = "SELECT count(*) AS n, min(timestamp) AS t0, max(timestamp) AS t1, sum(ipm2.raw.sum) AS s FROM events";
    let mut first: Option<polars::prelude::DataFrame> = None;
    for batch in [1000, 3001] {
        let c = run(sql, "2s", batch);
        let r = c.result("q").unwrap();
        assert_eq!(r.column("n").unwrap().u64().unwrap().get(0), Some(kept.len() as u64), "batch {batch}\n{r}");
        assert_eq!(r.column("t0").unwrap().u64().unwrap().get(0), Some(t0));
        assert_eq!(r.column("t1").unwrap().u64().unwrap().get(0), Some(t1));
        let ours = r.column("s").unwrap().f64().unwrap().get(0).unwrap();
        assert!((ours - s).abs() <= 1e-12 * s.abs(), "{ours} vs {s}");
        match &first {
            None => first = Some(r.clone()),
            Some(f) => common::assert_identical(r, f, &[], "the window at two batch sizes"),
        }
    }
}

#[test]
fn a_window_of_events_covers_the_newest_events() {
    let cat = common::catalog();
    let c = run("SELECT count(*) AS n, sum(ipm2.raw.sum) AS s FROM events", "3000", 1000);
    let r = c.result("q").unwrap();
    let n = r.column("n").unwrap().u64().unwrap().get(0).unwrap() as usize;
    // Sixteen bins of 187 events: between 15/16 and 16/16 of the window.
    assert!((15 * 187..=3000).contains(&n), "{n}");
    let events = cat.get("events").unwrap().sort(["timestamp"], Default::default()).unwrap();
    let newest = events.tail(Some(n));
    let s: f64 = newest.column("ipm2.raw.sum").unwrap().as_materialized_series().sum::<f64>().unwrap();
    let ours = r.column("s").unwrap().f64().unwrap().get(0).unwrap();
    assert!((ours - s).abs() <= 1e-12 * s.abs(), "{ours} vs {s}");
}

#[test]
fn bad_queries_fail_before_any_data_with_a_reason() {
    let mut spec = JobSpec::new(&common::sim_run().source);
    spec.queries = vec![common::set("q", "SELECT median(ipm2.raw.sum) FROM events")];
    let err = run_inprocess(&spec, &mut |_| {}).err().expect("median cannot be merged");
    assert!(err.contains("median() cannot be merged exactly") && err.contains("hist("), "{err}");
    spec.queries[0] = Command::Set { name: "q".into(), sql: "SELECT count(*) FROM events".into(), mode: "fortnightly".into(), generation: 0, save: None };
    let err = run_inprocess(&spec, &mut |_| {}).err().expect("bad mode");
    assert!(err.contains("mode `fortnightly`"), "{err}");
}

#[test]
fn an_unknown_column_is_reported_in_the_frames_and_names_close_columns() {
    let mut spec = JobSpec::new(&common::sim_run().source);
    spec.queries = vec![common::set("q", "SELECT avg(ipm2.raw.summ) AS x FROM events")];
    let mut last = None;
    run_inprocess(&spec, &mut |f| last = Some(f.header.clone())).unwrap();
    let h = last.unwrap();
    let e = h.error.expect("an error frame");
    assert!(e.starts_with("unknown column `ipm2.raw.summ` in the events table; did you mean ipm2.raw.sum"), "{e}");
    assert!(h.done);
}

#[test]
fn corrupt_small_data_ends_the_job_with_the_file_and_offset() {
    let src = common::sim_run();
    let dir = common::scratch_dir("corrupt");
    // Copy the run and cut stream 0's small data in the middle of a datagram.
    let from = &src.config.dir;
    copy_dir(from, &dir);
    let smd = dir.join("smalldata").join(format!("{}-r{:04}-s000-c000.smd.xtc2", src.config.exp, src.config.run));
    let bytes = std::fs::read(&smd).unwrap();
    let mut cut = bytes.clone();
    // Corrupt an extent in the second half: a datagram claiming 3 GB.
    let at = find_l1(&bytes, bytes.len() / 2);
    cut[at + 20..at + 24].copy_from_slice(&0xC000_0000u32.to_le_bytes());
    std::fs::write(&smd, &cut).unwrap();
    let mut spec = JobSpec::new(&format!("exp={}:run={}:dir={}", src.config.exp, src.config.run, dir.display()));
    spec.queries = vec![common::set("q", "SELECT count(*) AS n FROM events")];
    let c = run_inprocess(&spec, &mut |_| {}).unwrap();
    let e = c.error.clone().expect("the job reports the bad file");
    assert!(e.contains("s000-c000.smd.xtc2") && e.contains(&format!("{}", at + 20)), "{e}");
    // What was read before the damage is kept.
    let n = c.result("q").unwrap().column("n").unwrap().u64().unwrap().get(0).unwrap();
    assert!(n > 0 && n < src.events, "{n}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// The offset of the first L1Accept datagram at or after `from` (walking from the start).
fn find_l1(bytes: &[u8], from: usize) -> usize {
    let mut at = 0;
    loop {
        let size = xtc::dgram::dgram_size(&bytes[at..]).unwrap();
        let dg = xtc::Dgram::new(&bytes[at..at + size]).unwrap();
        if at >= from && dg.service() == xtc::TransitionId::L1Accept {
            return at;
        }
        at += size;
    }
}
