//! In-memory fuzz target: the input is back-to-back datagrams (as in a file).
//!
//! Splits it with `dgram_size`/`Dgram::new`, keeps one `StreamState` (Configure schema), walks
//! every Xtc tree, parses every Names and ShapesData node, and decodes every field of every
//! ShapesData. Errors are expected; panics, overflows, hangs and OOM are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xtc::dgram::{Node, dgram_size, type_id, walk};
use xtc::{ArrayView, Dgram, FormatError, Names, ShapesData, StreamState, Value};

fuzz_target!(|data: &[u8]| {
    let mut state = StreamState::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Ok(size) = dgram_size(rest) else { break };
        if size > rest.len() {
            // A truncated tail: still walk what there is (walk must reject it, not panic).
            let _ = walk(rest, &mut |_| Ok::<_, FormatError>(()));
            break;
        }
        let (bytes, tail) = rest.split_at(size);
        rest = tail;
        let dg = Dgram::new(bytes).expect("dgram_size said this is one datagram");
        touch_header(&dg);

        // Every node of the tree, with the standalone parsers.
        let _ = walk(dg.bytes(), &mut |node: Node<'_>| {
            assert!(node.at + node.bytes.len() <= dg.bytes().len());
            match node.header.type_id() {
                type_id::NAMES => {
                    if let Ok(names) = Names::parse(&node) {
                        let _ = names.detector_key();
                        let _ = names.array_count();
                        for f in &names.fields {
                            let _ = f.enum_parts();
                        }
                    }
                }
                type_id::SHAPES_DATA => {
                    if let Ok(sd) = ShapesData::parse(&node) {
                        check_shapes_data(&dg, &sd);
                    }
                }
                t => panic!("walk visited a node of type {t}"),
            }
            Ok::<_, FormatError>(())
        });

        // The product's path: Configure schema, then every field of every ShapesData.
        let _ = state.observe(&dg);
        let _ = state.for_each_shapes_data(&dg, |names, sd| {
            check_shapes_data(&dg, &sd);
            let mut count = 0usize;
            sd.for_each_field(names, |i, name, v| {
                assert!(i < names.fields.len());
                assert_eq!(name, &names.fields[i]);
                touch_value(v);
                count += 1;
            })
            .map(|()| assert_eq!(count, names.fields.len()))
        });
    }
});

fn touch_header(dg: &Dgram<'_>) {
    let _ = (
        dg.timestamp(),
        dg.sec(),
        dg.nsec(),
        dg.env(),
        dg.payload_size(),
    );
    let s = dg.service();
    let _ = (s.name(), s.is_event());
    let x = dg.xtc();
    assert_eq!(12 + x.extent as usize, dg.bytes().len());
    let _ = xtc::dgram::unix_nanos(dg.timestamp());
}

fn check_shapes_data(dg: &Dgram<'_>, sd: &ShapesData<'_>) {
    let len = dg.bytes().len();
    assert!(sd.shapes_at + sd.shapes.len() <= len);
    assert!(sd.data_at + sd.data.len() <= len);
}

fn touch_value(v: Value<'_>) {
    let _ = v.as_f64();
    let _ = v.as_int();
    match v {
        Value::Array(a) => touch_array(&a),
        Value::Str(s) => assert!(!s.contains(&0)),
        _ => {}
    }
}

fn touch_array(a: &ArrayView<'_>) {
    let dims = a.dims();
    assert_eq!(dims.len(), a.rank as usize);
    let n: u64 = dims.iter().map(|&d| d as u64).product();
    assert_eq!(n, a.len() as u64);
    assert_eq!(a.bytes.len(), a.len() * a.dtype.size());
    if !a.is_empty() {
        let _ = a.get(0).as_f64();
        let _ = a.get(a.len() - 1).as_int();
    }
}
