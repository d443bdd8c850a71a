//! Shared-memory throughput and latency over the real POSIX objects (a table, no harness):
//!
//! - flat out: the producer publishes as fast as its clients take the events (it waits for a
//!   free buffer, as the MEB does), 100-byte and 1-MB events, 1 and 4 distributed clients;
//! - paced: the same at a fixed rate, so latency is not queueing;
//! - stalled: one client that never reads, the producer never waiting: its publish rate and
//!   where the events went.
//!
//! Latency = from just before `publish` (the copy into shared memory) to the client having
//! copied, released and decoded the event (every field walked). Run: `cargo bench -p
//! beamtime-shmem` (release); `BENCH_SECONDS` sets the length of each row (default 2).

use std::sync::Arc;
use std::time::{Duration, Instant};

use shmem::{Client, ClientOptions, Received, Server, ServerConfig, StopAt};
use xtc::writer::{ArrayData, DgramWriter, FieldDef, FieldValue, NamesDef};
use xtc::{DataType, StreamState, TransitionId};

fn def() -> NamesDef {
    NamesDef {
        names_id: 0,
        det_name: "bench".into(),
        det_type: "bench".into(),
        det_id: String::new(),
        alg_name: "raw".into(),
        alg_version: 0,
        segment: 0,
        fields: vec![FieldDef::new("seq", DataType::U64, 0), FieldDef::new("payload", DataType::U8, 1)],
    }
}

/// A datagram of `service`; L1Accepts of `size` bytes in all.
fn datagram(service: TransitionId, size: usize) -> Vec<u8> {
    let d = def();
    let mut b = Vec::new();
    let mut w = DgramWriter::begin(&mut b, service, 0, 1);
    match service {
        TransitionId::Configure => w.names(&d),
        TransitionId::L1Accept => {
            // 24 header + 12 ShapesData + 12 Shapes + 20 shape + 12 Data + 8 seq = 88 bytes.
            let payload = vec![7u8; size.saturating_sub(88)];
            w.shapes_data(&d, &[FieldValue::U64(0), FieldValue::Array(&[payload.len() as u32], ArrayData::U8(&payload))]);
        }
        _ => {}
    }
    w.finish();
    b
}

/// Nanoseconds since `base` as a psana timestamp (sec << 32 | nsec).
fn stamp(base: Instant) -> u64 {
    let ns = base.elapsed().as_nanos() as u64;
    ((ns / 1_000_000_000) << 32) | (ns % 1_000_000_000)
}

fn unstamp(ts: u64) -> u64 {
    (ts >> 32) * 1_000_000_000 + (ts & 0xffff_ffff)
}

struct Row {
    mode: &'static str,
    size: usize,
    clients: usize,
    published: u64,
    received: u64,
    secs: f64,
    latencies: Vec<u64>,
    note: String,
}

fn percentile(v: &[u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn tag(name: &str) -> String {
    format!("bt_bench_{}_{name}", std::process::id())
}

fn server(tag: &str, clients: usize, size: usize) -> Server {
    let mut c = ServerConfig::new(tag);
    c.n_events = 8;
    c.n_queues = clients;
    c.buffer_size = size.max(4096).div_ceil(4096) * 4096 + 4096;
    c.remove_segment_on_drop = true;
    Server::start(c).expect("server")
}

/// A reading client: copies, releases and decodes every datagram until EndRun; returns the
/// latencies of its events.
fn reader(tag: String, base: Instant) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let opts = ClientOptions { retry: Duration::from_millis(10), connect_timeout: Some(Duration::from_secs(10)), stop: StopAt::EndRun, ..Default::default() };
        let mut c = Client::connect(&tag, opts).expect("client");
        let mut state = StreamState::new();
        let mut lat = Vec::with_capacity(1 << 20);
        loop {
            match c.next(Duration::from_secs(30)).expect("next") {
                Some(Received::Dgram(d)) => {
                    let dg = d.dgram();
                    state.observe(&dg).unwrap();
                    if dg.service() == TransitionId::L1Accept {
                        let mut fields = 0;
                        state.for_each_shapes_data(&dg, |names, sd| sd.for_each_field(names, |_, _, _| fields += 1)).unwrap();
                        assert_eq!(fields, 2);
                        let now = unstamp(stamp(base));
                        lat.push(now.saturating_sub(unstamp(dg.timestamp())));
                    }
                }
                Some(Received::Stopped) => return lat,
                other => panic!("{other:?}"),
            }
        }
    })
}

fn start_run(s: &Server) {
    for t in [TransitionId::Configure, TransitionId::BeginRun, TransitionId::BeginStep, TransitionId::Enable] {
        s.publish(&datagram(t, 0)).unwrap();
    }
}

fn end_run(s: &Server) {
    s.wait_drained(Duration::from_secs(10));
    for t in [TransitionId::Disable, TransitionId::EndStep, TransitionId::EndRun] {
        s.publish(&datagram(t, 0)).unwrap();
    }
}

/// Flat out (rate 0: wait for a free buffer) or paced at `rate` Hz, for `secs` seconds.
fn run_readers(size: usize, clients: usize, rate: f64, secs: f64) -> Row {
    let t = tag(&format!("{size}_{clients}_{}", rate as u64));
    let s = server(&t, clients, size);
    let base = Instant::now();
    let handles: Vec<_> = (0..clients).map(|_| reader(t.clone(), base)).collect();
    assert!(s.wait_for_clients(clients, Duration::from_secs(10)));
    start_run(&s);
    s.wait_drained(Duration::from_secs(5));
    let mut ev = datagram(TransitionId::L1Accept, size);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < secs {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        } else {
            s.wait_free_buffer(Duration::from_secs(1));
        }
        let ts = stamp(base);
        ev[0..4].copy_from_slice(&((ts & 0xffff_ffff) as u32).to_le_bytes());
        ev[4..8].copy_from_slice(&((ts >> 32) as u32).to_le_bytes());
        s.publish(&ev).unwrap();
        n += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    end_run(&s);
    let mut latencies: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    latencies.sort_unstable();
    let st = s.stats();
    let note = format!("stolen {}, dropped {}", st.stolen, st.dropped_no_buffer + st.dropped_queues_full);
    Row {
        mode: if rate > 0.0 { "paced" } else { "flat out" },
        size,
        clients,
        published: n,
        received: latencies.len() as u64,
        secs: elapsed,
        latencies,
        note,
    }
}

/// One client connected that never reads; the producer never waits.
fn run_stalled(size: usize, secs: f64) -> Row {
    let t = tag(&format!("stalled_{size}"));
    let s = Arc::new(server(&t, 1, size));
    let opts = ClientOptions { retry: Duration::from_millis(10), connect_timeout: Some(Duration::from_secs(10)), ..Default::default() };
    let stalled = Client::connect(&t, opts).expect("client");
    start_run(&s);
    let ev = datagram(TransitionId::L1Accept, size);
    let started = Instant::now();
    let mut n = 0u64;
    let mut worst = Duration::ZERO;
    while started.elapsed().as_secs_f64() < secs {
        let t0 = Instant::now();
        s.publish(&ev).unwrap();
        worst = worst.max(t0.elapsed());
        n += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let st = s.stats();
    drop(stalled);
    Row {
        mode: "stalled client",
        size,
        clients: 1,
        published: n,
        received: 0,
        secs: elapsed,
        latencies: Vec::new(),
        note: format!("stolen {}, dropped {}; slowest publish {:.0} µs", st.stolen, st.dropped_no_buffer + st.dropped_queues_full, worst.as_secs_f64() * 1e6),
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is understood.
    let secs: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0);
    let mut rows = Vec::new();
    for &size in &[100usize, 1 << 20] {
        for &clients in &[1usize, 4] {
            rows.push(run_readers(size, clients, 0.0, secs));
        }
    }
    for &(size, rate) in &[(100usize, 1000.0), (1 << 20, 100.0)] {
        for &clients in &[1usize, 4] {
            rows.push(run_readers(size, clients, rate, secs));
        }
    }
    for &size in &[100usize, 1 << 20] {
        rows.push(run_stalled(size, secs));
    }
    println!(
        "| mode | event size | clients | published/s | received/s | MB/s received | latency p50 µs | p99 µs | max µs | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let size = if r.size >= 1 << 20 { "1 MiB".to_string() } else { format!("{} B", r.size) };
        let lat = |p| if r.latencies.is_empty() { "–".to_string() } else { format!("{:.0}", percentile(&r.latencies, p)) };
        println!(
            "| {} | {size} | {} | {:.0} | {:.0} | {:.1} | {} | {} | {} | {} |",
            r.mode,
            r.clients,
            r.published as f64 / r.secs,
            r.received as f64 / r.secs,
            r.received as f64 * r.size as f64 / 1e6 / r.secs,
            lat(0.5),
            lat(0.99),
            lat(1.0),
            r.note
        );
    }
}
