//! File fuzz target: the input is one XTC2 file (back-to-back datagrams).
//!
//! Drives the product's pipeline on it: `RunReader::open_files` (every built step, every member
//! datagram, every field of every ShapesData) and the events table (`EventsReader`, drained
//! batch by batch). Errors are expected; panics, overflows, hangs and OOM are bugs.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use xtc::table::{EventsReader, TableOptions};
use xtc::{RunReader, Source, Value};

#[path = "scratch.rs"]
mod scratch;

/// One scratch file per fuzzing process.
fn scratch_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| scratch::path("file", ".xtc2"))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch_file();
    std::fs::write(path, data).expect("write the scratch file");

    if let Ok(mut reader) = RunReader::open_files(std::slice::from_ref(path)) {
        while let Ok(Some(built)) = reader.next() {
            let mut members = 0;
            for (i, dg) in reader.members() {
                members += 1;
                assert_eq!(dg.timestamp(), built.timestamp);
                let _ = reader.member_location(i);
                let r = reader
                    .stream_state(i)
                    .for_each_shapes_data(&dg, |names, sd| {
                        sd.for_each_field(names, |_, _, v| {
                            let _ = v.as_f64();
                            if let Value::Array(a) = v {
                                if !a.is_empty() {
                                    let _ = a.get(a.len() - 1);
                                }
                            }
                        })
                    });
                if let Err(e) = r {
                    let _ = reader.locate(i, e).to_string();
                }
            }
            assert_eq!(members, 1, "explicit files are read one datagram at a time");
        }
        let _ = reader.truncated_tails();
    }

    // Small batches so that batch cuts, schema changes and padding are exercised too.
    let source = Source::Files(vec![path.clone()]);
    let opts = TableOptions {
        batch_size: 5,
        max_array_len: 64,
        ..Default::default()
    };
    if let Ok(mut events) = EventsReader::open(&source, opts) {
        while let Ok(Some(batch)) = events.next_batch() {
            assert!(batch.batch.num_rows() > 0);
        }
    }
});
