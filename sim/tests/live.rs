//! (c) A real-time run followed by a live reader while it is being written.

mod common;

use std::time::{Duration, Instant};

use sim::{write_run, SimConfig};

#[test]
fn a_live_reader_follows_a_real_time_run_to_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::new(tmp.path());
    cfg.streams = 3;
    cfg.events = 1000;
    cfg.steps = 2;
    cfg.rate_hz = 2000.0; // 0.5 s
    cfg.slow_update_hz = 5.0;
    cfg.chunk_bytes = 16 << 10; // switch chunks while the reader follows
    cfg.seed = 5;
    let source = format!("{}:live:poll_ms=20:max_retries=100", cfg.source());
    let smd0 = tmp.path().join(format!("smalldata/{}-s000-c000.smd.xtc2.inprogress", cfg.run_prefix()));

    let started = Instant::now();
    let writer = {
        let cfg = cfg.clone();
        std::thread::spawn(move || write_run(&cfg))
    };
    let mut writing_at_first_event = None;
    let seen = common::read_run(&source, |n| {
        if n == 1 {
            writing_at_first_event = Some(smd0.exists());
        }
    });
    let truth = writer.join().unwrap().unwrap();
    let took = started.elapsed();

    assert_eq!(writing_at_first_event, Some(true), "the first event was read while the run was being written");
    assert!(took >= Duration::from_millis(499), "1000 events at 2000 Hz take 0.5 s, not {took:?}");
    // Every event, in order, then EndRun; every value as the truth says.
    common::assert_matches_truth(&seen, &truth);
    assert_eq!(truth.transitions["SlowUpdate"], 2);
    assert!(truth.streams.iter().all(|s| s.chunks.len() >= 2), "chunks were switched during the run");
    for s in &truth.streams {
        assert_eq!(seen.l1_files[&s.stream].len(), s.chunks.iter().filter(|c| c.l1 > 0).count());
    }

    // Pacing changes nothing but the wall-clock time: the same run written as fast as possible
    // with the same data rate has the same bytes.
    let fast_dir = tempfile::tempdir().unwrap();
    let mut fast = cfg.clone();
    fast.dir = fast_dir.path().to_path_buf();
    fast.rate_hz = 0.0;
    fast.timestamp_rate_hz = 2000.0;
    // A paced run starts "now": give the unpaced one the same start.
    fast.start_epics_sec = Some((truth.first_timestamp >> 32) as u32);
    let fast_truth = write_run(&fast).unwrap();
    assert_eq!(fast_truth.steps, truth.steps);
    for f in common::files_in(tmp.path()).iter().filter(|f| f.ends_with(".xtc2")) {
        let same = std::fs::read(tmp.path().join(f)).unwrap() == std::fs::read(fast_dir.path().join(f)).unwrap();
        assert!(same, "{f} differs between real-time and as-fast-as-possible writing");
    }
}
