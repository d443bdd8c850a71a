//! `<det>.raw.calib` columns (`shared/spec/calibration.md` §3): computed on the worker, only
//! for the detectors a query names, from the raw arrays of every segment of the event and the
//! constants of the job's calib dir, loaded once per process for each detector and run.
//! psana's shape (segments, rows, cols) is kept: one fixed-size list of f32 per event, C order.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, UInt16Array, UInt32Array};
use arrow_buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};
use detector::{Calibrator, DetectorConstants, DetectorKind, DetectorSpec};

const CALIB_SUFFIX: &str = ".raw.calib";
const RAW_SUFFIX: &str = ".raw.raw";

/// The detector a `<det>.raw.calib` name asks to calibrate.
pub fn calib_detector(column: &str) -> Option<&str> {
    column.strip_suffix(CALIB_SUFFIX).filter(|d| !d.is_empty() && !d.contains('.'))
}

/// The projection entries a detector's calib needs: the raw array of segment 0 and of the
/// others (`xtc::table::TableOptions::columns`).
pub fn raw_projection(det: &str) -> [String; 2] {
    [format!("{det}{RAW_SUFFIX}"), format!("{det}_*{RAW_SUFFIX}")]
}

/// The segment whose raw array `column` is, if it is one of `det`'s
/// (`<det>.raw.raw` is segment 0, `<det>_<n>.raw.raw` segment n).
pub fn raw_segment(det: &str, column: &str) -> Option<u32> {
    let rest = column.strip_prefix(det)?.strip_suffix(RAW_SUFFIX)?;
    if rest.is_empty() {
        return Some(0);
    }
    let n = rest.strip_prefix('_')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|&s| s > 0)
}

/// `<det>.raw.calib` for every detector with a raw array among `columns` (for the planner's
/// check of unknown columns and its suggestions).
pub fn calib_names(columns: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for c in columns {
        let Some(det) = c.strip_suffix(RAW_SUFFIX).filter(|d| !d.contains('.')) else { continue };
        // `<det>_<n>` is segment n of `<det>`.
        let det = match det.rsplit_once('_') {
            Some((d, n)) if !d.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => d,
            _ => det,
        };
        out.insert(format!("{det}{CALIB_SUFFIX}"));
    }
    out.into_iter().collect()
}

/// The calibrators of one worker process, per detector and run, and where they come from.
pub struct CalibColumns {
    calib_dir: Option<PathBuf>,
    /// Errors are kept too: a run without constants is not looked up again at every batch.
    calibrators: HashMap<(String, u32), Result<Arc<Calibrator>, String>>,
}

impl CalibColumns {
    pub fn new(calib_dir: Option<PathBuf>) -> Self {
        CalibColumns { calib_dir, calibrators: HashMap::new() }
    }

    /// Appends `<det>.raw.calib` for each of `detectors` whose raw arrays the batch holds. A
    /// detector that cannot be calibrated gets no column; its column name and error are
    /// returned, for the queries naming it.
    pub fn add(&mut self, batch: RecordBatch, detectors: &[String]) -> (RecordBatch, Vec<(String, String)>) {
        let mut errors = Vec::new();
        let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
        for det in detectors {
            let name = format!("{det}{CALIB_SUFFIX}");
            match self.calib_column(&batch, det, &name) {
                Ok(Some((field, array))) => {
                    fields.push(field);
                    arrays.push(array);
                }
                // No raw array of it in this Configure: the unknown-column check speaks.
                Ok(None) => {}
                Err(e) => errors.push((name, e)),
            }
        }
        if fields.len() == batch.num_columns() {
            return (batch, errors);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("calib columns have one value per row");
        (batch, errors)
    }

    fn calib_column(&mut self, batch: &RecordBatch, det: &str, name: &str) -> Result<Option<(Field, ArrayRef)>, String> {
        let schema = batch.schema();
        let mut segments: Vec<(u32, usize)> =
            schema.fields().iter().enumerate().filter_map(|(i, f)| Some((raw_segment(det, f.name())?, i))).collect();
        if segments.is_empty() {
            return Ok(None);
        }
        segments.sort();
        let det_type = schema.field(segments[0].1).metadata().get("detector").and_then(|d| d.strip_suffix("_raw")).unwrap_or_default().to_string();
        let kind = DetectorKind::from_det_type(&det_type)
            .ok_or_else(|| format!("`{name}`: psana has no calibration for detector type `{det_type}`"))?;
        if kind != DetectorKind::Jungfrau {
            return Err(format!("`{name}`: calibration of {kind} detectors in the job is not wired yet (Jungfrau is)"));
        }
        let spec = DetectorSpec::new(det, kind).expect("Jungfrau has a fixed panel");
        let panel = spec.panel_pixels();
        let (rows, cols) = spec.panel;
        let mut raws = Vec::with_capacity(segments.len());
        for &(segment, i) in &segments {
            let column = schema.field(i).name();
            let list = batch.column(i).as_any().downcast_ref::<FixedSizeListArray>().filter(|l| l.value_length() as usize == panel);
            let values = list.and_then(|l| l.values().as_any().downcast_ref::<UInt16Array>());
            match (list, values) {
                (Some(list), Some(values)) => raws.push((segment, list, values.values())),
                _ => {
                    return Err(format!(
                        "`{name}`: `{column}` (segment {segment}) is {}, expected u16 of shape (1,{rows},{cols}) per event",
                        describe(batch.column(i).data_type())
                    ));
                }
            }
        }
        let runs = batch.column_by_name("run").and_then(|r| r.as_any().downcast_ref::<UInt32Array>().cloned());
        let n = batch.num_rows();
        let frame = raws.len() * panel;
        let mut out = vec![0f32; n * frame];
        let mut valid = vec![true; n];
        for row in 0..n {
            if raws.iter().any(|(_, list, _)| list.is_null(row)) {
                // psana would calibrate the segments present; a frame whose shape changes
                // within a column cannot be stored, so the event has no calib.
                valid[row] = false;
                continue;
            }
            let run = runs.as_ref().filter(|r| r.is_valid(row)).map(|r| r.value(row));
            let run = run.ok_or_else(|| format!("`{name}`: the run number is unknown (no runinfo in BeginRun), so no constants can be chosen"))?;
            let calibrator = self.calibrator(&spec, det, run, segments.last().unwrap().0)?;
            let dst = &mut out[row * frame..(row + 1) * frame];
            for (k, (segment, list, values)) in raws.iter().enumerate() {
                let start = list.value_offset_at(row);
                calibrator
                    .calibrate(&[*segment], &values[start..start + panel], &mut dst[k * panel..(k + 1) * panel])
                    .map_err(|e| format!("`{name}`: {e}"))?;
            }
        }
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let nulls = (!valid.iter().all(|&v| v)).then(|| NullBuffer::new(BooleanBuffer::from(valid)));
        let values = Arc::new(Float32Array::new(ScalarBuffer::from(out), None));
        let array = FixedSizeListArray::new(item.clone(), frame as i32, values, nulls);
        let mut metadata = HashMap::new();
        metadata.insert("shape".to_string(), format!("{},{rows},{cols}", raws.len()));
        metadata.insert("detector".to_string(), format!("{det_type}_raw"));
        let field = Field::new(name, DataType::FixedSizeList(item, frame as i32), true).with_metadata(metadata);
        Ok(Some((field, Arc::new(array))))
    }

    /// The detector's calibrator for `run`, from the calib dir the first time it is asked for.
    fn calibrator(&mut self, spec: &DetectorSpec, det: &str, run: u32, max_segment: u32) -> Result<Arc<Calibrator>, String> {
        let calib_dir = self.calib_dir.clone();
        self.calibrators
            .entry((det.to_string(), run))
            .or_insert_with(|| {
                let root = calib_dir.ok_or_else(|| {
                    format!("`{det}.raw.calib` needs calibration constants: give --calib-dir DIR (beamtime run) or %source … --calib-dir DIR")
                })?;
                let constants = DetectorConstants::from_calib_dir(spec.clone(), &root, det, run, max_segment).map_err(|e| e.to_string())?;
                let calibrator = Calibrator::new(&constants, &[]).map_err(|e| e.to_string())?;
                // Said once per process: the job has no status line for it yet.
                for fallback in calibrator.fallbacks() {
                    eprintln!("beamtime-job: {det} run {run}: {fallback}");
                }
                Ok(Arc::new(calibrator))
            })
            .clone()
    }
}

fn describe(t: &DataType) -> String {
    match t {
        DataType::FixedSizeList(item, n) => format!("{n} values of {} per event", item.data_type()),
        DataType::List(item) => format!("a list of {} whose length changes between events", item.data_type()),
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calib_names_and_raw_segments_follow_the_events_table_naming() {
        assert_eq!(calib_detector("jungfrau.raw.calib"), Some("jungfrau"));
        assert_eq!(calib_detector("a.b.raw.calib"), None);
        assert_eq!(raw_segment("jungfrau", "jungfrau.raw.raw"), Some(0));
        assert_eq!(raw_segment("jungfrau", "jungfrau_3.raw.raw"), Some(3));
        assert_eq!(raw_segment("jungfrau", "jungfrau_x.raw.raw"), None);
        assert_eq!(raw_segment("jungfrau", "jungfrau.raw.frameCnt"), None);
        let cols = ["jungfrau.raw.raw", "epixquad_2.raw.raw", "diode.raw.signal"].map(String::from);
        assert_eq!(calib_names(&cols), ["epixquad.raw.calib", "jungfrau.raw.calib"]);
    }
}
