//! Part files written batch by batch, joined, and read back through the HDF5 library and
//! polars: values against the rows the test built.

use polars::prelude::*;
use smalldata::{finish_job, part_path, prepare, write_summaries, PartWriter};

fn batch(ts: &[u64], x: &[Option<f64>], n: &[Option<i32>]) -> DataFrame {
    df!("timestamp" => ts, "det.x" => x, "n" => n).unwrap()
}

#[test]
fn two_parts_join_into_virtual_datasets_with_psanas_missing_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.h5");
    std::fs::write(dir.path().join("run_part5.h5"), b"left by an earlier job").unwrap();
    let removed = prepare(&path, true).unwrap();
    assert_eq!(removed, vec![dir.path().join("run_part5.h5")]);

    let mut p0 = PartWriter::create(&path, Some(0)).unwrap();
    p0.append(&batch(&[10, 12], &[Some(1.5), None], &[Some(3), Some(4)])).unwrap();
    // A later batch without `n`: its rows read the missing value.
    p0.append(&df!("timestamp" => [14u64], "det.x" => [2.5f64]).unwrap()).unwrap();
    let w0 = p0.finish().unwrap();
    assert_eq!((w0.path.file_name().unwrap().to_str().unwrap(), w0.rows), ("run_part0.h5", 3));

    // Part 1 has a column part 0 lacks (its rows there read the fill value), and `n` from its
    // second batch only (its first row reads 0, as psana backfills).
    let mut p1 = PartWriter::create(&path, Some(1)).unwrap();
    p1.append(&df!("timestamp" => [11u64], "det.x" => [-1.0f64], "late" => [7.0f32]).unwrap()).unwrap();
    p1.append(&df!("timestamp" => [13u64], "det.x" => [0.25f64], "late" => [8.0f32], "n" => [6i32]).unwrap()).unwrap();
    p1.finish().unwrap();

    let joined = finish_job(&path, Some(2)).unwrap().unwrap();
    assert_eq!((joined.rows, joined.datasets, joined.skipped.len()), (5, 4, 0));
    let f = hdf5::File::open(&path).unwrap();
    assert_eq!(f.dataset("timestamp").unwrap().read_raw::<i64>().unwrap(), vec![10, 12, 14, 11, 13]);
    let x = f.dataset("det/x").unwrap().read_raw::<f64>().unwrap();
    assert_eq!((x[0], x[2], x[3], x[4]), (1.5, 2.5, -1.0, 0.25));
    assert!(x[1].is_nan());
    assert_eq!(f.dataset("n").unwrap().read_raw::<i32>().unwrap(), vec![3, 4, -99999, 0, 6]);
    let late = f.dataset("late").unwrap().read_raw::<f32>().unwrap();
    assert!(late[..3].iter().all(|v| v.is_nan()));
    assert_eq!(&late[3..], &[7.0, 8.0]);
    assert_eq!(f.dataset("late").unwrap().layout(), hdf5::dataset::Layout::Virtual);
    drop(f);

    let names = write_summaries(&path, &df!("sums.n" => [13i64]).unwrap()).unwrap();
    assert_eq!(names, vec!["sums/n"]);
    let f = hdf5::File::open(&path).unwrap();
    assert_eq!(f.dataset("sums/n").unwrap().read_raw::<i64>().unwrap(), vec![13]);
    drop(f);
    let again = write_summaries(&path, &df!("late" => [1.0f64]).unwrap()).unwrap_err().to_string();
    assert!(again.contains("column `late` is a summary named /late but /late is already a dataset in"), "{again}");
    let below = write_summaries(&path, &df!("n.sum" => [1.0f64]).unwrap()).unwrap_err().to_string();
    assert!(below.contains("is a summary named /n/sum but /n is already a dataset"), "{below}");
}

#[test]
fn an_unreadable_part_is_skipped_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.h5");
    let mut p0 = PartWriter::create(&path, Some(0)).unwrap();
    p0.append(&batch(&[1, 2], &[Some(1.0), Some(2.0)], &[Some(1), Some(2)])).unwrap();
    p0.finish().unwrap();
    std::fs::write(part_path(&path, Some(1)).unwrap(), b"not hdf5").unwrap();
    let joined = finish_job(&path, Some(3)).unwrap().unwrap();
    assert_eq!(joined.rows, 2);
    assert_eq!(joined.skipped.len(), 2, "{:?}", joined.skipped);
    assert!(joined.skipped[0].contains("x_part1.h5: cannot be read"), "{:?}", joined.skipped);
    assert!(joined.skipped[1].contains("x_part2.h5: missing"), "{:?}", joined.skipped);
}

#[test]
fn parquet_parts_read_as_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.parquet");
    prepare(&path, true).unwrap();
    for part in 0..2u64 {
        let mut w = PartWriter::create(&path, Some(part as usize)).unwrap();
        for b in 0..3u64 {
            let ts: Vec<u64> = (0..1000).map(|i| part * 1_000_000 + b * 1000 + i).collect();
            let x: Vec<Option<f64>> = ts.iter().map(|&t| (t % 7 != 0).then_some(t as f64 * 0.5)).collect();
            w.append(&df!("timestamp" => ts, "x" => x).unwrap()).unwrap();
        }
        let written = w.finish().unwrap();
        assert_eq!(written.rows, 3000);
        assert!(written.bytes > 0);
    }
    let files: Vec<_> = std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert_eq!(files, vec!["part-00000.parquet", "part-00001.parquet"]);
    let mut total = 0;
    let mut nulls = 0;
    for f in &files {
        let df = ParquetReader::new(std::fs::File::open(path.join(f)).unwrap()).finish().unwrap();
        total += df.height();
        nulls += df.column("x").unwrap().null_count();
        let ts = df.column("timestamp").unwrap().u64().unwrap();
        let x = df.column("x").unwrap().f64().unwrap();
        for (t, v) in ts.into_no_null_iter().zip(x.iter()) {
            assert_eq!(v, (t % 7 != 0).then_some(t as f64 * 0.5));
        }
    }
    assert_eq!(total, 6000);
    assert_eq!(nulls, (0..2u64).flat_map(|p| (0..3000).map(move |i| p * 1_000_000 + (i / 1000) * 1000 + i % 1000)).filter(|t| t % 7 == 0).count());
}
