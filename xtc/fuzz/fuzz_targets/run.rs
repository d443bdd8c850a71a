//! Run fuzz target: the input is the files of a run with small data, read with event building
//! across streams, smd records resolved into bigdata, and chunk switching (spec §13–§14).
//!
//! Input layout: up to five parts, each `u32 LE length` + bytes (a length past the end takes
//! the rest):
//!   0: smalldata/xpptut15-r0014-s000-c000.smd.xtc2   1: xpptut15-r0014-s000-c000.xtc2
//!   2: smalldata/xpptut15-r0014-s001-c000.smd.xtc2   3: xpptut15-r0014-s001-c000.xtc2
//!   4: data-r0001-s000-c001.xtc2 (the chunk the `chunking` sample's chunkinfo names)
//! Errors are expected; panics, overflows, hangs and OOM are bugs.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use xtc::table::{EventsReader, TableOptions};
use xtc::{RunReader, Source};

const FILES: [&str; 5] = [
    "smalldata/xpptut15-r0014-s000-c000.smd.xtc2",
    "xpptut15-r0014-s000-c000.xtc2",
    "smalldata/xpptut15-r0014-s001-c000.smd.xtc2",
    "xpptut15-r0014-s001-c000.xtc2",
    "data-r0001-s000-c001.xtc2",
];

#[path = "scratch.rs"]
mod scratch;

/// One scratch run directory per fuzzing process.
fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch::path("run", "");
        std::fs::create_dir_all(dir.join("smalldata")).expect("create the scratch run directory");
        dir
    })
}

fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    while parts.len() < FILES.len() && data.len() >= 4 {
        let n = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
        let rest = &data[4..];
        let (part, tail) = rest.split_at(n.min(rest.len()));
        parts.push(part);
        data = tail;
    }
    parts
}

fn write_run(dir: &Path, parts: &[&[u8]]) {
    for (i, name) in FILES.iter().enumerate() {
        let p = dir.join(name);
        match parts.get(i) {
            Some(bytes) => std::fs::write(&p, bytes).expect("write a scratch file"),
            None => {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir();
    write_run(dir, &split(data));
    let source =
        Source::parse(&format!("exp=xpptut15:run=14:dir={}", dir.display())).expect("run source");

    if let Ok(mut reader) = RunReader::open(&source) {
        while let Ok(Some(_built)) = reader.next() {
            // No timestamp check here: the reader does not (yet) verify that an smd record
            // points at a bigdata datagram with the record's own timestamp.
            for (i, dg) in reader.members() {
                let r = reader
                    .stream_state(i)
                    .for_each_shapes_data(&dg, |names, sd| {
                        sd.for_each_field(names, |_, _, v| {
                            let _ = v.as_f64();
                        })
                    });
                if let Err(e) = r {
                    let _ = reader.locate(i, e).to_string();
                }
            }
        }
        let _ = reader.truncated_tails();
    }

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
