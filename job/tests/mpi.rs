//! The job under real `mpirun`: 2, 3 and 5 ranks give the in-process result, bit for bit; a live run is
//! followed while it is written, with frames arriving before it ends; a killed worker is
//! reported while the others finish; a stopped worker shows as stalled.

mod common;

use common::set;

use std::path::Path;
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use job::inproc::{run_inprocess, JobSpec};
use contract::{JobEndpoint, JobMessage};
use contract::{Command, FrameHeader};

/// One MPI job at a time: the machine may have two cores.
static MPI: Mutex<()> = Mutex::new(());

fn launch(spec: &JobSpec, ranks: usize, dir: &Path) -> Child {
    // SAFETY: every test sets the same value before launching; nothing reads it concurrently
    // with a different expectation.
    unsafe { std::env::set_var("BEAMTIME_JOB", env!("CARGO_BIN_EXE_beamtime-job")) };
    let mut cmd = contract::launch::command(None, ranks, spec, &dir.join("job.json")).unwrap();
    cmd.stdout(std::process::Stdio::null());
    cmd.spawn().expect("mpirun (apt install openmpi-bin libopenmpi-dev)")
}

use common::wait_child as wait;

#[test]
fn two_three_and_five_ranks_give_the_in_process_result() {
    let _one = MPI.lock().unwrap_or_else(|e| e.into_inner());
    let (sql, _, sort_by) = common::QUERIES[0];
    let mut spec = JobSpec::new(&common::sim_run().source);
    spec.queries = vec![set("q", sql)];
    spec.batch_events = 1000;
    let reference = run_inprocess(&spec, &mut |_| {}).unwrap();
    let reference = reference.result("q").unwrap().clone();
    for ranks in [2, 3, 5] {
        let dir = common::scratch_dir(&format!("ranks{ranks}"));
        spec.output = Some(dir.join("out.parquet"));
        let mut child = launch(&spec, ranks, &dir);
        assert!(wait(&mut child, Duration::from_secs(120)).success(), "{ranks} ranks");
        let got = query::read_file(&dir.join("out.parquet")).unwrap();
        // The same bits: float sums are exact, whatever the split into ranks and batches.
        common::assert_identical(&got, &reference, sort_by, &format!("{ranks} ranks"));
    }
}

/// Frames from the endpoint until `end` or the limit: (frames, end message).
fn collect(ep: &JobEndpoint, limit: Duration, mut each: impl FnMut(&FrameHeader)) -> (Vec<(FrameHeader, Vec<u8>)>, bool) {
    let t = Instant::now();
    let mut frames = Vec::new();
    while t.elapsed() < limit {
        match ep.recv_timeout(Duration::from_millis(100)) {
            Some(Ok(JobMessage::Frame(h, b))) => {
                each(&h);
                frames.push((h, b));
            }
            Some(Ok(JobMessage::Finished(_))) => return (frames, true),
            _ => {}
        }
    }
    (frames, false)
}

fn live_run(dir: &Path, events: u64, rate: f64) -> (sim::SimConfig, std::thread::JoinHandle<sim::Truth>) {
    let cfg = common::sim_config(dir, "tstlive1", events, rate);
    let c = cfg.clone();
    (cfg, std::thread::spawn(move || sim::write_run(&c).unwrap()))
}

/// A job following `cfg`'s run live with one query, reporting to a fresh endpoint at 10 Hz.
fn follow(cfg: &sim::SimConfig, query: Command) -> (JobEndpoint, JobSpec) {
    let ep = JobEndpoint::bind().unwrap();
    let mut spec = JobSpec::new(&format!("{}:live", cfg.source()));
    spec.queries = vec![query];
    spec.connect = Some(ep.endpoint().to_string());
    spec.frame_rate = 10.0;
    (ep, spec)
}

#[test]
fn a_live_run_is_followed_while_it_is_written() {
    let _one = MPI.lock().unwrap_or_else(|e| e.into_inner());
    let dir = common::scratch_dir("live");
    let (cfg, writer) = live_run(&dir, 6000, 2000.0);
    let (ep, spec) = follow(&cfg, set("per_step", "SELECT step, count(*) AS n, sum(ipm2.raw.sum) AS s FROM events GROUP BY step"));
    let mut child = launch(&spec, 3, &dir);
    let mut during = 0;
    let (frames, ended) = collect(&ep, Duration::from_secs(90), |h| {
        if !writer.is_finished() && h.events_read > 0 {
            during += 1;
        }
    });
    assert!(wait(&mut child, Duration::from_secs(30)).success());
    let truth = writer.join().unwrap();
    assert!(ended, "the job said end");
    assert!(during >= 2, "frames arrived while the run was written ({during})");
    let (last, ipc) = frames.last().unwrap();
    assert!(last.done && last.error.is_none(), "{last:?}");
    assert_eq!(last.events_read, truth.events);
    assert_eq!((last.ranks_alive, last.ranks_total), (1, 1));
    // Frames count up: each later frame has read at least as much.
    assert!(frames.windows(2).all(|w| w[0].0.events_read <= w[1].0.events_read));
    let got = contract::codec::decode(ipc).unwrap();
    let mut cat = query::Catalog::new();
    cat.load_run("events", &cfg.source(), Default::default()).unwrap();
    let oracle = cat.sql("SELECT step, count(*) AS n, sum(\"ipm2.raw.sum\") AS s FROM events GROUP BY step").unwrap();
    common::assert_same(&got, &oracle, &["step"], "live result at the end");
}

#[test]
fn a_killed_worker_is_reported_and_the_others_finish() {
    let _one = MPI.lock().unwrap_or_else(|e| e.into_inner());
    let dir = common::scratch_dir("kill");
    let (cfg, writer) = live_run(&dir, 8000, 2000.0);
    let (ep, spec) = follow(&cfg, set("n", "SELECT count(*) AS n FROM events"));
    let mut child = launch(&spec, 5, &dir);
    // Ranks 2–4 are workers; kill one once it has reported.
    let mut victim = None;
    let t = Instant::now();
    while victim.is_none() && t.elapsed() < Duration::from_secs(30) {
        if let Some(Ok(JobMessage::Frame(h, _))) = ep.recv_timeout(Duration::from_millis(100)) {
            if h.events_read > 500 {
                victim = worker_pids(&spec).get(1).copied();
            }
        }
    }
    let victim = victim.expect("workers running");
    // SAFETY: signalling a process of our own job.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let (frames, ended) = collect(&ep, Duration::from_secs(60), |_| {});
    let status = wait(&mut child, Duration::from_secs(30));
    writer.join().unwrap();
    assert!(ended, "the job ended by itself (status {status})");
    let last = &frames.last().unwrap().0;
    assert_eq!(last.ranks_dead.len(), 1, "{last:?}");
    assert_eq!(last.ranks_alive, 2);
    assert!(last.done);
    // What the dead worker had not reported is counted as dropped, the rest is there.
    assert!(last.events_read + last.events_dropped <= 8000 && last.events_read > 4000, "{last:?}");
}

#[test]
fn a_stopped_worker_shows_as_stalled_while_the_others_go_on() {
    let _one = MPI.lock().unwrap_or_else(|e| e.into_inner());
    let dir = common::scratch_dir("stall");
    let (cfg, writer) = live_run(&dir, 16000, 2000.0);
    let (ep, spec) = follow(&cfg, set("n", "SELECT count(*) AS n FROM events"));
    let mut child = launch(&spec, 4, &dir);
    let t = Instant::now();
    let mut stopped = None;
    let mut seen_stall = None;
    while t.elapsed() < Duration::from_secs(60) && seen_stall.is_none() {
        match ep.recv_timeout(Duration::from_millis(100)) {
            Some(Ok(JobMessage::Frame(h, _))) => {
                if stopped.is_none() && h.events_read > 500 {
                    let pid = worker_pids(&spec)[0];
                    // SAFETY: signalling a process of our own job.
                    unsafe { libc::kill(pid, libc::SIGSTOP) };
                    stopped = Some((pid, h.events_read));
                } else if let Some((_, at_stop)) = stopped {
                    if !h.ranks_stalled.is_empty() {
                        seen_stall = Some(h.clone());
                        assert!(h.events_read > at_stop, "the other worker went on");
                    }
                }
            }
            Some(Ok(JobMessage::Finished(_))) => break,
            _ => {}
        }
    }
    let (pid, _) = stopped.expect("a worker was stopped");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let h = seen_stall.expect("a frame showed the stalled rank");
    assert_eq!(h.ranks_stalled.len(), 1);
    let (frames, ended) = collect(&ep, Duration::from_secs(60), |_| {});
    assert!(wait(&mut child, Duration::from_secs(30)).success());
    let truth = writer.join().unwrap();
    assert!(ended);
    let last = &frames.last().unwrap().0;
    assert!(last.ranks_stalled.is_empty(), "resumed: {last:?}");
    assert_eq!(last.events_read, truth.events, "nothing lost once it resumed");
}

/// The worker ranks' pids (ranks 2 and up), in rank order, from the processes running this
/// job's spec file.
fn worker_pids(spec: &JobSpec) -> Vec<i32> {
    let _ = spec;
    let mut found: Vec<(i32, i32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        if !String::from_utf8_lossy(&cmdline).starts_with(env!("CARGO_BIN_EXE_beamtime-job")) {
            continue;
        }
        let rank = env
            .split(|&b| b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix("OMPI_COMM_WORLD_RANK="))
            .and_then(|r| r.parse().ok());
        if let Some(r) = rank.filter(|&r| r >= 2) {
            found.push((r, pid));
        }
    }
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}
