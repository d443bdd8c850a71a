//! The array functions in `%%sql` over a run loaded into the catalog (psana's Jungfrau file,
//! raw u16 frames of shape (1, 512, 1024) from the Arrow metadata): each value equals the same
//! reduction computed here from the raw values the `xtc` crate decodes, and an aggregate of a
//! function (planned by the live planner) equals the sum of the per-event values.

use arrow_array::{Array, FixedSizeListArray, UInt16Array};
use query::{Catalog, LoadOptions};

fn file() -> String {
    format!("{}/../../shared/data/xtc2/detector/test_jungfrau05M_calib.xtc2", env!("CARGO_MANIFEST_DIR"))
}

fn raw_frames() -> Vec<Vec<u16>> {
    let source = xtc::Source::parse(&format!("files={}", file())).unwrap();
    let opts = xtc::table::TableOptions { columns: Some(vec!["jungfrau.raw.raw".into()]), ..Default::default() };
    let mut out = Vec::new();
    for batch in xtc::table::read_events(&source, opts).unwrap() {
        let raw = batch.column_by_name("jungfrau.raw.raw").unwrap().as_any().downcast_ref::<FixedSizeListArray>().unwrap().clone();
        for row in 0..batch.num_rows() {
            out.push(raw.value(row).as_any().downcast_ref::<UInt16Array>().unwrap().values().to_vec());
        }
    }
    out
}

#[test]
fn array_functions_in_sql_over_a_loaded_run() {
    let mut c = Catalog::new();
    c.load_run("r", &format!("files={}", file()), LoadOptions::default()).unwrap();
    assert_eq!(c.shapes().get("jungfrau.raw.raw"), Some(&vec![1, 512, 1024]));
    let df = c
        .sql(
            "SELECT roi_sum(jungfrau.raw.raw, 10, 30, 40, 90) AS s, roi_count(jungfrau.raw.raw, 0, 512, 0, 1024, 16000) AS n, \
             projection(jungfrau.raw.raw, 1, 0, 4, 0, 1024) AS p FROM r ORDER BY timestamp",
        )
        .unwrap();
    let frames = raw_frames();
    assert_eq!(df.height(), frames.len());
    for (k, raw) in frames.iter().enumerate() {
        let at = |r: usize, c: usize| raw[r * 1024 + c] as f64;
        let want: f64 = (10..30).flat_map(|r| (40..90).map(move |c| (r, c))).map(|(r, c)| at(r, c)).sum();
        assert_eq!(df.column("s").unwrap().f64().unwrap().get(k), Some(want));
        let count = raw.iter().filter(|&&v| v as f64 > 16000.0).count() as u64;
        assert_eq!(df.column("n").unwrap().u64().unwrap().get(k), Some(count));
        let p = df.column("p").unwrap().list().unwrap().get_as_series(k).unwrap();
        let p: Vec<f64> = p.f64().unwrap().into_no_null_iter().collect();
        assert_eq!(p, (0..4).map(|r| (0..1024).map(|c| at(r, c)).sum::<f64>()).collect::<Vec<_>>());
    }
    // An aggregate of a function: the live planner's partial/merge/final path.
    let total = c.sql("SELECT sum(roi_sum(jungfrau.raw.raw, 10, 30, 40, 90)) AS t FROM r").unwrap();
    let want: f64 = frames.iter().map(|raw| (10..30).flat_map(|r| (40..90).map(move |c| raw[r * 1024 + c] as f64)).sum::<f64>()).sum();
    assert_eq!(total.column("t").unwrap().f64().unwrap().get(0), Some(want));
    // A bad ROI is the query's error, naming the function.
    let e = c.sql("SELECT roi_sum(jungfrau.raw.raw, 0, 513, 0, 10) FROM r").unwrap_err().to_string();
    assert!(e.contains("roi_sum") && e.contains("outside the 512×1024 array"), "{e}");
}

#[test]
fn element_wise_aggregates_of_arrays() {
    let mut c = Catalog::new();
    c.load_run("r", &format!("files={}", file()), LoadOptions::default()).unwrap();
    let df = c.sql("SELECT count(*) AS n, avg(jungfrau.raw.raw) AS m, max(jungfrau.raw.raw) AS x FROM r").unwrap();
    let frames = raw_frames();
    let m = df.column("m").unwrap().list().unwrap().get_as_series(0).unwrap();
    let m: Vec<f64> = m.f64().unwrap().into_no_null_iter().collect();
    assert_eq!(m.len(), 512 * 1024);
    for i in (0..512 * 1024).step_by(997) {
        let want = frames.iter().map(|f| f[i] as f64).sum::<f64>() / frames.len() as f64;
        assert_eq!(m[i], want, "pixel {i}");
    }
    let x = df.column("x").unwrap().list().unwrap().get_as_series(0).unwrap();
    let x: Vec<f64> = x.f64().unwrap().into_no_null_iter().collect();
    assert!((0..512 * 1024).all(|i| x[i] == frames.iter().map(|f| f[i]).max().unwrap() as f64));
}
