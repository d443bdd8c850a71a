//! `<det>.raw.calib` and `<det>.raw.image` columns (`shared/spec/calibration.md` §3–5): computed
//! on the worker, only for the detectors a query names, from the raw arrays of every segment of
//! the event, the detector's configuration records and its constants (calib dir, `cdb get`
//! exports, psana2's cache pickle or single files: [`contract::CalibSetting`]), loaded once per
//! process for each detector, run and Configure.
//!
//! `calib` keeps psana's shape (segments, rows, cols); `image` is the frame placed by the
//! geometry (the `geometry` constant or the type's default), holes filled, (rows, cols). Both are
//! one fixed-size list of f32 per event, C order, the shape in the field's `shape` metadata.
//! A camera's raw array already is its image (`<det>.raw.image` is its raw field): `calib` is
//! the calibrated image.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, UInt16Array, UInt32Array};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};
use detector::settings::CalibSetting;
use detector::setup::{CalibSource, PreparedDetector};
use detector::calib::archon;
use detector::{DetectorKind, DetectorSpec, Epix10kaConfig};
use xtc::ConfigRecord;

const CALIB_SUFFIX: &str = ".raw.calib";
const IMAGE_SUFFIX: &str = ".raw.image";
/// Raw arrays: `raw` (Jungfrau, epix…), `image` (cameras) and `value` (Archon).
const RAW_SUFFIXES: [&str; 3] = [".raw.raw", ".raw.image", ".raw.value"];

/// What a query asks of a detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Product {
    Calib,
    Image,
}

impl Product {
    fn suffix(self) -> &'static str {
        match self {
            Product::Calib => CALIB_SUFFIX,
            Product::Image => IMAGE_SUFFIX,
        }
    }
}

/// The detector and product a column name asks for: `<det>.raw.calib` or `<det>.raw.image`.
/// (`<det>.raw.image` of a camera is its raw field; the batch then already has it.)
pub fn calib_request(column: &str) -> Option<(&str, Product)> {
    [Product::Calib, Product::Image]
        .into_iter()
        .find_map(|p| Some((column.strip_suffix(p.suffix()).filter(|d| !d.is_empty() && !d.contains('.'))?, p)))
}

/// The detector a `<det>.raw.calib` name asks to calibrate.
pub fn calib_detector(column: &str) -> Option<&str> {
    calib_request(column).filter(|(_, p)| *p == Product::Calib).map(|(d, _)| d)
}

/// The projection entries a detector's calib needs: the raw arrays of segment 0 and of the
/// others (`xtc::table::TableOptions::columns`).
pub fn raw_projection(det: &str) -> Vec<String> {
    RAW_SUFFIXES.iter().flat_map(|s| [format!("{det}{s}"), format!("{det}_*{s}")]).collect()
}

/// The daq segment whose raw array `column` is, if it is one of `det`'s
/// (`<det>.raw.raw` is segment 0, `<det>_<n>.raw.raw` segment n; cameras `.raw.image`).
pub fn raw_segment(det: &str, column: &str) -> Option<u32> {
    let rest = column.strip_prefix(det)?;
    let rest = RAW_SUFFIXES.iter().find_map(|s| rest.strip_suffix(s))?;
    if rest.is_empty() {
        return Some(0);
    }
    let n = rest.strip_prefix('_')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|&s| s > 0)
}

/// `<det>.raw.calib` and `<det>.raw.image` for every detector with a raw array among `columns`
/// (for the planner's check of unknown columns and its suggestions).
pub fn calib_names(columns: &[String]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for c in columns {
        let Some(det) = RAW_SUFFIXES.iter().find_map(|s| c.strip_suffix(s)).filter(|d| !d.contains('.')) else { continue };
        // `<det>_<n>` is segment n of `<det>`.
        let det = match det.rsplit_once('_') {
            Some((d, n)) if !d.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => d,
            _ => det,
        };
        out.insert(format!("{det}{CALIB_SUFFIX}"));
        out.insert(format!("{det}{IMAGE_SUFFIX}"));
    }
    out.into_iter().collect()
}

/// One detector as a query wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub det: String,
    pub calib: bool,
    pub image: bool,
}

/// Gathers the detectors and products of `names` into `wanted`.
pub fn add_wanted(wanted: &mut Vec<Wanted>, names: &[String]) {
    for n in names {
        let Some((det, product)) = calib_request(n) else { continue };
        let i = match wanted.iter().position(|w| w.det == det) {
            Some(i) => i,
            None => {
                wanted.push(Wanted { det: det.to_string(), calib: false, image: false });
                wanted.len() - 1
            }
        };
        match product {
            Product::Calib => wanted[i].calib = true,
            Product::Image => wanted[i].image = true,
        }
    }
}

type Key = (String, u32, u32);

/// The calibrators of one worker process, per detector, run and Configure, and where their
/// constants come from.
pub struct CalibColumns {
    source: CalibSource,
    /// `<det>.raw.image` → its bins holding a good pixel, for `radial`.
    coverage: query::Coverage,
    /// Errors are kept too: a run without constants is not looked up again at every batch.
    prepared: HashMap<Key, Result<PreparedDetector, String>>,
    /// The calibrated frames' buffers, back from the batches that are done with them.
    frames: FramePool,
}

/// What [`CalibColumns::add`] found out besides the columns.
#[derive(Default)]
pub struct Added {
    /// Column name → why it cannot be computed, for the queries naming it.
    pub errors: Vec<(String, String)>,
    /// Column name → notices (psana's fallbacks), for the queries naming it.
    pub notices: Vec<(String, Vec<String>)>,
}

impl CalibColumns {
    pub fn new(calib_dir: Option<PathBuf>, settings: Vec<CalibSetting>) -> Self {
        CalibColumns { source: CalibSource::new(calib_dir, settings), coverage: Default::default(), prepared: HashMap::new(), frames: FramePool::default() }
    }

    /// The good bins of the image columns made so far (gaps and masked pixels are not).
    pub fn coverage(&self) -> &query::Coverage {
        &self.coverage
    }

    /// Appends `<det>.raw.calib` / `<det>.raw.image` for each of `wanted` whose raw arrays the
    /// batch holds. `configs(det)` gives the detector's configuration records and `configure`
    /// counts the Configures seen (new constants and configs with each).
    pub fn add(
        &mut self,
        batch: RecordBatch,
        wanted: &[Wanted],
        configs: &dyn Fn(&str) -> Vec<ConfigRecord>,
        configure: u32,
    ) -> (RecordBatch, Added) {
        let mut added = Added::default();
        let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
        for w in wanted {
            match self.columns_for(&batch, w, configs, configure) {
                Ok((columns, notices, image_error)) => {
                    for (field, array) in columns {
                        added.notices.push((field.name().clone(), notices.clone()));
                        fields.push(field);
                        arrays.push(array);
                    }
                    if let Some(e) = image_error {
                        added.errors.push((format!("{}{}", w.det, IMAGE_SUFFIX), e));
                    }
                }
                Err(e) => {
                    for (p, on) in [(Product::Calib, w.calib), (Product::Image, w.image)] {
                        if on {
                            added.errors.push((format!("{}{}", w.det, p.suffix()), e.clone()));
                        }
                    }
                }
            }
        }
        if fields.len() == batch.num_columns() {
            return (batch, added);
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("calib columns have one value per row");
        (batch, added)
    }

    #[allow(clippy::type_complexity)]
    fn columns_for(
        &mut self,
        batch: &RecordBatch,
        w: &Wanted,
        configs: &dyn Fn(&str) -> Vec<ConfigRecord>,
        configure: u32,
    ) -> Result<(Vec<(Field, ArrayRef)>, Vec<String>, Option<String>), String> {
        let det = w.det.as_str();
        let name = |p: Product| format!("{det}{}", p.suffix());
        let schema = batch.schema();
        let mut fields: Vec<(u32, usize)> =
            schema.fields().iter().enumerate().filter_map(|(i, f)| Some((raw_segment(det, f.name())?, i))).collect();
        if fields.is_empty() {
            // No raw array of it in this Configure: the unknown-column check speaks.
            return Ok((Vec::new(), Vec::new(), None));
        }
        fields.sort();
        let first = schema.field(fields[0].1);
        let det_type = first.metadata().get("detector").and_then(|d| d.strip_suffix("_raw")).unwrap_or_default().to_string();
        let kind = DetectorKind::from_det_type(&det_type)
            .ok_or_else(|| format!("`{}`: psana has no calibration for detector type `{det_type}`", name(Product::Calib)))?;
        // A camera's image is its raw field: it has no separate image product. An Archon's
        // image is its calib without the fake columns.
        let camera_like = kind.fixed_panel().is_none();
        let archon = kind == DetectorKind::Archon;
        let mut want_image = w.image && (!camera_like || archon);
        // An image that cannot be drawn (a bad geometry) fails the image queries only.
        let mut image_error = None;
        if w.image && kind == DetectorKind::Camera && schema.index_of(&name(Product::Image)).is_err() {
            return Err(format!("`{}`: a {kind} has no geometry; its calib is its image", name(Product::Image)));
        }
        if !w.calib && !want_image {
            return Ok((Vec::new(), Vec::new(), None));
        }
        let spec = match DetectorSpec::new(det, kind) {
            Some(spec) => spec,
            None => {
                let shape = first.metadata().get("shape").cloned().unwrap_or_default();
                let dims: Vec<usize> = shape.split(',').filter_map(|d| d.parse().ok()).collect();
                match dims[..] {
                    [rows, cols] => DetectorSpec::with_panel(det, kind, (rows, cols)),
                    _ => return Err(format!("`{}`: {} is not a 2-D image (shape `{shape}`)", name(Product::Calib), first.name())),
                }
            }
        };
        let panel = spec.panel_pixels();
        let (rows, cols) = spec.panel;
        // One raw field holds one panel (Jungfrau, epix10ka) or several (the epixM320's 4 ASICs).
        let mut raws = Vec::with_capacity(fields.len());
        let mut segments = Vec::new();
        for &(segment, i) in &fields {
            let column = schema.field(i).name();
            let list = batch.column(i).as_any().downcast_ref::<FixedSizeListArray>();
            let per_field = list.map(|l| l.value_length() as usize).filter(|&n| n > 0 && n % panel == 0).map(|n| n / panel);
            let values = list.and_then(|l| l.values().as_any().downcast_ref::<UInt16Array>());
            match (list, values, per_field) {
                (Some(list), Some(values), Some(k)) => {
                    segments.extend((0..k as u32).map(|j| segment * k as u32 + j));
                    raws.push((list, values.values(), k * panel));
                }
                _ => {
                    return Err(format!(
                        "`{}`: `{column}` (segment {segment}) is {}, expected u16 panels of {rows}×{cols} per event",
                        name(Product::Calib),
                        describe(batch.column(i).data_type())
                    ));
                }
            }
        }
        let runs = batch.column_by_name("run").and_then(|r| r.as_any().downcast_ref::<UInt32Array>().cloned());
        let n = batch.num_rows();
        let frame: usize = raws.iter().map(|r| r.2).sum();
        let mut valid = vec![true; n];
        let mut calib_out = if w.calib { self.frames.take(n * frame) } else { Frames::default() };
        let mut scratch = if w.calib { Vec::new() } else { vec![0f32; frame] };
        let mut image_out = Frames::default();
        let mut image_shape = (0, 0);
        let mut notices = Vec::new();
        for row in 0..n {
            if raws.iter().any(|(list, _, _)| list.is_null(row)) {
                // psana would calibrate the segments present; a frame whose shape changes
                // within a column cannot be stored, so the event has no calib.
                valid[row] = false;
                continue;
            }
            let run = runs.as_ref().filter(|r| r.is_valid(row)).map(|r| r.value(row));
            let run = run.ok_or_else(|| format!("`{det}`: the run number is unknown (no runinfo in BeginRun), so no constants can be chosen"))?;
            let max_segment = *segments.iter().max().expect("one segment at least");
            let key = (det.to_string(), run, configure);
            if !self.prepared.contains_key(&key) {
                let epix = if matches!(kind, DetectorKind::Epix10ka | DetectorKind::Epixhr2x2) { epix10ka_configs(kind, &configs(det)) } else { Vec::new() };
                let prepared = self.source.prepare(&spec, run, max_segment, &epix);
                self.prepared.insert(key.clone(), prepared);
            }
            let prepared = self.prepared.get_mut(&key).expect("inserted above").as_mut().map_err(|e| e.clone())?;
            notices.clone_from(&prepared.notices);
            let dst = if w.calib { &mut calib_out[row * frame..(row + 1) * frame] } else { &mut scratch[..] };
            let mut at = 0;
            for (list, values, len) in &raws {
                let start = list.value_offset_at(row);
                let segs = &segments[at / panel..(at + len) / panel];
                prepared
                    .calibrator
                    .calibrate(segs, &values[start..start + len], &mut dst[at..at + len])
                    .map_err(|e| format!("`{}`: {e}", name(Product::Calib)))?;
                at += len;
            }
            if want_image && archon {
                let image = match archon::image(det, rows, dst) {
                    Ok(image) => image,
                    Err(e) => {
                        image_error = Some(format!("`{}`: {e}", name(Product::Image)));
                        want_image = false;
                        continue;
                    }
                };
                if image_out.is_empty() {
                    image_shape = (rows, archon::IMAGE_COLS);
                    image_out = self.frames.take(n * image.len());
                }
                image_out[row * image.len()..(row + 1) * image.len()].copy_from_slice(&image);
            } else if want_image {
                let mapper = match prepared.mapper(&segments) {
                    Ok(m) => m,
                    Err(e) => {
                        image_error = Some(format!("`{}`: {e}", name(Product::Image)));
                        want_image = false;
                        continue;
                    }
                };
                if image_out.is_empty() {
                    match prepared.image_coverage(&segments) {
                        Ok(good) => {
                            self.coverage.insert(
                                name(Product::Image),
                                query::ImageBins {
                                    good,
                                    pixel_um: mapper.pixel_size_um(),
                                },
                            );
                        }
                        Err(e) => image_error = Some(format!("`{}`: {e}", name(Product::Image))),
                    }
                }
                let (r, c) = mapper.shape();
                if image_out.is_empty() {
                    image_shape = (r, c);
                    image_out = self.frames.take(n * r * c);
                } else if image_shape != (r, c) {
                    return Err(format!("`{}`: the image shape changed within a batch", name(Product::Image)));
                }
                let bins = r * c;
                mapper
                    .assemble_into(dst, &mut image_out[row * bins..(row + 1) * bins])
                    .map_err(|e| format!("`{}`: {e}", name(Product::Image)))?;
            }
        }
        let mut out = Vec::new();
        let metadata = |shape: String| {
            HashMap::from([("shape".to_string(), shape), ("detector".to_string(), format!("{det_type}_raw"))])
        };
        if w.calib {
            let shape = if camera_like { format!("{rows},{cols}") } else { format!("{},{rows},{cols}", segments.len()) };
            out.push(f32_list(&name(Product::Calib), self.frames.lend(calib_out), frame, &valid, metadata(shape)));
        }
        if want_image {
            if image_out.is_empty() {
                // No event had a frame: the shape is still the geometry's.
                image_shape = (0, 0);
            }
            let bins = image_shape.0 * image_shape.1;
            if bins > 0 {
                out.push(f32_list(&name(Product::Image), self.frames.lend(image_out), bins, &valid, metadata(format!("{},{}", image_shape.0, image_shape.1))));
            }
        }
        Ok((out, notices, image_error))
    }
}

/// Each epix10ka (or epixhr2x2) segment's config values from the Configure's `config` records.
fn epix10ka_configs(kind: DetectorKind, configs: &[ConfigRecord]) -> Vec<(u32, Epix10kaConfig)> {
    configs
        .iter()
        .filter(|c| c.alg_name == "config")
        .filter_map(|c| Some((c.segment, Epix10kaConfig::from_fields(kind, |name| c.field(name)?.to_i64())?)))
        .collect()
}

fn f32_list(name: &str, values: Buffer, len: usize, valid: &[bool], metadata: HashMap<String, String>) -> (Field, ArrayRef) {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let nulls = (!valid.iter().all(|&v| v)).then(|| NullBuffer::new(BooleanBuffer::from(valid.to_vec())));
    let count = values.len() / std::mem::size_of::<f32>();
    let values = Arc::new(Float32Array::new(ScalarBuffer::new(values, 0, count), None));
    let array = FixedSizeListArray::new(item.clone(), len as i32, values, nulls);
    let field = Field::new(name, DataType::FixedSizeList(item, len as i32), true).with_metadata(metadata);
    (field, Arc::new(array))
}

/// Buffers for a batch's calibrated frames and images, reused once the batch is dropped: each
/// is megabytes per event, and a fresh one costs the kernel zeroing its pages (a fifth of the
/// time of a mean image). Their values are overwritten before use: every valid event's frame
/// is calibrated and every image bin assembled; a null event's values are never read.
#[derive(Clone, Default)]
struct FramePool(Arc<Mutex<Vec<Vec<f32>>>>);

/// A batch holds a few frame buffers at once (calib, image) and polars keeps one or two
/// batches alive: more than this are freed.
const POOLED_FRAMES: usize = 6;

/// A buffer from the pool: `values` as long as asked, `full` values initialised behind it.
#[derive(Default)]
struct Frames {
    values: Vec<f32>,
    full: usize,
}

impl std::ops::Deref for Frames {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.values
    }
}

impl std::ops::DerefMut for Frames {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }
}

impl FramePool {
    /// A buffer of `len` values, its contents left from an earlier batch.
    fn take(&self, len: usize) -> Frames {
        let reused = {
            let mut free = self.0.lock().unwrap_or_else(|p| p.into_inner());
            // The smallest that fits: batches differ in length by a few events.
            let fits = free.iter().enumerate().filter(|(_, v)| v.len() >= len).min_by_key(|(_, v)| v.len()).map(|(i, _)| i);
            fits.map(|i| free.swap_remove(i))
        };
        // A new one is a little longer, for the next batch that is.
        let mut values = reused.unwrap_or_else(|| vec![0f32; len + len / 8]);
        let full = values.len();
        values.truncate(len);
        Frames { values, full }
    }

    /// The values as an Arrow buffer whose memory comes back here when the last array
    /// holding it is dropped (wherever polars drops it).
    fn lend(&self, frames: Frames) -> Buffer {
        let bytes = frames.values.len() * std::mem::size_of::<f32>();
        let owner = Arc::new(Lent { frames, pool: Arc::downgrade(&self.0) });
        let ptr = NonNull::new(owner.frames.values.as_ptr() as *mut u8).unwrap_or(NonNull::dangling());
        // SAFETY: `ptr` points at `bytes` initialised bytes owned by `owner`, which the buffer
        // keeps alive; the Vec is never touched again until `owner` drops.
        unsafe { Buffer::from_custom_allocation(ptr, bytes, owner) }
    }
}

struct Lent {
    frames: Frames,
    pool: Weak<Mutex<Vec<Vec<f32>>>>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        let Some(pool) = self.pool.upgrade() else { return };
        let mut values = std::mem::take(&mut self.frames.values);
        // SAFETY: the first `full` values were initialised when the buffer was made (truncate
        // leaves them in place), and any bits are a valid f32.
        unsafe { values.set_len(self.frames.full) };
        let mut free = pool.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < POOLED_FRAMES {
            free.push(values);
        }
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
        assert_eq!(calib_request("jungfrau.raw.image"), Some(("jungfrau", Product::Image)));
        assert_eq!(calib_detector("a.b.raw.calib"), None);
        assert_eq!(raw_segment("jungfrau", "jungfrau.raw.raw"), Some(0));
        assert_eq!(raw_segment("jungfrau", "jungfrau_3.raw.raw"), Some(3));
        assert_eq!(raw_segment("jungfrau", "jungfrau_x.raw.raw"), None);
        assert_eq!(raw_segment("jungfrau", "jungfrau.raw.frameCnt"), None);
        assert_eq!(raw_segment("cam", "cam.raw.image"), Some(0));
        let cols = ["jungfrau.raw.raw", "epixquad_2.raw.raw", "diode.raw.signal"].map(String::from);
        assert_eq!(
            calib_names(&cols),
            ["epixquad.raw.calib", "epixquad.raw.image", "jungfrau.raw.calib", "jungfrau.raw.image"]
        );
        let mut wanted = Vec::new();
        add_wanted(&mut wanted, &["jungfrau.raw.image".into(), "x.y".into(), "jungfrau.raw.calib".into(), "cam.raw.calib".into()]);
        assert_eq!(
            wanted,
            [
                Wanted { det: "jungfrau".into(), calib: true, image: true },
                Wanted { det: "cam".into(), calib: true, image: false }
            ]
        );
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;
    use arrow_array::UInt32Array;

    fn batch(det_type: &str, values: usize) -> RecordBatch {
        let item = Arc::new(Field::new("item", DataType::UInt16, false));
        let raw = FixedSizeListArray::new(item.clone(), values as i32, Arc::new(UInt16Array::from(vec![0u16; values])), None);
        let md = HashMap::from([("detector".to_string(), format!("{det_type}_raw"))]);
        let fields = vec![
            Field::new("run", DataType::UInt32, true),
            Field::new("det.raw.raw", DataType::FixedSizeList(item, values as i32), true).with_metadata(md),
        ];
        RecordBatch::try_new(Arc::new(Schema::new(fields)), vec![Arc::new(UInt32Array::from(vec![1])), Arc::new(raw)]).unwrap()
    }

    fn errors(b: RecordBatch) -> Vec<(String, String)> {
        let mut c = CalibColumns::new(None, Vec::new());
        let wanted = [Wanted { det: "det".into(), calib: true, image: false }];
        let (out, added) = c.add(b, &wanted, &|_| Vec::new(), 1);
        assert_eq!(out.num_columns(), 2, "no calib column");
        added.errors
    }

    #[test]
    fn an_uncalibrated_type_or_a_truncated_frame_is_the_querys_error() {
        let e = errors(batch("hsd", 16));
        assert_eq!(e.len(), 1);
        assert!(e[0].0 == "det.raw.calib" && e[0].1.contains("psana has no calibration for detector type `hsd`"), "{e:?}");
        // A Jungfrau frame of 1000 values is not whole 512×1024 panels.
        let e = errors(batch("jungfrau", 1000));
        assert!(e[0].1.contains("`det.raw.raw` (segment 0) is 1000 values of UInt16 per event, expected u16 panels of 512×1024"), "{e:?}");
    }
}
