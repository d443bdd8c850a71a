//! The ground truth of a simulated run, written beside it as `<exp>-r<RRRR>.truth.json`.
//!
//! Sums are exact oracles: f64 sums add the values as written, left to right in event order
//! starting from 0.0 (f32 fields are widened to f64 first); integer sums are exact. The JSON
//! keeps every f64 bit for bit (shortest round-trip form).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use xtc::writer::NamesDef;
use xtc::DataType;

use crate::clock::ClockInfo;
use crate::config::SimConfig;
use crate::detectors::DataIn;
use crate::area::{ArchonTruth, Epix10kaTruth, Epixm320Truth};
use crate::detectors::CamTruth;
use crate::jungfrau::JungfrauTruth;
use crate::model::Model;
use crate::SimError;

/// The `format` value of truth files this version writes.
pub const TRUTH_FORMAT: &str = "beamtime-sim-truth/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub format: String,
    /// The psana source string that reads the run.
    pub source: String,
    pub config: SimConfig,
    pub model: Model,
    pub clock: ClockInfo,
    /// L1Accepts built across streams (= stream 0's L1Accepts).
    pub events: u64,
    /// Timestamps (psana `sec << 32 | nsec`) of the Configure and of the EndRun.
    pub first_timestamp: u64,
    pub last_timestamp: u64,
    pub first_time_utc: String,
    pub last_time_utc: String,
    /// Count of each transition by TransitionId name; every stream holds each of them once,
    /// with the same timestamp.
    pub transitions: BTreeMap<String, u64>,
    pub streams: Vec<StreamTruth>,
    pub steps: Vec<StepTruth>,
    /// Every Names of every stream's Configure.
    pub detectors: Vec<DetectorTruth>,
    /// The simulated Jungfrau (`--jungfrau N`): its model, every frame's deposited energy and
    /// the ring intensity per step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jungfrau: Option<JungfrauTruth>,
    /// The simulated epix10ka (`--epix10ka N`): its ASIC configs and each frame's gain modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epix10ka: Option<Epix10kaTruth>,
    /// The simulated epixM320 (`--epixm320`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epixm320: Option<Epixm320Truth>,
    /// The simulated Archon (`--archon ROWS`): each frame's common offsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archon: Option<ArchonTruth>,
    /// The camera's constants and signal (`--cam-calib`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cam: Option<CamTruth>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamTruth {
    pub stream: u32,
    /// L1Accepts in this stream.
    pub l1: u64,
    /// This stream records the L1Accept of events whose index is a multiple of this.
    pub l1_every: u64,
    /// The bigdata chunks, in order.
    pub chunks: Vec<FileTruth>,
    pub smd: FileTruth,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileTruth {
    /// Path relative to the run directory (`smalldata/…` for smd files).
    pub file: String,
    pub bytes: u64,
    pub datagrams: u64,
    pub l1: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepTruth {
    pub step: u32,
    /// The BeginStep's `scan.raw.motor`: the pump-probe delay, ps.
    pub delay_ps: f64,
    pub step_value: f64,
    pub step_docstring: String,
    /// L1Accepts in the step (built events).
    pub events: u64,
    /// L1Accepts of the step in each stream.
    pub l1_per_stream: Vec<u64>,
    /// Events with `lasr.raw.laser_on == 1`.
    pub laser_on: u64,
    /// Events with x-rays (`timing.raw.ebeamDestn == 3`).
    pub xray_on: u64,
    pub slow_updates: u64,
    /// Sums of scalar float columns, keyed by column name `<det>[_<seg>].<alg>.<field>`:
    /// `diode.raw.signal`, `ipm2.raw.sum`, `gmd.raw.millijoulesperpulse`, `fim[_k].fex.intensity`.
    pub sums: BTreeMap<String, f64>,
    /// Sums of integer columns: `hsd.fex.area`; `cam.raw.image` is the sum of every pixel.
    pub int_sums: BTreeMap<String, i64>,
    /// `diode.raw.signal` summed over the laser-on and the laser-off events only.
    pub diode_signal_laser_on_sum: f64,
    pub diode_signal_laser_off_sum: f64,
    /// Timestamps of the step's first and last L1Accept (none in an empty step).
    pub first_timestamp: Option<u64>,
    pub last_timestamp: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorTruth {
    pub stream: u32,
    pub det_name: String,
    pub det_type: String,
    pub det_id: String,
    pub alg: String,
    /// `major.minor.micro`.
    pub version: String,
    pub segment: u32,
    pub names_id: u32,
    /// The transition (or L1Accept) whose datagrams carry this detector's data.
    pub data_in: String,
    pub fields: Vec<FieldTruth>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldTruth {
    pub name: String,
    /// `u8` … `f64`, `charstr`, `enumval`, `enumdict`.
    pub dtype: String,
    pub rank: u32,
}

impl DetectorTruth {
    pub(crate) fn new(stream: u32, def: &NamesDef, data_in: DataIn) -> Self {
        let v = def.alg_version;
        DetectorTruth {
            stream,
            det_name: def.det_name.clone(),
            det_type: def.det_type.clone(),
            det_id: def.det_id.clone(),
            alg: def.alg_name.clone(),
            version: format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff),
            segment: def.segment,
            names_id: def.names_id,
            data_in: data_in.name().into(),
            fields: def.fields.iter().map(|f| FieldTruth { name: f.name.clone(), dtype: dtype_name(f.dtype).into(), rank: f.rank }).collect(),
        }
    }
}

pub fn dtype_name(t: DataType) -> &'static str {
    use DataType::*;
    match t {
        U8 => "u8",
        U16 => "u16",
        U32 => "u32",
        U64 => "u64",
        I8 => "i8",
        I16 => "i16",
        I32 => "i32",
        I64 => "i64",
        F32 => "f32",
        F64 => "f64",
        CharStr => "charstr",
        EnumVal => "enumval",
        EnumDict => "enumdict",
    }
}

impl Truth {
    /// Reads a truth file.
    pub fn load(path: &Path) -> Result<Truth, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| SimError::Truth { path: path.to_path_buf(), msg: e.to_string() })
    }

    /// Writes the truth file atomically (a temporary name, then a rename).
    pub fn save(&self, path: &Path) -> Result<(), SimError> {
        let json = serde_json::to_string_pretty(self).map_err(|e| SimError::Truth { path: path.to_path_buf(), msg: e.to_string() })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json + "\n").map_err(|e| SimError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| SimError::io(path, e))
    }
}
