//! Reads a simulated run back through `xtc::RunReader` and recomputes what the truth file
//! claims, from the decoded fields only.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sim::detectors::{event_code, hsd_fex, DESTN_SC_HXR, LASER_STATE_ON};
use sim::Truth;
use xtc::{RunReader, Source, TransitionId, Value};

/// Per-step values as a reader sees them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SeenStep {
    pub motor: Option<f64>,
    pub step_value: Option<f64>,
    pub docstring: Option<String>,
    pub events: u64,
    pub l1_per_stream: Vec<u64>,
    pub laser_on: u64,
    pub xray_on: u64,
    pub slow_updates: u64,
    pub sums: BTreeMap<String, f64>,
    pub int_sums: BTreeMap<String, i64>,
    pub diode_on: f64,
    pub diode_off: f64,
    pub first_ts: Option<u64>,
    pub last_ts: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Seen {
    pub steps: Vec<SeenStep>,
    pub transitions: BTreeMap<String, u64>,
    pub events: u64,
    /// Timestamps of every built L1Accept, in reading order.
    pub l1_timestamps: Vec<u64>,
    /// L1Accepts per stream number.
    pub l1_per_stream: BTreeMap<u32, u64>,
    /// The bigdata files each stream's L1Accepts were fetched from.
    pub l1_files: BTreeMap<u32, BTreeSet<String>>,
    pub first_ts: Option<u64>,
    pub last_ts: Option<u64>,
    pub last_service: Option<TransitionId>,
    /// `XPP:R30:IOC:21:HEARTBEAT` of each SlowUpdate.
    pub epics_heartbeats: Vec<i32>,
}

/// Reads the run named by `source` to its end, checking per-event invariants on the way.
/// `on_l1(n)` is called after the n-th L1Accept (1-based).
pub fn read_run(source: &str, mut on_l1: impl FnMut(u64)) -> Seen {
    let src = Source::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
    let mut reader = RunReader::open(&src).unwrap_or_else(|e| panic!("open {source}: {e}"));
    let n_streams = reader.stream_count();
    let stream_no: Vec<u32> = (0..n_streams).map(|i| reader.stream_info(i).stream).collect();
    let mut seen = Seen::default();
    let mut prev_ts = 0u64;
    while let Some(built) = reader.next().unwrap_or_else(|e| panic!("reading {source}: {e}")) {
        assert!(built.timestamp > prev_ts, "timestamps must increase: {:x} after {prev_ts:x}", built.timestamp);
        prev_ts = built.timestamp;
        seen.first_ts.get_or_insert(built.timestamp);
        seen.last_ts = Some(built.timestamp);
        seen.last_service = Some(built.service);
        let members: Vec<(usize, xtc::Dgram<'_>)> = reader.members().collect();
        for (_, dg) in &members {
            assert_eq!((dg.timestamp(), dg.service()), (built.timestamp, built.service));
        }
        if built.service != TransitionId::L1Accept {
            assert_eq!(members.len(), n_streams, "{} must be in every stream", built.service.name());
            *seen.transitions.entry(built.service.name().to_string()).or_default() += 1;
        }
        match built.service {
            TransitionId::BeginStep => {
                let mut step = SeenStep { l1_per_stream: vec![0; n_streams], ..Default::default() };
                for &(i, ref dg) in &members {
                    decode(&reader, i, dg, |det, _seg, alg, field, v| {
                        assert_eq!((det, alg), ("scan", "raw"), "only stream 0's BeginStep carries data");
                        assert_eq!(stream_no[i], 0);
                        match (field, v) {
                            ("motor", Value::F64(x)) => step.motor = Some(x),
                            ("step_value", Value::F64(x)) => step.step_value = Some(x),
                            ("step_docstring", Value::Str(s)) => step.docstring = Some(String::from_utf8(s.to_vec()).unwrap()),
                            other => panic!("unexpected scan field {other:?}"),
                        }
                    });
                }
                seen.steps.push(step);
            }
            TransitionId::SlowUpdate => {
                seen.steps.last_mut().expect("SlowUpdates come inside steps").slow_updates += 1;
                for &(i, ref dg) in &members {
                    decode(&reader, i, dg, |det, _, _, field, v| {
                        assert_eq!((det, stream_no[i]), ("epics", 0));
                        match (field, v) {
                            ("HX2:DVD:GCC:01:PMON", Value::F64(p)) => assert!(p > 1e-10 && p < 1e-7, "pressure {p}"),
                            ("XPP:USR:SAMPLE:NAME", Value::Str(s)) => assert_eq!(s, b"Fe(bpy)3 50 mM in H2O"),
                            ("XPP:R30:IOC:21:HEARTBEAT", Value::I32(h)) => seen.epics_heartbeats.push(h),
                            _ => {}
                        }
                    });
                }
            }
            TransitionId::L1Accept => {
                let step = seen.steps.last_mut().expect("L1Accepts come inside steps");
                step.events += 1;
                seen.events += 1;
                seen.l1_timestamps.push(built.timestamp);
                step.first_ts.get_or_insert(built.timestamp);
                step.last_ts = Some(built.timestamp);
                for &(i, ref dg) in &members {
                    step.l1_per_stream[i] += 1;
                    *seen.l1_per_stream.entry(stream_no[i]).or_default() += 1;
                    let file = reader.member_location(i).0.file_name().unwrap().to_string_lossy().into_owned();
                    seen.l1_files.entry(stream_no[i]).or_default().insert(file);
                    decode_l1(&reader, i, dg, built.timestamp, step);
                }
                on_l1(seen.events);
            }
            _ => {}
        }
    }
    seen
}

/// Calls `f(det, segment, alg, field, value)` for every field of a member datagram.
fn decode<'a>(reader: &RunReader, i: usize, dg: &xtc::Dgram<'a>, mut f: impl FnMut(&str, u32, &str, &str, Value<'a>)) {
    reader
        .stream_state(i)
        .for_each_shapes_data(dg, |names, sd| {
            sd.for_each_field(names, |_, name, v| f(&names.det_name, names.segment, &names.alg_name, &name.name, v))
        })
        .unwrap_or_else(|e| panic!("decoding stream {i}: {e}"));
}

fn add(map: &mut BTreeMap<String, f64>, key: &str, v: f64) {
    *map.entry(key.to_string()).or_insert(0.0) += v;
}

fn decode_l1(reader: &RunReader, i: usize, dg: &xtc::Dgram<'_>, timestamp: u64, step: &mut SeenStep) {
    let mut diode = None;
    let mut laser = None;
    let mut laser_state = None;
    let mut laser_code = None;
    let mut ipm_channels = None;
    let mut ipm_sum = None;
    let mut waveform: Option<Vec<u16>> = None;
    let mut fex = BTreeMap::new();
    decode(reader, i, dg, |det, seg, alg, field, v| match (det, alg, field, v) {
        ("timing", "raw", "timeStamp", Value::U64(t)) => assert_eq!(t, timestamp),
        ("timing", "raw", "ebeamDestn", Value::U8(d)) => step.xray_on += u64::from(d == DESTN_SC_HXR),
        ("timing", "raw", "sequenceValues", Value::Array(a)) => {
            let c = event_code::LASER_ON as usize;
            let Value::U16(word) = a.get(c / 16) else { panic!("sequenceValues type") };
            laser_code = Some(word >> (c % 16) & 1 == 1);
        }
        ("gmd", "raw", "millijoulesperpulse", Value::F32(x)) => add(&mut step.sums, "gmd.raw.millijoulesperpulse", x as f64),
        ("ipm2", "raw", "sum", Value::F64(x)) => {
            add(&mut step.sums, "ipm2.raw.sum", x);
            ipm_sum = Some(x);
        }
        ("ipm2", "raw", "channels", Value::Array(a)) => {
            ipm_channels = Some((0..a.len()).map(|k| a.get(k).as_f64().unwrap()).collect::<Vec<_>>());
        }
        ("lasr", "raw", "laser_on", Value::U8(x)) => laser = Some(x == 1),
        ("lasr", "raw", "state:LaserState", Value::Enum(x)) => laser_state = Some(x == LASER_STATE_ON),
        ("diode", "raw", "signal", Value::F64(x)) => {
            add(&mut step.sums, "diode.raw.signal", x);
            diode = Some(x);
        }
        ("hsd", "raw", "waveform", Value::Array(a)) => {
            waveform = Some(a.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect());
        }
        ("hsd", "fex", f, v) => {
            fex.insert(f.to_string(), v.as_f64().unwrap());
            if f == "area" {
                *step.int_sums.entry("hsd.fex.area".into()).or_default() += v.as_int().unwrap() as i64;
            }
        }
        ("cam", "raw", "image", Value::Array(a)) => {
            assert_eq!(a.rank, 2);
            let sum: i64 = a.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as i64).sum();
            *step.int_sums.entry("cam.raw.image".into()).or_default() += sum;
        }
        ("fim", "fex", "intensity", Value::F64(x)) => {
            let key = if seg == 0 { "fim.fex.intensity".to_string() } else { format!("fim_{seg}.fex.intensity") };
            add(&mut step.sums, &key, x);
        }
        _ => {}
    });
    if let Some(on) = laser {
        assert_eq!(Some(on), laser_state, "lasr.raw.state:LaserState agrees with laser_on");
        assert_eq!(Some(on), laser_code, "event code 273 agrees with laser_on");
        step.laser_on += u64::from(on);
        let d = diode.expect("diode beside lasr");
        if on { step.diode_on += d } else { step.diode_off += d }
        let c = ipm_channels.expect("ipm2.raw.channels");
        assert_eq!((c[0] + c[1] + c[2] + c[3]).to_bits(), ipm_sum.unwrap().to_bits(), "ipm2 sum = Σ channels");
    }
    if let Some(wf) = waveform {
        let want = hsd_fex(&wf);
        let got = (fex["baseline"], fex["area"], fex["peak_pos"], fex["peak_ampl"], fex["n_over"]);
        let want = (want.baseline as f64, want.area as f64, want.peak_pos as f64, want.peak_ampl as f64, want.n_over as f64);
        assert_eq!(got, want, "hsd.fex follows from hsd.raw.waveform");
    }
}

/// Asserts that what was read equals the truth, bit for bit.
pub fn assert_matches_truth(seen: &Seen, truth: &Truth) {
    assert_eq!(seen.events, truth.events);
    assert_eq!(seen.transitions, truth.transitions);
    assert_eq!((seen.first_ts, seen.last_ts), (Some(truth.first_timestamp), Some(truth.last_timestamp)));
    assert_eq!(seen.last_service, Some(TransitionId::EndRun));
    let per_stream: BTreeMap<u32, u64> = truth.streams.iter().filter(|s| s.l1 > 0).map(|s| (s.stream, s.l1)).collect();
    assert_eq!(seen.l1_per_stream, per_stream);
    assert_eq!(seen.steps.len(), truth.steps.len());
    for (s, t) in seen.steps.iter().zip(&truth.steps) {
        let at = format!("step {}", t.step);
        assert_eq!(s.motor.map(f64::to_bits), Some(t.delay_ps.to_bits()), "{at}: scan.raw.motor");
        assert_eq!(s.step_value, Some(t.step_value), "{at}");
        assert_eq!(s.docstring.as_deref(), Some(t.step_docstring.as_str()), "{at}");
        assert_eq!(s.events, t.events, "{at}: events");
        assert_eq!(s.l1_per_stream, t.l1_per_stream, "{at}: L1Accepts per stream");
        assert_eq!((s.laser_on, s.xray_on, s.slow_updates), (t.laser_on, t.xray_on, t.slow_updates), "{at}");
        assert_eq!((s.first_ts, s.last_ts), (t.first_timestamp, t.last_timestamp), "{at}");
        // Bit-exact: the same values added in the same order.
        let bits = |m: &BTreeMap<String, f64>| m.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect::<Vec<_>>();
        if t.events > 0 {
            assert_eq!(bits(&s.sums), bits(&t.sums), "{at}: sums {:?} vs {:?}", s.sums, t.sums);
            assert_eq!(s.int_sums, t.int_sums, "{at}");
        }
        assert_eq!(s.diode_on.to_bits(), t.diode_signal_laser_on_sum.to_bits(), "{at}");
        assert_eq!(s.diode_off.to_bits(), t.diode_signal_laser_off_sum.to_bits(), "{at}");
    }
}

/// The names of the files in `dir` (recursively, relative to it).
pub fn files_in(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in [dir.to_path_buf(), dir.join("smalldata")] {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_file() {
                let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel);
            }
        }
    }
    out
}
