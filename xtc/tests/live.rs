//! Live mode: a writer appends to `.inprogress` files (datagrams split across writes, bigdata
//! before smd, as the DAQ does) while the reader follows them.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use xtc::{RunReader, Source, TransitionId};

fn sample(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/xtc2").join(rel)
}

fn split_dgrams(bytes: &[u8]) -> Vec<&[u8]> {
    let mut v = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let n = xtc::dgram::dgram_size(&bytes[at..]).unwrap();
        v.push(&bytes[at..at + n]);
        at += n;
    }
    v
}

struct Stream {
    smd: Vec<Vec<u8>>,
    big: Vec<Vec<u8>>,
    smd_path: PathBuf,
    big_path: PathBuf,
}

/// Copies the mixed_rate run into `dir` as a live DAQ would, in timestamp order; stops after
/// `stop_after` smd datagrams (a stalled writer) or renames the files when done.
fn write_live(dir: &Path, pause: Duration, stop_after: Option<usize>) {
    std::fs::create_dir_all(dir.join("smalldata")).unwrap();
    let mut streams: Vec<Stream> = (0..2)
        .map(|s| {
            let name = format!("xpptut15-r0014-s{s:03}-c000");
            Stream {
                smd: split_dgrams(&std::fs::read(sample(&format!("mixed_rate/smalldata/{name}.smd.xtc2"))).unwrap())
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
                big: split_dgrams(&std::fs::read(sample(&format!("mixed_rate/{name}.xtc2"))).unwrap())
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
                smd_path: dir.join(format!("smalldata/{name}.smd.xtc2.inprogress")),
                big_path: dir.join(format!("{name}.xtc2.inprogress")),
            }
        })
        .collect();
    let mut order: Vec<(u64, usize, usize)> = streams
        .iter()
        .enumerate()
        .flat_map(|(s, st)| st.smd.iter().enumerate().map(move |(k, d)| (u64::from_le_bytes(d[..8].try_into().unwrap()), s, k)))
        .collect();
    order.sort();
    let open = |p: &Path| OpenOptions::new().create(true).append(true).open(p).unwrap();
    let mut files: Vec<_> = streams.iter().map(|s| (open(&s.big_path), open(&s.smd_path))).collect();
    for (n, &(_, s, k)) in order.iter().enumerate() {
        if stop_after == Some(n) {
            return;
        }
        let (big, smd) = &mut files[s];
        big.write_all(&streams[s].big[k]).unwrap();
        big.flush().unwrap();
        // Split each smd datagram across two writes: the reader must wait for the rest.
        let d = &streams[s].smd[k];
        let half = d.len() / 2;
        smd.write_all(&d[..half]).unwrap();
        smd.flush().unwrap();
        thread::sleep(pause);
        smd.write_all(&d[half..]).unwrap();
        smd.flush().unwrap();
    }
    for s in streams.iter_mut() {
        for p in [&s.smd_path, &s.big_path] {
            std::fs::rename(p, p.to_str().unwrap().strip_suffix(".inprogress").unwrap()).unwrap();
        }
    }
}

fn live_source(dir: &Path, poll_ms: u64, retries: u32) -> Source {
    Source::parse(&format!("exp=xpptut15:run=14:dir={}:live:poll_ms={poll_ms}:max_retries={retries}", dir.display())).unwrap()
}

#[test]
fn follows_a_growing_run_and_ends_at_endrun() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let writer = {
        let dir = dir.clone();
        thread::spawn(move || write_live(&dir, Duration::from_millis(1), None))
    };
    // Let the files appear; the reader waits for a stable file list.
    thread::sleep(Duration::from_millis(30));
    let mut r = RunReader::open(&live_source(&dir, 5, 400)).unwrap();
    let mut seen = Vec::new();
    let mut last_ts = 0;
    let mut during_write = 0;
    while let Some(b) = r.next().unwrap() {
        assert!(b.timestamp > last_ts || seen.is_empty(), "in order, each once");
        last_ts = b.timestamp;
        if b.service == TransitionId::L1Accept {
            // Bigdata was fetched for every member.
            for (_, dg) in r.members() {
                assert!(dg.bytes().len() > 76, "bigdata, not the smd record");
            }
            if !writer.is_finished() {
                during_write += 1;
            }
        }
        seen.push((b.service, r.members().count()));
    }
    writer.join().unwrap();
    let l1 = seen.iter().filter(|s| s.0 == TransitionId::L1Accept).count();
    assert_eq!(l1, 100);
    assert_eq!(seen.iter().filter(|s| s.0 == TransitionId::L1Accept && s.1 == 2).count(), 10);
    assert_eq!(seen.last().unwrap().0, TransitionId::EndRun);
    assert_eq!(seen.len(), 100 + 3 + 7);
    assert!(during_write > 10, "events were read while the run was written ({during_write})");
}

#[test]
fn a_stalled_writer_gives_a_clear_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write_live(&dir, Duration::ZERO, Some(40));
    let started = Instant::now();
    let mut r = RunReader::open(&live_source(&dir, 10, 20)).unwrap();
    let mut n = 0;
    let err = loop {
        match r.next() {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("a stalled live run must not end quietly"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(n > 20 && n < 40, "read what was there first ({n})");
    assert!(err.contains(".inprogress") && err.contains("no new data at offset"), "{err}");
    assert!(err.contains("stalled"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn offline_reading_of_inprogress_files_stops_at_their_end() {
    let tmp = tempfile::tempdir().unwrap();
    write_live(tmp.path(), Duration::ZERO, Some(60));
    let src = Source::parse(&format!("exp=xpptut15:run=14:dir={}", tmp.path().display())).unwrap();
    let mut r = RunReader::open(&src).unwrap();
    let mut n = 0;
    while r.next().unwrap().is_some() {
        n += 1;
    }
    assert!(n > 40 && n <= 60, "{n}");
}
