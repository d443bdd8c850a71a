//! `beamtime sim --shmem`: the run served through shared memory is the file run, event-built
//! pulse by pulse, and a client that keeps up loses nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use shmem::{Client, ClientOptions, Received, Server, ServerConfig, StopAt};
use sim::{write_run, SimConfig};
use xtc::file::DgramReader;
use xtc::{Dgram, StreamState, TransitionId, Value};

#[test]
fn the_served_run_is_the_file_run_event_built() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::new(tmp.path());
    (cfg.events, cfg.steps, cfg.streams, cfg.seed, cfg.image) = (400, 3, 3, 7, Some((8, 4)));
    let files = write_run(&cfg).unwrap();

    // What the monitoring event builder would serve: each timestamp's stream datagrams.
    let mut pulses: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for s in 0..cfg.streams {
        let path = tmp.path().join(format!("{}-s{s:03}-c000.xtc2", cfg.run_prefix()));
        let mut r = DgramReader::open(&path).unwrap();
        while let Some((_, dg)) = r.next_dgram().unwrap() {
            pulses.entry(dg.timestamp()).or_default().push(dg.bytes().to_vec());
        }
    }
    let expected: BTreeMap<u64, Vec<u8>> = pulses
        .into_iter()
        .map(|(ts, parts)| (ts, shmem::event_build(&parts.iter().map(|p| p.as_slice()).collect::<Vec<_>>()).unwrap()))
        .collect();

    let tag = format!("bt_test_{}_simfeed", std::process::id());
    let mut sc = ServerConfig::new(&tag);
    sc.remove_segment_on_drop = true;
    let server = Server::start(sc).unwrap();
    let t = tag.clone();
    let client = std::thread::spawn(move || {
        let opts = ClientOptions { retry: Duration::from_millis(20), connect_timeout: Some(Duration::from_secs(10)), stop: StopAt::EndRun, ..Default::default() };
        let mut c = Client::connect(&t, opts).unwrap();
        let mut got = Vec::new();
        loop {
            match c.next(Duration::from_secs(30)).unwrap() {
                Some(Received::Dgram(d)) => got.push(d.into_bytes()),
                Some(Received::Stopped) => break,
                other => panic!("{other:?}"),
            }
        }
        (got, c.stats())
    });
    assert!(server.wait_for_clients(1, Duration::from_secs(10)));
    let (truth, served) = sim::shmem::serve_run(&cfg, &server, |_| {}).unwrap();
    let (got, stats) = client.join().unwrap();
    drop(server);

    assert_eq!(truth.steps, files.steps, "the same run");
    assert_eq!(truth.events, 400);
    let st = &served.stats;
    assert_eq!((st.events_published, st.events_queued, st.stolen, st.dropped_no_buffer, st.dropped_queues_full), (400, 400, 0, 0, 0));
    assert_eq!((stats.events, stats.stale_events, stats.missed_estimate), (400, 0, 0));
    let received: BTreeMap<u64, Vec<u8>> = got.iter().map(|b| (Dgram::new(b).unwrap().timestamp(), b.clone())).collect();
    assert_eq!(received.len(), got.len(), "no datagram twice");
    assert_eq!(received.len(), expected.len());
    for (ts, bytes) in &expected {
        assert!(received.get(ts) == Some(bytes), "pulse 0x{ts:x} differs");
    }

    // Decoded in arrival order (transitions first), the per-step sums are the truth's, bit for bit.
    let mut state = StreamState::new();
    let mut sums: Vec<f64> = Vec::new();
    for b in &got {
        let d = Dgram::new(b).unwrap();
        state.observe(&d).unwrap();
        match d.service() {
            TransitionId::BeginStep => sums.push(0.0),
            TransitionId::L1Accept => state
                .for_each_shapes_data(&d, |names, sd| {
                    sd.for_each_field(names, |_, name, v| {
                        if let ("diode", "signal", Value::F64(x)) = (names.det_name.as_str(), name.name.as_str(), v) {
                            *sums.last_mut().unwrap() += x;
                        }
                    })
                })
                .unwrap(),
            _ => {}
        }
    }
    let want: Vec<f64> = truth.steps.iter().map(|s| s.sums["diode.raw.signal"]).collect();
    assert_eq!(sums, want);
    if shmem::sys::mqueue_mounted() {
        assert!(shmem::sys::queues_of_tag(&tag).is_empty());
    }
}
