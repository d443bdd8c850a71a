//! Event building and the events table on psana's own multi-stream sample runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType as ArrowType;
use xtc::table::{read_events, TableOptions};
use xtc::{RunReader, Source, TransitionId};

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/xtc2")
}

fn run_source(sample: &str) -> Source {
    Source::parse(&format!("exp=xpptut15:run=14:dir={}", samples().join(sample).display())).unwrap()
}

/// Per built step: (service, member stream numbers).
fn build(sample: &str) -> Vec<(TransitionId, u64, Vec<u32>)> {
    let mut r = RunReader::open(&run_source(sample)).unwrap();
    let mut out = Vec::new();
    while let Some(b) = r.next().unwrap() {
        let members: Vec<u32> = r.members().map(|(i, dg)| {
            assert_eq!(dg.timestamp(), b.timestamp);
            assert_eq!(dg.service(), b.service);
            r.stream_info(i).stream
        }).collect();
        out.push((b.service, b.timestamp, members));
    }
    out
}

fn counts(steps: &[(TransitionId, u64, Vec<u32>)]) -> BTreeMap<(&'static str, Vec<u32>), usize> {
    let mut m = BTreeMap::new();
    for (s, _, members) in steps {
        *m.entry((s.name(), members.clone())).or_default() += 1;
    }
    m
}

#[test]
fn mixed_rate_builds_100_events_with_stream_1_in_every_tenth() {
    let steps = build("mixed_rate");
    let c = counts(&steps);
    assert_eq!(c[&("L1Accept", vec![0])], 90);
    assert_eq!(c[&("L1Accept", vec![0, 1])], 10);
    for t in ["Configure", "BeginRun", "BeginStep", "Enable", "Disable", "EndStep", "EndRun"] {
        assert_eq!(c[&(t, vec![0, 1])], 1, "{t} once, in both streams");
    }
    assert_eq!(c[&("SlowUpdate", vec![0, 1])], 3);
    // Timestamps strictly increase: every datagram is seen once.
    assert!(steps.windows(2).all(|w| w[0].1 < w[1].1));
    // Stream 1 holds every 10th L1.
    let l1: Vec<_> = steps.iter().filter(|s| s.0 == TransitionId::L1Accept).collect();
    for (k, s) in l1.iter().enumerate() {
        assert_eq!(s.2.len() == 2, k % 10 == 0, "event {k}: {:?}", s.2);
    }
}

#[test]
fn fakesteps_two_steps_with_a_subset_of_l1s_in_stream_1() {
    let c = counts(&build("fakesteps"));
    assert_eq!(c[&("L1Accept", vec![0])], 6);
    assert_eq!(c[&("L1Accept", vec![0, 1])], 4);
    assert_eq!(c[&("BeginStep", vec![0, 1])], 2);
    assert_eq!(c[&("EndStep", vec![0, 1])], 2);
    assert_eq!(c[&("EndRun", vec![0, 1])], 1);
}

#[test]
fn chunking_follows_chunkinfo_into_c001() {
    let mut r = RunReader::open(&run_source("chunking")).unwrap();
    let mut l1_files = BTreeMap::<String, usize>::new();
    let mut services = Vec::new();
    while let Some(b) = r.next().unwrap() {
        services.push(b.service);
        if b.service == TransitionId::L1Accept {
            let (path, _) = r.member_location(0);
            *l1_files.entry(path.file_name().unwrap().to_string_lossy().into_owned()).or_default() += 1;
        }
    }
    assert_eq!(l1_files["xpptut15-r0014-s000-c000.xtc2"], 10);
    assert_eq!(l1_files["data-r0001-s000-c001.xtc2"], 5);
    assert_eq!(services.last(), Some(&TransitionId::EndRun));
    assert_eq!(services.len(), 24);
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> &'a dyn Array {
    b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}; have {:?}", b.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>())).as_ref()
}

#[test]
fn events_table_of_mixed_rate() {
    let batches = read_events(&run_source("mixed_rate"), TableOptions::default()).unwrap();
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b.num_rows(), 100);
    let ts = col(b, "timestamp").as_primitive::<UInt64Type>();
    assert_eq!(ts.value(0) >> 32, 1);
    // Segment 0 in stream 0 on every row; segments 2 and 3 (stream 1) on every 10th.
    assert_eq!(col(b, "xpphsd.fex.intFex").null_count(), 0);
    assert_eq!(col(b, "xpphsd_2.fex.intFex").null_count(), 90);
    assert_eq!(col(b, "xppcspad_3.raw.arrayRaw").null_count(), 90);
    let int_fex = col(b, "xpphsd.fex.intFex").as_primitive::<Int64Type>();
    assert_eq!(int_fex.value(0), 42);
    // Enums appear under the variable name, as i32, with their labels in the metadata.
    let schema = b.schema();
    let e = schema.field_with_name("xpphsd.fex.enumFex1").unwrap();
    assert_eq!(e.data_type(), &ArrowType::Int32);
    assert_eq!(e.metadata()["enum_labels"], "HighGain,LowGain");
    assert_eq!(col(b, "xpphsd.fex.enumFex1").as_primitive::<Int32Type>().value(0), -2);
    assert!(schema.field_with_name("xpphsd.fex.HighGain").is_err());
    // Arrays are fixed-size lists with the shape in the metadata.
    let a = schema.field_with_name("xppcspad.raw.arrayRaw").unwrap();
    assert_eq!(a.metadata()["shape"], "3,6");
    assert!(matches!(a.data_type(), ArrowType::FixedSizeList(_, 18)));
    // Strings.
    assert_eq!(col(b, "xpphsd.fex.charStrFex").as_string::<i32>().value(0), "Test String");
    // Config algs and transition-only detectors are not event columns; scan/epics repeat.
    assert!(schema.field_with_name("xpphsd.config.enable").is_err());
    assert!(schema.field_with_name("runinfo.runinfo.runnum").is_err());
    let motor = col(b, "scan.motor1").as_primitive::<Float32Type>();
    assert_eq!(motor.null_count(), 0);
    assert_eq!(motor.value(99), 41.0, "scan value of the BeginStep repeated");
    assert_eq!(col(b, "scan.motor2").as_primitive::<Float64Type>().value(0), 42.0);
    let pv = col(b, "epics.HX2:DVD:GCC:01:PMON").as_primitive::<Float64Type>();
    assert!(pv.is_null(0), "no SlowUpdate before the first event");
    assert!(pv.is_valid(99));
    assert_eq!(col(b, "run").as_primitive::<UInt32Type>().value(0), 14, "runnum from runinfo");
    assert_eq!(col(b, "step").as_primitive::<UInt32Type>().value(50), 0);
}

#[test]
fn multirun_new_configure_changes_the_schema() {
    let src = Source::parse(&format!("files={}", samples().join("multirun_w_new_config/xpptut15-r0014-s000-c000.xtc2").display())).unwrap();
    let mut r = xtc::table::EventsReader::open(&src, TableOptions::default()).unwrap();
    let mut seen = Vec::new();
    while let Some(b) = r.next_batch().unwrap() {
        let names: Vec<String> = b.batch.schema().fields().iter().map(|f| f.name().clone()).filter(|n| n.contains('.')).collect();
        let runs = b.batch.column_by_name("run").unwrap().as_primitive::<UInt32Type>().clone();
        seen.push((b.new_schema, b.batch.num_rows(), names, runs.values().to_vec()));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].0 && seen[1].0);
    assert_eq!(seen[0].1, 5);
    assert_eq!(seen[1].1, 10, "runs 2 and 3 share the second Configure");
    assert!(seen[0].2.iter().any(|n| n.starts_with("hsd.")));
    assert!(seen[1].2.iter().any(|n| n.starts_with("andor")), "{:?}", seen[1].2);
    assert_eq!(seen[1].3[0], 2);
    assert_eq!(seen[1].3[9], 3);
}

#[test]
fn a_chunk_without_configure_alone_is_a_clear_error() {
    let src = Source::parse(samples().join("chunking/data-r0001-s000-c001.xtc2").to_str().unwrap()).unwrap();
    let e = read_events(&src, TableOptions::default()).unwrap_err().to_string();
    assert!(e.contains("data-r0001-s000-c001.xtc2: offset"), "{e}");
    assert!(e.contains("must be read through its run"), "{e}");
}

/// The configuration records calibration reads (epix10ka `asicPixelConfig`, `trbit`) come out
/// of the Configure per segment, with the shapes and values psana's reference dump shows.
#[test]
fn configure_keeps_the_config_values_of_each_detector_segment() {
    let file = samples().join("detector/test_epix_calib.xtc2");
    let mut events = xtc::table::EventsReader::open(&Source::Files(vec![file]), TableOptions::default()).unwrap();
    events.next_batch().unwrap().expect("the file has events");
    let configs: Vec<_> = events.detector_configs("epixquad").into_iter().filter(|c| c.alg_name == "config").collect();
    assert_eq!(configs.iter().map(|c| c.segment).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(events.configure_count(), 1);
    for c in &configs {
        assert_eq!(c.det_type, "epix10ka");
        let pca = c.field("asicPixelConfig").unwrap();
        assert_eq!(pca.dims, [4, 176, 192]);
        // "'asicPixelConfig' (shape: 4 176 192):  8 8 8" for every segment in the dump.
        assert_eq!(&pca.as_u8().unwrap()[..3], [8, 8, 8]);
        let trbit = c.field("trbit").unwrap();
        assert_eq!(trbit.dims, [4]);
        assert_eq!(trbit.to_i64().unwrap()[..3], [0, 0, 0]);
    }
    // The hardware config record (`epixquadhw`) is another detector's.
    assert!(events.detector_configs("epixquadhw").iter().any(|c| c.det_type == "epixquad"));
}
