//! Event-built datagrams (spec §3) decode with the xtc crate: the names and values of every
//! contributor, through the stream state and through the events table of a fed reader.

use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt16Type, UInt32Type};
use shmem::build::LEVEL_EVENT;
use shmem::event_build;
use xtc::dgram::type_id;
use xtc::run::FeedStream;
use xtc::table::{EventsReader, TableOptions};
use xtc::writer::{names_id, ArrayData, DgramWriter, FieldDef, FieldValue, NamesDef};
use xtc::{DataType, Dgram, RunReader, StreamState, TransitionId, Value};

fn def(node: u32, det: &str, fields: Vec<FieldDef>) -> NamesDef {
    NamesDef {
        names_id: names_id(node, 0),
        det_name: det.into(),
        det_type: det.into(),
        det_id: format!("{det}-id"),
        alg_name: "raw".into(),
        alg_version: 1 << 16,
        segment: 0,
        fields,
    }
}

/// Two DRP nodes: node 0 records a diode, node 1 a small waveform.
struct Streams {
    diode: NamesDef,
    wave: NamesDef,
}

impl Streams {
    fn new() -> Self {
        Streams {
            diode: def(0, "diode", vec![FieldDef::new("signal", DataType::F64, 0)]),
            wave: def(1, "wave", vec![FieldDef::new("samples", DataType::U16, 1), FieldDef::new("n", DataType::U32, 0)]),
        }
    }

    /// Each node's datagram for one pulse.
    fn pulse(&self, service: TransitionId, ts: u64, i: u32) -> [Vec<u8>; 2] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut w = DgramWriter::begin(&mut a, service, ts, 1);
        match service {
            TransitionId::Configure => w.names(&self.diode),
            TransitionId::L1Accept => w.shapes_data(&self.diode, &[FieldValue::F64(i as f64 * 0.5)]),
            _ => {}
        }
        w.finish();
        let mut w = DgramWriter::begin(&mut b, service, ts, 1);
        let samples = [i as u16, i as u16 + 1, i as u16 + 2];
        match service {
            TransitionId::Configure => w.names(&self.wave),
            TransitionId::L1Accept => w.shapes_data(&self.wave, &[FieldValue::Array(&[3], ArrayData::U16(&samples)), FieldValue::U32(i)]),
            _ => {}
        }
        if service == TransitionId::L1Accept && i == 2 {
            w.damage(1 << 4);
        }
        w.finish();
        [a, b]
    }

    fn built(&self, service: TransitionId, ts: u64, i: u32) -> Vec<u8> {
        let [a, b] = self.pulse(service, ts, i);
        event_build(&[&a, &b]).unwrap()
    }
}

#[test]
fn the_stream_state_decodes_every_contributor_of_a_built_datagram() {
    let s = Streams::new();
    let cfg = s.built(TransitionId::Configure, 1, 0);
    let d = Dgram::new(&cfg).unwrap();
    assert_eq!((d.xtc().src, d.xtc().type_id()), (LEVEL_EVENT, type_id::PARENT));
    let mut state = StreamState::new();
    assert!(state.observe(&d).unwrap());
    assert_eq!(state.lookup().len(), 2, "the Names of both nodes, found in their nested Parents");
    let ev = s.built(TransitionId::L1Accept, 5, 7);
    let mut seen = Vec::new();
    state
        .for_each_shapes_data(&Dgram::new(&ev).unwrap(), |names, sd| {
            sd.for_each_field(names, |_, name, v| {
                let shown = match v {
                    Value::Array(a) => format!("{:?}", (0..a.len()).map(|k| a.get(k).as_int().unwrap()).collect::<Vec<_>>()),
                    other => format!("{}", other.as_f64().unwrap()),
                };
                seen.push(format!("{}.{}={shown}", names.det_name, name.name));
            })
        })
        .unwrap();
    assert_eq!(seen, ["diode.signal=3.5", "wave.samples=[7, 8, 9]", "wave.n=7"]);
}

#[test]
fn the_events_table_of_a_fed_reader_has_every_contributors_columns() {
    let s = Streams::new();
    let label = PathBuf::from("shmem:test");
    let feed = FeedStream { stream: 0, label: label.clone(), smd: false, bigdata: label, follow: None };
    let mut reader = EventsReader::from_reader(RunReader::open_feeds(&[feed]), TableOptions::default());
    let mut bytes = s.built(TransitionId::Configure, 1, 0);
    bytes.extend(s.built(TransitionId::BeginRun, 2, 0));
    bytes.extend(s.built(TransitionId::BeginStep, 3, 0));
    bytes.extend(s.built(TransitionId::Enable, 4, 0));
    for i in 0..4 {
        bytes.extend(s.built(TransitionId::L1Accept, 10 + i as u64, i));
    }
    reader.feed(0, &bytes);
    let batch = reader.next_batch().unwrap().expect("a batch").batch;
    assert_eq!(batch.num_rows(), 4);
    let col = |name: &str| batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema()));
    let signal: Vec<f64> = col("diode.raw.signal").as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(signal, [0.0, 0.5, 1.0, 1.5]);
    let n: Vec<u32> = col("wave.raw.n").as_primitive::<UInt32Type>().values().to_vec();
    assert_eq!(n, [0, 1, 2, 3]);
    let samples = col("wave.raw.samples").as_fixed_size_list();
    assert_eq!(samples.value(3).as_primitive::<UInt16Type>().values().to_vec(), [3, 4, 5]);
    let damage: Vec<u16> = col("damage").as_primitive::<UInt16Type>().values().to_vec();
    assert_eq!(damage, [0, 0, 1 << 4, 0], "the root damage is the OR of the contributors'");
}
