//! Truncated and corrupted inputs give clear errors naming the file and offset, never a panic.

use std::path::{Path, PathBuf};

use xtc::table::{EventsReader, TableOptions};
use xtc::{Error, RunReader, Source};

fn sample(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/xtc2").join(rel)
}

/// Reads a file through the run reader, decoding every field, then through the events table.
fn read_all(path: &Path) -> Result<u64, Error> {
    let src = Source::Files(vec![path.to_path_buf()]);
    let mut r = RunReader::open(&src)?;
    let mut fields = 0u64;
    while r.next()?.is_some() {
        for (i, dg) in r.members() {
            r.stream_state(i)
                .for_each_shapes_data(&dg, |names, sd| sd.for_each_field(names, |_, _, _| fields += 1))
                .map_err(|e| r.locate(i, e))?;
        }
    }
    let mut t = EventsReader::open(&src, TableOptions { batch_size: 7, ..Default::default() })?;
    while t.next_batch()?.is_some() {}
    Ok(fields)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Offsets of the datagrams of a well-formed file.
fn dgram_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut at = 0;
    while at + 24 <= bytes.len() {
        v.push(at);
        at += xtc::dgram::dgram_size(&bytes[at..]).unwrap();
    }
    v
}

fn expect_error_at(path: &Path, offset: u64, what: &str) {
    let e = read_all(path).expect_err("corrupt input must fail").to_string();
    let want = format!("{}: offset {offset}: ", path.display());
    assert!(e.starts_with(&want), "error should start with {want:?}: {e}");
    assert!(e.contains(what), "error should mention {what:?}: {e}");
}

#[test]
fn a_cut_file_ends_cleanly_at_the_last_whole_datagram() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(sample("mixed_rate/xpptut15-r0014-s000-c000.xtc2")).unwrap();
    let full = read_all(&write(dir.path(), "full.xtc2", &bytes)).unwrap();
    let offs = dgram_offsets(&bytes);
    let cut_at = offs[60] + 30;
    let path = write(dir.path(), "cut.xtc2", &bytes[..cut_at]);
    let partial = read_all(&path).unwrap();
    assert!(partial < full && partial > 0);
    let r = {
        let mut r = RunReader::open(&Source::Files(vec![path.clone()])).unwrap();
        while r.next().unwrap().is_some() {}
        r.truncated_tails()
    };
    assert_eq!(r, vec![(path, offs[60] as u64)]);
}

#[test]
fn extent_too_small_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(sample("fakesteps/xpptut15-r0014-s000-c000.xtc2")).unwrap();
    let offs = dgram_offsets(&bytes);
    let at = offs[5] + 20;
    bytes[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
    expect_error_at(&write(dir.path(), "zero.xtc2", &bytes), at as u64, "smaller than its 12-byte header");
}

#[test]
fn huge_extent_is_refused_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(sample("fakesteps/xpptut15-r0014-s000-c000.xtc2")).unwrap();
    let offs = dgram_offsets(&bytes);
    let at = offs[3] + 20;
    bytes[at..at + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    expect_error_at(&write(dir.path(), "huge.xtc2", &bytes), at as u64, "larger than the");
}

#[test]
fn child_extent_past_its_parent_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(sample("chunking/xpptut15-r0014-s000-c000.xtc2")).unwrap();
    // The first child of the first L1's root: make it claim more than the datagram holds.
    let offs = dgram_offsets(&bytes);
    let l1 = offs[4];
    let at = l1 + 24 + 8;
    bytes[at..at + 4].copy_from_slice(&100_000u32.to_le_bytes());
    expect_error_at(&write(dir.path(), "past.xtc2", &bytes), at as u64, "past its parent");
}

#[test]
fn unknown_names_id_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(sample("chunking/xpptut15-r0014-s000-c000.xtc2")).unwrap();
    let offs = dgram_offsets(&bytes);
    let l1 = offs[4];
    let at = l1 + 24; // src of the first ShapesData = its NamesId
    bytes[at..at + 4].copy_from_slice(&0x0abcu32.to_le_bytes());
    expect_error_at(&write(dir.path(), "names.xtc2", &bytes), at as u64, "invalid NamesId 0xabc");
}

#[test]
fn data_shorter_than_its_fields_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(sample("chunking/xpptut15-r0014-s000-c000.xtc2")).unwrap();
    let offs = dgram_offsets(&bytes);
    // A shape dimension blown up: the array then needs more bytes than Data holds.
    let l1 = offs[4];
    let dg = &bytes[l1..offs[5]];
    let shapes = (0..dg.len() - 12).find(|&k| u16::from_le_bytes([dg[k + 6], dg[k + 7]]) == 2 && u32::from_le_bytes(dg[k + 8..k + 12].try_into().unwrap()) > 12).unwrap();
    let at = l1 + shapes + 12;
    bytes[at..at + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
    let e = read_all(&write(dir.path(), "shape.xtc2", &bytes)).unwrap_err().to_string();
    assert!(e.contains("needs") && e.contains("bytes but Data has"), "{e}");
    assert!(e.contains("names.xtc2") || e.contains("shape.xtc2"), "{e}");
}

/// Every single-byte flip and many cuts of every sample: errors are fine, panics are not.
#[test]
fn byte_flips_and_cuts_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut tried = 0;
    for rel in ["chunking/xpptut15-r0014-s000-c000.xtc2", "fakesteps/smalldata/xpptut15-r0014-s000-c000.smd.xtc2", "test_ts.xtc2"] {
        let bytes = std::fs::read(sample(rel)).unwrap();
        let path = dir.path().join("f.xtc2");
        // Flip bytes at a deterministic spread of positions, favouring headers.
        let mut positions: Vec<usize> = dgram_offsets(&bytes).iter().flat_map(|&o| o..(o + 64).min(bytes.len())).collect();
        positions.extend((0..bytes.len()).step_by(bytes.len() / 300 + 1));
        for (k, &p) in positions.iter().enumerate() {
            let mut b = bytes.clone();
            b[p] ^= [0xff, 0x80, 0x01, 0x10][k % 4];
            std::fs::write(&path, &b).unwrap();
            let r = std::panic::catch_unwind(|| read_all(&path).map(|_| ()));
            assert!(r.is_ok(), "{rel}: flipping byte {p} panicked");
            if let Ok(Err(e)) = r {
                assert!(e.to_string().contains("f.xtc2"), "{e}");
            }
            tried += 1;
        }
        for cut in (0..bytes.len()).step_by(bytes.len() / 50 + 1) {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(std::panic::catch_unwind(|| read_all(&path)).is_ok(), "{rel}: cut at {cut} panicked");
        }
    }
    assert!(tried > 1000);
}

/// Inputs the fuzzers' hand-built regressions found (xtc/fuzz/regressions).
#[test]
fn zero_length_arrays_in_every_row_make_a_valid_batch() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/parse-zero-length-array.xtc2");
    let batches = xtc::table::read_events(&Source::Files(vec![path]), TableOptions::default()).unwrap();
    assert_eq!(batches.len(), 1);
    let col = batches[0].column_by_name("x..a").expect("column x..a (the alg name is empty)");
    assert_eq!(col.len(), 1);
    assert!(matches!(col.data_type(), arrow_schema::DataType::List(_)));
}

#[test]
fn an_smd_offset_near_u64_max_is_an_error_not_an_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let smd_dir = dir.path().join("smalldata");
    std::fs::create_dir_all(&smd_dir).unwrap();
    for file in ["run-smd-offset-overflow.bin", "run-smd-offset-overflow-2.bin"] {
        let bin = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(file)).unwrap();
        // The `run` target's layout: u32 length + bytes per file; part 0 is the smd stream,
        // part 1 (absent or short here) its bigdata chunk.
        let n = u32::from_le_bytes(bin[..4].try_into().unwrap()) as usize;
        let smd = &bin[4..(4 + n).min(bin.len())];
        let rest = &bin[(4 + n).min(bin.len())..];
        let big = if rest.len() >= 4 { &rest[4..(4 + u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize).min(rest.len())] } else { &[][..] };
        std::fs::write(smd_dir.join("x-r0001-s000-c000.smd.xtc2"), smd).unwrap();
        std::fs::write(dir.path().join("x-r0001-s000-c000.xtc2"), big).unwrap();
        let src = Source::parse(&format!("exp=x:run=1:dir={}", dir.path().display())).unwrap();
        let r = std::panic::catch_unwind(|| xtc::table::read_events(&src, TableOptions::default()));
        let e = r.expect("no panic").unwrap_err().to_string();
        assert!(e.contains("x-r0001-s000-c000"), "{file}: {e}");
    }
}
