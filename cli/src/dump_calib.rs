//! `beamtime dump --calib-dir DIR` / `--calib …`: after each event, one line per area detector
//! with its calibrated frame as psana's `det.raw.calib(evt)` gives it (leading values, sum,
//! min, max), to check constants against a run without writing a query.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use detector::setup::{CalibSource, PreparedDetector};
use detector::{DetectorKind, DetectorSpec, Epix10kaConfig};
use xtc::{DataType, Dgram, StreamState, TransitionId, Value};

/// One detector's raw arrays in one event, by daq segment.
struct RawFrame {
    det_type: String,
    /// (segment, dims, values)
    segments: Vec<(u32, Vec<u32>, Vec<u16>)>,
}

pub struct CalibPrinter {
    source: CalibSource,
    run: Option<u32>,
    prepared: HashMap<(String, u32, u32), Result<PreparedDetector, String>>,
    /// Errors and notices are said once per detector and run.
    said: std::collections::HashSet<String>,
    frames: BTreeMap<String, RawFrame>,
}

impl CalibPrinter {
    pub fn new(source: CalibSource, run_hint: Option<u32>) -> Self {
        CalibPrinter { source, run: run_hint, prepared: HashMap::new(), said: Default::default(), frames: BTreeMap::new() }
    }

    /// Takes the run number from BeginRun and the raw arrays from each member of an L1Accept.
    pub fn observe(&mut self, state: &StreamState, dg: &Dgram) -> Result<(), xtc::FormatError> {
        match dg.service() {
            TransitionId::BeginRun => state.for_each_shapes_data(dg, |names, sd| {
                if names.det_name == "runinfo" {
                    sd.for_each_field(names, |_, name, v| {
                        if name.name == "runnum" {
                            self.run = v.as_int().and_then(|r| u32::try_from(r).ok()).or(self.run);
                        }
                    })?;
                }
                Ok(())
            }),
            TransitionId::L1Accept => state.for_each_shapes_data(dg, |names, sd| {
                let Some(kind) = DetectorKind::from_det_type(&names.det_type) else { return Ok(()) };
                if names.alg_name != "raw" {
                    return Ok(());
                }
                let wanted = match kind {
                    DetectorKind::Archon => "value",
                    DetectorKind::Camera => "image",
                    _ => "raw",
                };
                sd.for_each_field(names, |_, name, v| {
                    if let (true, Value::Array(a)) = (name.name == wanted, v)
                        && a.dtype == DataType::U16
                    {
                        let values = a.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
                        let frame = self
                            .frames
                            .entry(names.det_name.clone())
                            .or_insert_with(|| RawFrame { det_type: names.det_type.clone(), segments: Vec::new() });
                        frame.segments.push((names.segment, a.dims().to_vec(), values));
                    }
                })
            }),
            _ => Ok(()),
        }
    }

    /// Prints the calibrated frames of the event observed since the last call.
    pub fn print_event(&mut self, out: &mut impl Write, configs: &dyn Fn(&str) -> Vec<xtc::ConfigRecord>, configures: u32, max_array: usize) -> std::io::Result<()> {
        for (det, mut frame) in std::mem::take(&mut self.frames) {
            frame.segments.sort_by_key(|s| s.0);
            match self.calibrate(&det, &frame, configs, configures) {
                Ok((shape, values, notices)) => {
                    for n in notices {
                        if self.said.insert(n.clone()) {
                            eprintln!("beamtime: {n}");
                        }
                    }
                    let shown: Vec<String> = values.iter().take(max_array).map(|v| format!("{v}")).collect();
                    let more = if values.len() > max_array { ", …" } else { "" };
                    let sum: f64 = values.iter().map(|&v| v as f64).sum();
                    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
                    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    writeln!(out, "  {det}.raw.calib = f32[{shape}] [{}{more}] sum {sum} min {min} max {max}", shown.join(", "))?;
                }
                Err(e) => {
                    if self.said.insert(e.clone()) {
                        writeln!(out, "  {det}.raw.calib: {e}")?;
                    }
                }
            }
        }
        Ok(())
    }

    fn calibrate(
        &mut self,
        det: &str,
        frame: &RawFrame,
        configs: &dyn Fn(&str) -> Vec<xtc::ConfigRecord>,
        configures: u32,
    ) -> Result<(String, Vec<f32>, Vec<String>), String> {
        let kind = DetectorKind::from_det_type(&frame.det_type).expect("only calibrated types are kept");
        let (_, dims, _) = &frame.segments[0];
        let spec = match DetectorSpec::new(det, kind) {
            Some(s) => s,
            None => match dims[..] {
                [rows, cols] => DetectorSpec::with_panel(det, kind, (rows as usize, cols as usize)),
                _ => return Err(format!("{det}: a {kind} image of shape {dims:?} is not 2-D")),
            },
        };
        let panel = spec.panel_pixels();
        let mut segments = Vec::new();
        let mut raw = Vec::new();
        for (segment, _, values) in &frame.segments {
            if values.is_empty() || values.len() % panel != 0 {
                return Err(format!("{det} segment {segment}: {} values are not whole {}×{} panels", values.len(), spec.panel.0, spec.panel.1));
            }
            // One raw array holds one panel (Jungfrau, epix10ka) or several (the epixM320's ASICs).
            let k = (values.len() / panel) as u32;
            segments.extend((0..k).map(|j| segment * k + j));
            raw.extend_from_slice(values);
        }
        let run = self.run.ok_or_else(|| format!("{det}: the run number is unknown (no runinfo in BeginRun), so no constants can be chosen"))?;
        let max_segment = *segments.iter().max().expect("one segment at least");
        let key = (det.to_string(), run, configures);
        if !self.prepared.contains_key(&key) {
            let epix: Vec<(u32, Epix10kaConfig)> = if matches!(kind, DetectorKind::Epix10ka | DetectorKind::Epixhr2x2) {
                configs(det)
                    .iter()
                    .filter(|c| c.alg_name == "config")
                    .filter_map(|c| Some((c.segment, Epix10kaConfig::from_fields(kind, |n| c.field(n)?.to_i64())?)))
                    .collect()
            } else {
                Vec::new()
            };
            let prepared = self.source.prepare(&spec, run, max_segment, &epix);
            self.prepared.insert(key.clone(), prepared);
        }
        let prepared = self.prepared.get(&key).expect("inserted above").as_ref().map_err(|e| e.clone())?;
        let mut out = vec![0f32; raw.len()];
        prepared.calibrator.calibrate(&segments, &raw, &mut out).map_err(|e| e.to_string())?;
        let shape = if kind.fixed_panel().is_some() {
            format!("{}×{}×{}", segments.len(), spec.panel.0, spec.panel.1)
        } else {
            format!("{}×{}", spec.panel.0, spec.panel.1)
        };
        Ok((shape, out, prepared.notices.clone()))
    }
}
