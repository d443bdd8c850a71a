//! Simulator round trip through the `events` table: `write_run` → `xtc::table` (Arrow batches)
//! reproduces the truth file exactly, batch boundaries and chunk switches included.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type};
use arrow_array::{Array, RecordBatch};
use xtc::table::{read_events, TableOptions};
use xtc::Source;

#[derive(Default, Debug)]
struct Step {
    events: u64,
    laser_on: u64,
    xray_on: u64,
    sums: BTreeMap<String, f64>,
    area: i64,
    image: i64,
    motor: Option<f64>,
    first_ts: Option<u64>,
    last_ts: Option<u64>,
}

#[test]
fn events_table_reproduces_the_truth_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = sim::SimConfig::new(tmp.path());
    cfg.events = 2500;
    cfg.steps = 5;
    cfg.streams = 3;
    cfg.chunk_bytes = 16 << 10;
    cfg.image = Some((16, 8));
    let truth = sim::write_run(&cfg).unwrap();

    // An odd batch size so steps and chunks straddle batches.
    let opts = TableOptions { batch_size: 777, ..Default::default() };
    let batches: Vec<RecordBatch> = read_events(&Source::parse(&truth.source).unwrap(), opts).unwrap();
    assert!(batches.len() > 3);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows as u64, truth.events);

    let mut steps: BTreeMap<u32, Step> = BTreeMap::new();
    let mut last_ts = 0u64;
    for b in &batches {
        let col = |n: &str| b.column_by_name(n).unwrap_or_else(|| panic!("no column {n}"));
        let ts = col("timestamp").as_primitive::<UInt64Type>();
        let run = col("run").as_primitive::<UInt32Type>();
        let step = col("step").as_primitive::<UInt32Type>();
        let pulse = col("pulse_id").as_primitive::<UInt64Type>();
        let laser = col("lasr.raw.laser_on").as_primitive::<UInt8Type>();
        let destn = col("timing.raw.ebeamDestn").as_primitive::<UInt8Type>();
        let diode = col("diode.raw.signal").as_primitive::<Float64Type>();
        let ipm = col("ipm2.raw.sum").as_primitive::<Float64Type>();
        let fim = col("fim.fex.intensity").as_primitive::<Float64Type>();
        let area = col("hsd.fex.area").as_primitive::<Int64Type>();
        let motor = col("scan.motor").as_primitive::<Float64Type>();
        let image = col("cam.raw.image").as_fixed_size_list();
        assert_eq!(image.value_length(), 16 * 8);
        assert_eq!(pulse.null_count(), 0, "pulse ids from timing");
        for r in 0..b.num_rows() {
            assert!(ts.value(r) > last_ts, "rows in timestamp order, each once");
            last_ts = ts.value(r);
            assert_eq!(run.value(r), cfg.run);
            let s = steps.entry(step.value(r)).or_default();
            s.events += 1;
            s.laser_on += (laser.value(r) == 1) as u64;
            s.xray_on += (destn.value(r) == 3) as u64;
            *s.sums.entry("diode.raw.signal".into()).or_insert(0.0) += diode.value(r);
            *s.sums.entry("ipm2.raw.sum".into()).or_insert(0.0) += ipm.value(r);
            if fim.is_valid(r) {
                *s.sums.entry("fim.fex.intensity".into()).or_insert(0.0) += fim.value(r);
            }
            s.area += area.value(r);
            s.image += image.value(r).as_primitive::<UInt16Type>().values().iter().map(|&p| p as i64).sum::<i64>();
            match s.motor {
                None => s.motor = Some(motor.value(r)),
                Some(m) => assert_eq!(m, motor.value(r), "scan value repeated within the step"),
            }
            s.first_ts.get_or_insert(ts.value(r));
            s.last_ts = Some(ts.value(r));
        }
    }
    assert_eq!(steps.len(), truth.steps.len());
    for t in &truth.steps {
        let s = &steps[&t.step];
        assert_eq!(s.events, t.events, "step {}", t.step);
        assert_eq!(s.laser_on, t.laser_on, "step {}", t.step);
        assert_eq!(s.xray_on, t.xray_on, "step {}", t.step);
        assert_eq!(s.motor, Some(t.delay_ps), "step {}", t.step);
        assert_eq!((s.first_ts, s.last_ts), (t.first_timestamp, t.last_timestamp), "step {}", t.step);
        for key in ["diode.raw.signal", "ipm2.raw.sum", "fim.fex.intensity"] {
            // Bit-exact: the same values added in the same order.
            assert_eq!(s.sums[key].to_bits(), t.sums[key].to_bits(), "step {} {key}: {} vs {}", t.step, s.sums[key], t.sums[key]);
        }
        assert_eq!(s.area, t.int_sums["hsd.fex.area"], "step {}", t.step);
        assert_eq!(s.image, t.int_sums["cam.raw.image"], "step {}", t.step);
    }
    // The run really switched chunks.
    assert!(truth.streams.iter().all(|s| s.chunks.len() >= 2), "{:?}", truth.streams.iter().map(|s| s.chunks.len()).collect::<Vec<_>>());
}
