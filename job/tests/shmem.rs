//! The job in shared-memory mode against a real server (POSIX shm + mqueues + TCP): every
//! worker is its own client; with buffers enough and a feeder that waits for its clients the
//! result equals the offline result of the same simulated run read from files, in one process
//! and under mpirun with 3 clients; under overload the result is a lower bound and the drop
//! estimate accounts for every event the server did not deliver.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use job::inproc::{run_inprocess, JobSpec};

static ONE: Mutex<()> = Mutex::new(());

const SQL: &str = "SELECT step, count(*) AS n, sum(ipm2.raw.sum) AS s, avg(diode.raw.signal) AS d FROM events GROUP BY step";

fn tag(what: &str) -> String {
    format!("bt_job_{}_{what}", std::process::id())
}

fn config(events: u64, rate: f64, seed: u64) -> sim::SimConfig {
    let mut cfg = common::sim_config(common::scratch_dir(&format!("shmem-files-{seed}")), "tstshm", events, rate);
    cfg.seed = seed;
    cfg.start_epics_sec = Some(1_100_000_000);
    cfg
}

/// The same run read from files, in one process: the oracle.
fn offline(cfg: &sim::SimConfig) -> polars::prelude::DataFrame {
    let mut files = cfg.clone();
    files.rate_hz = 0.0;
    let truth = sim::write_run(&files).unwrap();
    let mut spec = JobSpec::new(&truth.source);
    spec.queries = vec![common::set("q", SQL)];
    run_inprocess(&spec, &mut |_| {}).unwrap().result("q").unwrap().clone()
}

/// At most 10 buffers: the default /proc/sys/fs/mqueue/msg_max (CI may not raise it).
fn server(tag: &str, clients: usize, n_events: usize) -> shmem::Server {
    shmem::Server::start(shmem::ServerConfig {
        tag: tag.into(),
        n_events,
        n_queues: clients,
        buffer_size: 1 << 16,
        mode: shmem::Mode::Distributed,
        verbose: false,
        remove_segment_on_drop: true,
    })
    .expect("shared-memory server")
}

/// Serves `cfg` once `clients` clients are connected; returns the truth and the server's counters.
fn serve(cfg: sim::SimConfig, tag: String, clients: usize, n_events: usize) -> std::thread::JoinHandle<(sim::Truth, shmem::ServerStats)> {
    std::thread::spawn(move || {
        let s = server(&tag, clients, n_events);
        let t = Instant::now();
        while !s.wait_for_clients(clients, Duration::from_millis(200)) {
            assert!(t.elapsed() < Duration::from_secs(60), "the job's clients did not connect");
        }
        let (truth, served) = sim::shmem::serve_run(&cfg, &s, |_| {}).unwrap();
        (truth, served.stats)
    })
}

#[test]
fn one_client_in_process_equals_the_offline_result() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = config(6000, 0.0, 21);
    let want = offline(&cfg);
    let tag = tag("inproc");
    let feeder = serve(cfg, tag.clone(), 1, 8);
    let mut spec = JobSpec::new(&format!("shmem={tag}.0:stop=endrun"));
    spec.queries = vec![common::set("q", SQL)];
    let mut last = None;
    let c = run_inprocess(&spec, &mut |f| last = Some(f.header.clone())).unwrap();
    let (truth, stats) = feeder.join().unwrap();
    assert_eq!(stats.events_published, truth.events);
    assert_eq!(c.events_read(), truth.events);
    let h = last.unwrap();
    assert!(h.done && h.events_dropped == 0, "{h:?}");
    common::assert_same(c.result("q").unwrap(), &want, &["step"], "shared memory, one client");
}

#[test]
fn three_clients_under_mpirun_equal_the_offline_result() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = config(9000, 0.0, 22);
    let want = offline(&cfg);
    let tag = tag("mpi");
    let feeder = serve(cfg, tag.clone(), 3, 9);
    let dir = common::scratch_dir("shmem-mpi");
    let mut spec = JobSpec::new(&format!("shmem={tag}.0:stop=endrun"));
    spec.queries = vec![common::set("q", SQL)];
    spec.output = Some(dir.join("out.parquet"));
    let status = common::run_mpi(&spec, 4, &dir, Duration::from_secs(120));
    let (truth, stats) = feeder.join().unwrap();
    assert!(status.success());
    // Events went to every client, and none was lost.
    assert!(stats.queued_per_queue.iter().all(|&n| n > 0), "{stats:?}");
    assert_eq!(stats.dropped_no_buffer + stats.dropped_queues_full + stats.stolen, 0, "{stats:?}");
    let got = query::read_file(&dir.join("out.parquet")).unwrap();
    assert_eq!(truth.events, 9000);
    common::assert_same(&got, &want, &["step"], "shared memory, three clients under mpirun");
}

#[test]
fn under_overload_the_result_is_a_lower_bound_and_drops_are_counted() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    // Paced far faster than one client takes events through 2 buffers: the server steals.
    let cfg = config(20_000, 50_000.0, 23);
    let tag = tag("overload");
    let feeder = serve(cfg, tag.clone(), 1, 2);
    let mut spec = JobSpec::new(&format!("shmem={tag}.0:stop=endrun"));
    spec.queries = vec![common::set("q", "SELECT count(*) AS n FROM events")];
    let mut last = None;
    let c = run_inprocess(&spec, &mut |f| last = Some(f.header.clone())).unwrap();
    let (truth, stats) = feeder.join().unwrap();
    let h = last.unwrap();
    // The server's account of what it did not deliver: dropped, stolen, taken back at an
    // Enable, or still queued when the client stopped at EndRun (it takes transitions first,
    // as psana does).
    let lost = truth.events - c.events_read();
    assert!(lost > 0, "no overload: {stats:?}");
    let accounted = stats.dropped_no_buffer + stats.dropped_queues_full + stats.stolen + stats.reclaimed_at_enable + stats.recovered_on_disconnect;
    // (A client also drops an event older than the last Disable, psana's rule: a few.)
    assert!(lost >= accounted && lost - accounted <= 5, "lost {lost}, the server accounts for {accounted}: {stats:?}");
    // The job's estimate (from the events' times) finds what the server did not deliver.
    let tolerance = truth.events / 200;
    assert!(h.events_dropped.abs_diff(lost) <= tolerance, "estimated {} dropped, the server lost {lost}", h.events_dropped);
}
