//! Writes runs and reads them back through `xtc`, checking every claim of the truth file.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use sim::{write_run, SimConfig, SimError, Truth};
use xtc::file::DgramReader;
use xtc::{StreamState, TransitionId, Value};

fn config(dir: &Path, streams: u32, events: u64, steps: u32) -> SimConfig {
    let mut cfg = SimConfig::new(dir);
    cfg.streams = streams;
    cfg.events = events;
    cfg.steps = steps;
    cfg.seed = 42;
    cfg
}

/// (a) + (d): three streams, a tiny chunk threshold, every value checked against the truth.
#[test]
fn three_streams_round_trip_exactly_through_chunk_switches() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 3, 3000, 4);
    cfg.chunk_bytes = 16 << 10;
    cfg.image = Some((12, 8));
    let truth = write_run(&cfg).unwrap();

    assert_eq!(truth.events, 3000);
    assert_eq!(truth.steps.iter().map(|s| s.events).collect::<Vec<_>>(), [750; 4]);
    assert_eq!(truth.streams.iter().map(|s| s.l1).collect::<Vec<_>>(), [3000, 3000, 300]);
    for s in &truth.streams {
        assert!(s.chunks.len() >= 2, "s{:03} has {} chunk(s)", s.stream, s.chunks.len());
    }
    // 3000 events at ~1 kHz of data time with SlowUpdates at 1 Hz.
    assert_eq!(truth.transitions["SlowUpdate"], 3);
    for (name, n) in [("Configure", 1), ("BeginRun", 1), ("BeginStep", 4), ("Enable", 4), ("Disable", 4), ("EndStep", 4), ("EndRun", 1)] {
        assert_eq!(truth.transitions[name], n, "{name}");
    }
    // The model shows through: late delays pump the diode more than early ones.
    let ratio = |s: &sim::truth::StepTruth| s.diode_signal_laser_on_sum / s.sums["ipm2.raw.sum"];
    assert!(ratio(&truth.steps[3]) > ratio(&truth.steps[0]) * 1.2);
    assert_eq!(truth.steps.iter().map(|s| s.laser_on).sum::<u64>(), 2250, "1 in 4 shots has the laser off");

    let seen = common::read_run(&truth.source, |_| {});
    common::assert_matches_truth(&seen, &truth);
    let beats = &seen.epics_heartbeats;
    assert!(beats.len() == 3 && beats.windows(2).all(|w| w[1] == w[0] + 1), "heartbeats {beats:?}");

    // (d) The reader fetched L1Accepts from exactly the chunks that hold them.
    for s in &truth.streams {
        let want: BTreeSet<String> = s.chunks.iter().filter(|c| c.l1 > 0).map(|c| c.file.clone()).collect();
        assert!(want.len() >= 2, "s{:03}: L1Accepts in {want:?}", s.stream);
        assert_eq!(seen.l1_files[&s.stream], want, "s{:03}", s.stream);
    }

    // The truth file on disk is the returned truth, f64 sums included, bit for bit.
    assert_eq!(Truth::load(&cfg.truth_path()).unwrap(), truth);
}

/// One bigdata datagram: (chunk, offset, bytes).
type Located = (usize, u64, Vec<u8>);

fn read_all(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut r = DgramReader::open(path).unwrap();
    let mut out = Vec::new();
    while let Some((off, dg)) = r.next_dgram().unwrap() {
        out.push((off, dg.bytes().to_vec()));
    }
    assert!(r.truncated_tail().is_none(), "{} ends inside a datagram", path.display());
    out
}

fn service(dg: &[u8]) -> TransitionId {
    TransitionId::from_env(u32::from_le_bytes(dg[8..12].try_into().unwrap()))
}

/// (b) + (d): final file names, smd files exactly as the DAQ writes them (spec §13.3), chunks
/// ended by an Enable with chunkinfo naming the next one (spec §13.4).
#[test]
fn files_are_final_and_smd_indexes_every_bigdata_datagram() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 2, 600, 3);
    cfg.chunk_bytes = 8 << 10;
    let truth = write_run(&cfg).unwrap();

    let mut want: BTreeSet<String> = truth.streams.iter().flat_map(|s| s.chunks.iter().map(|c| c.file.clone())).collect();
    want.extend(truth.streams.iter().map(|s| s.smd.file.clone()));
    want.insert(cfg.truth_path().file_name().unwrap().to_string_lossy().into_owned());
    assert_eq!(common::files_in(tmp.path()), want, "no .inprogress left, nothing else written");

    for s in &truth.streams {
        let dir = tmp.path();
        let mut big: Vec<Located> = Vec::new();
        for (k, c) in s.chunks.iter().enumerate() {
            let dgs = read_all(&dir.join(&c.file));
            assert_eq!((dgs.len() as u64, dgs.iter().map(|(_, d)| d.len() as u64).sum::<u64>()), (c.datagrams, c.bytes), "{}", c.file);
            assert_eq!(dgs.iter().filter(|(_, d)| service(d) == TransitionId::L1Accept).count() as u64, c.l1);
            if k > 0 {
                assert_ne!(service(&dgs[0].1), TransitionId::Configure, "{}: later chunks have no Configure", c.file);
            }
            big.extend(dgs.into_iter().map(|(off, d)| (k, off, d)));
        }
        let smd = read_all(&dir.join(&s.smd.file));
        assert_eq!((smd.len() as u64, s.smd.datagrams), (big.len() as u64, big.len() as u64));

        // The Configure's schema decodes the chunkinfo of the Enables that end chunks.
        let mut state = StreamState::new();
        assert!(state.observe(&xtc::Dgram::new(&big[0].2).unwrap()).unwrap());
        for (k, ((chunk, offset, b), (_, m))) in big.iter().zip(&smd).enumerate() {
            assert_eq!(m[..12], b[..12], "smd keeps time and env");
            match service(b) {
                TransitionId::L1Accept => {
                    assert_eq!(m.len(), 76, "smd L1Accept record");
                    assert_eq!(u16::from_le_bytes([m[16], m[17]]), 0, "smd root damage");
                    let int_offset = u64::from_le_bytes(m[60..68].try_into().unwrap());
                    let size = u64::from_le_bytes(m[68..76].try_into().unwrap());
                    assert_eq!((int_offset, size), (*offset, b.len() as u64), "smdinfo points at the bigdata datagram");
                }
                TransitionId::EndRun => assert_eq!(m.len(), 24),
                TransitionId::Configure => {
                    assert_eq!(m.len(), b.len() + 2096, "smd Configure = bigdata Configure + smdinfo Names");
                    assert_eq!(m[24..b.len()], b[24..]);
                }
                _ => assert_eq!(m, b, "transitions are copied verbatim"),
            }
            let ends_chunk = big.get(k + 1).is_some_and(|(next, _, _)| next != chunk);
            if ends_chunk {
                assert_eq!(service(b), TransitionId::Enable, "a chunk ends with an Enable");
                let (mut id, mut name) = (None, None);
                state
                    .for_each_shapes_data(&xtc::Dgram::new(b).unwrap(), |names, sd| {
                        assert_eq!(names.det_name, "chunkinfo");
                        sd.for_each_field(names, |_, f, v| match v {
                            Value::U32(x) if f.name == "chunkid" => id = Some(x),
                            Value::Str(x) if f.name == "filename" => name = Some(String::from_utf8(x.to_vec()).unwrap()),
                            _ => panic!("chunkinfo field {}", f.name),
                        })
                    })
                    .unwrap();
                assert_eq!(id, Some(*chunk as u32 + 1));
                assert_eq!(name.as_deref(), Some(s.chunks[chunk + 1].file.as_str()));
            }
        }
    }
}

#[test]
fn equal_seeds_give_equal_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ta = write_run(&config(a.path(), 3, 400, 2)).unwrap();
    let tb = write_run(&config(b.path(), 3, 400, 2)).unwrap();
    let files = common::files_in(a.path());
    assert_eq!(files, common::files_in(b.path()));
    for f in files.iter().filter(|f| f.ends_with(".xtc2")) {
        assert!(std::fs::read(a.path().join(f)).unwrap() == std::fs::read(b.path().join(f)).unwrap(), "{f} differs");
    }
    assert_eq!((&ta.steps, &ta.model, ta.first_timestamp), (&tb.steps, &tb.model, tb.first_timestamp));

    let mut other = config(b.path(), 3, 400, 2);
    other.seed = 43;
    other.run = 2;
    let tc = write_run(&other).unwrap();
    assert_ne!(tc.steps[0].sums["diode.raw.signal"], ta.steps[0].sums["diode.raw.signal"]);
    assert_ne!(tc.first_timestamp, ta.first_timestamp);
}

/// Small shapes: one stream (the camera goes to s000), empty steps, a run without events.
#[test]
fn small_and_empty_runs_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let mut one = config(tmp.path(), 1, 300, 2);
    one.image = Some((5, 3));
    let t = write_run(&one).unwrap();
    assert!(t.detectors.iter().any(|d| d.det_name == "cam" && d.stream == 0));
    assert!(t.steps.iter().all(|s| s.int_sums.contains_key("cam.raw.image")));
    common::assert_matches_truth(&common::read_run(&t.source, |_| {}), &t);

    for (run, events, per_step) in [(2, 2, &[1, 1, 0][..]), (3, 0, &[0, 0])] {
        let mut c = config(tmp.path(), 2, events, per_step.len() as u32);
        c.run = run;
        let t = write_run(&c).unwrap();
        assert_eq!(t.steps.iter().map(|s| s.events).collect::<Vec<_>>(), per_step);
        common::assert_matches_truth(&common::read_run(&t.source, |_| {}), &t);
    }
}

#[test]
fn a_simulated_run_is_replaced_but_foreign_files_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 2, 10, 1);
    write_run(&cfg).unwrap();
    assert_eq!(sim::next_free_run(tmp.path(), &cfg.exp), 2);
    // Written by the simulator (the truth file says so): replaced, stale s001 files included.
    cfg.streams = 1;
    let t = write_run(&cfg).unwrap();
    assert_eq!(common::files_in(tmp.path()).len(), 3);
    common::assert_matches_truth(&common::read_run(&t.source, |_| {}), &t);

    // Without its truth file the run may be real data: refused unless overwrite is set.
    std::fs::remove_file(cfg.truth_path()).unwrap();
    let err = write_run(&cfg).unwrap_err();
    assert!(matches!(err, SimError::RunExists { run: 1, files: 2, .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(common::files_in(tmp.path()).len(), 2, "nothing was touched");
    cfg.overwrite = true;
    write_run(&cfg).unwrap();
    assert_eq!(common::files_in(tmp.path()).len(), 3);
}
