//! What each stream (DRP node) records: its Names in the Configure and the ShapesData of each
//! datagram.
//!
//! | stream | L1Accepts | detectors |
//! |---|---|---|
//! | s000 | every event | `timing`, `gmd`, `ipm2`, `lasr`, `diode`; transitions: `scan` (BeginStep), `epics` (SlowUpdate), `epicsinfo` (Configure) |
//! | s001 | every event | `hsd` (raw waveform, fex scalars, config in the Configure), `cam` frames if asked for |
//! | s002… | every 10th event (mixed rate) | `fim` (a wave8 FIM), segment = stream − 2 |
//! | s<streams> (one more, after the others) | every `--jungfrau-every`th event (default 5; readout group 2 unless every event) | `jungfrau` (`--jungfrau N`: N modules = segments 0…N−1, alg `raw` 0.2.0 in L1Accepts, `config` in the Configure), see [`crate::jungfrau`] |
//! | next (after the Jungfrau's, if any) | as the Jungfrau | `epixquad` (`--epix10ka N`; `epix10ka` for 1 panel, `epix10k2M` for 5–16): detType `epix10ka`, segments 0…N−1, alg `raw` 2.0.1 {`raw`, `aux`} in L1Accepts, `config` 2.0.0 {`asicPixelConfig`, `trbit`} in the Configure, see [`crate::area`] |
//! | next | as the Jungfrau | `epixm` (`--epixm320`): detType `epixm320`, alg `raw` 0.1.0 {`raw` (4,192,384)}, segment 0 |
//! | next | as the Jungfrau | `archon` (`--archon ROWS`): detType `archon`, alg `raw` 1.0.0 {`value` (ROWS,4800)}, segment 0 |
//!
//! Each area detector has its own stream, as a real one has its own DRP nodes: its
//! megabytes per event then do not slow down the small data of s000/s001. Their constants go
//! into the calib dir before the run's first datagram; so do the camera's with `--cam-calib`
//! (`Camera::CalibV1/cam`: pedestals and pixel_gain `(rows, cols)`, and per-pixel dark levels
//! and gains in its frames).
//!
//! Every stream also declares `runinfo` (data in BeginRun) and `chunkinfo` (data in the Enable
//! that ends a chunk). With one stream, `cam` goes to s000.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use xtc::writer::{names_id, ArrayData, DgramWriter, FieldDef, FieldValue, NamesDef};
use xtc::DataType::{self, *};

use crate::clock;
use crate::area::{self, AreaDetector};
use crate::jungfrau::Jungfrau;
use crate::model::{gauss, rng, rng_stream, Shot};

/// NamesIds the DAQ reserves (`psdaq/drp/drp.hh`, spec §5).
const CHUNKINFO_ID: u8 = 252;
const SMDINFO_ID: u8 = 254;
const RUNINFO_ID: u8 = 255;

/// Streams from s002 on record an L1Accept only for events whose index is a multiple of this.
pub const MIXED_RATE_EVERY: u64 = 10;

/// Samples of an `hsd` waveform.
pub const HSD_SAMPLES: usize = 64;

/// The datagram a detector's data is written into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataIn {
    Configure,
    BeginRun,
    BeginStep,
    /// Only the Enable that ends a chunk.
    ChunkEnable,
    SlowUpdate,
    L1Accept,
}

impl DataIn {
    pub fn name(self) -> &'static str {
        match self {
            DataIn::Configure => "Configure",
            DataIn::BeginRun => "BeginRun",
            DataIn::BeginStep => "BeginStep",
            DataIn::ChunkEnable => "Enable",
            DataIn::SlowUpdate => "SlowUpdate",
            DataIn::L1Accept => "L1Accept",
        }
    }
}

/// Allocates the NamesIds of one node: `(node << 8) | n` with n = 0, 1, … (the DAQ's `BASE`).
struct Ids {
    node: u32,
    next: u8,
}

impl Ids {
    fn def(&mut self, det: &str, det_type: &str, alg: &str, version: [u8; 3], segment: u32, fields: &[(&str, DataType, u32)]) -> NamesDef {
        let id = self.next;
        self.next += 1;
        make_def(names_id(self.node, id), det, det_type, alg, version, segment, fields)
    }
}

fn make_def(id: u32, det: &str, det_type: &str, alg: &str, version: [u8; 3], segment: u32, fields: &[(&str, DataType, u32)]) -> NamesDef {
    let standard = matches!(det, "runinfo" | "chunkinfo");
    NamesDef {
        names_id: id,
        det_name: det.into(),
        det_type: det_type.into(),
        // Detectors carry a serial-number-like id; the DAQ's own records carry none.
        det_id: if standard { String::new() } else { format!("beamtime-sim-{det}-{segment}") },
        alg_name: alg.into(),
        alg_version: (version[0] as u32) << 16 | (version[1] as u32) << 8 | version[2] as u32,
        segment,
        fields: fields.iter().map(|&(n, t, r)| FieldDef::new(n, t, r)).collect(),
    }
}

// ---- stream 0: beam-synchronous data, scan and slow data ----

/// The timing record: the packed 153-byte struct of `psdaq/drp/TimingDef.cc` (spec §13.6),
/// written field by field, which gives the same Data layout.
const TIMING_FIELDS: &[(&str, DataType, u32)] = &[
    ("pulseId", U64, 0),
    ("timeStamp", U64, 0),
    ("fixedRates", U8, 1),
    ("acRates", U8, 1),
    ("timeSlot", U8, 0),
    ("timeSlotPhase", U16, 0),
    ("ebeamPresent", U8, 0),
    ("ebeamDestn", U8, 0),
    ("ebeamCharge", U16, 0),
    ("ebeamEnergy", U16, 1),
    ("xWavelength", U16, 1),
    ("dmod5", U16, 0),
    ("mpsLimits", U8, 1),
    ("mpsPowerClass", U8, 1),
    ("sequenceValues", U16, 1),
    ("inhibitCounts", U32, 1),
];

/// Divisors of the base rate giving the fixed-rate markers 929 kHz, 71.4 kHz, 10.2 kHz,
/// 1.02 kHz, 102 Hz, 10.2 Hz, 1.02 Hz (`fixedRates[0..7]`).
const FIXED_RATE_DIVISORS: [u64; 7] = [1, 13, 91, 910, 9_100, 91_000, 910_000];
/// AC-line (360 Hz) ticks per marker of the AC rates 60, 30, 10, 5, 1, 0.5 Hz (`acRates`).
const AC_RATE_TICKS: [u64; 6] = [6, 12, 36, 72, 360, 720];

/// Event codes set in `timing.raw.sequenceValues` (bit `code % 16` of word `code / 16`).
pub mod event_code {
    /// X-rays on (beam present), the LCLS-I convention analysis configs use as `-137`.
    pub const BEAM_PRESENT: u16 = 137;
    /// X-rays dropped (BYKIK), used as `162` ("drop the shot").
    pub const XRAY_DROPPED: u16 = 162;
    /// The pump laser fired.
    pub const LASER_ON: u16 = 273;
}

/// `timing.raw.ebeamDestn` of shots whose x-rays reach the hard x-ray hutches (SC_HXR).
pub const DESTN_SC_HXR: u8 = 3;

/// EPICS PVs recorded in every SlowUpdate of stream 0.
const EPICS_PVS: &[(&str, DataType, u32)] = &[
    ("HX2:DVD:GCC:01:PMON", F64, 0),
    ("XPP:LAS:DLY:01:RBV", F64, 0),
    ("XPP:ATT:COM:R_CUR", F64, 0),
    ("XPP:USR:SAMPLE:NAME", CharStr, 1),
    ("XPP:R30:IOC:21:HEARTBEAT", I32, 0),
];
const SAMPLE_NAME: &str = "Fe(bpy)3 50 mM in H2O";
const ATTENUATOR_TRANSMISSION: f64 = 0.5;

struct Beam {
    timing: NamesDef,
    gmd: NamesDef,
    ipm2: NamesDef,
    lasr: NamesDef,
    diode: NamesDef,
    scan: NamesDef,
    epics: NamesDef,
    epicsinfo: NamesDef,
    epics_state: EpicsState,
}

struct EpicsState {
    rng: ChaCha8Rng,
    pressure_torr: f64,
    heartbeat: i32,
}

/// `lasr.raw.state:LaserState` labels (ENUMDICT entries).
pub const LASER_STATE_OFF: i32 = 0;
pub const LASER_STATE_ON: i32 = 1;

impl Beam {
    fn new(ids: &mut Ids, seed: u64) -> Self {
        let mut epicsinfo_fields = vec![("keys", CharStr, 1)];
        epicsinfo_fields.extend(EPICS_PVS.iter().map(|&(pv, _, _)| (pv, CharStr, 1)));
        let mut epics_rng = rng(seed, rng_stream::EPICS);
        let heartbeat = epics_rng.random_range(0..100_000);
        Beam {
            timing: ids.def("timing", "ts", "raw", [0, 0, 1], 0, TIMING_FIELDS),
            gmd: ids.def("gmd", "gmd", "raw", [2, 1, 0], 0, &[("millijoulesperpulse", F32, 0), ("RMS_E1", F32, 0)]),
            ipm2: ids.def(
                "ipm2",
                "ipm",
                "raw",
                [1, 0, 0],
                0,
                &[("sum", F64, 0), ("xpos", F64, 0), ("ypos", F64, 0), ("channels", F64, 1)],
            ),
            lasr: ids.def(
                "lasr",
                "laser",
                "raw",
                [1, 0, 0],
                0,
                &[("laser_on", U8, 0), ("state:LaserState", EnumVal, 0), ("Off:LaserState", EnumDict, 0), ("On:LaserState", EnumDict, 0)],
            ),
            diode: ids.def("diode", "diode", "raw", [1, 0, 0], 0, &[("signal", F64, 0)]),
            scan: ids.def("scan", "scan", "raw", [2, 0, 0], 0, &[("motor", F64, 0), ("step_value", F64, 0), ("step_docstring", CharStr, 1)]),
            epics: ids.def("epics", "epics", "raw", [2, 0, 0], 0, EPICS_PVS),
            epicsinfo: ids.def("epicsinfo", "epicsinfo", "epicsinfo", [1, 0, 0], 0, &epicsinfo_fields),
            epics_state: EpicsState { rng: epics_rng, pressure_torr: 3.0e-9, heartbeat },
        }
    }

    fn write_l1(&self, w: &mut DgramWriter, s: &Shot) {
        self.write_timing(w, s);
        w.shapes_data(&self.gmd, &[FieldValue::F32(s.gmd_mj), FieldValue::F32(s.gmd_rms)]);
        let ipm = &s.ipm2;
        w.shapes_data(
            &self.ipm2,
            &[
                FieldValue::F64(ipm.sum),
                FieldValue::F64(ipm.xpos_mm),
                FieldValue::F64(ipm.ypos_mm),
                FieldValue::Array(&[4], ArrayData::F64(&ipm.channels)),
            ],
        );
        let state = if s.laser_on { LASER_STATE_ON } else { LASER_STATE_OFF };
        w.shapes_data(
            &self.lasr,
            &[
                FieldValue::U8(s.laser_on as u8),
                FieldValue::Enum(state),
                FieldValue::EnumDict(LASER_STATE_OFF),
                FieldValue::EnumDict(LASER_STATE_ON),
            ],
        );
        w.shapes_data(&self.diode, &[FieldValue::F64(s.diode)]);
    }

    fn write_timing(&self, w: &mut DgramWriter, s: &Shot) {
        let p = s.pulse_id;
        let fixed: [u8; 10] = std::array::from_fn(|i| FIXED_RATE_DIVISORS.get(i).is_some_and(|&d| p.is_multiple_of(d)) as u8);
        // The 360 Hz AC-line tick this pulse falls in and how many pulses into it.
        let ns = clock::pulse_ns(p);
        let tick = (ns * 360 / 1_000_000_000) as u64;
        let tick_start_ns = (tick as u128 * 1_000_000_000).div_ceil(360);
        let phase = ((ns - tick_start_ns) * 13 / 14_000) as u16;
        let ac: [u8; 6] = std::array::from_fn(|i| (phase == 0 && tick.is_multiple_of(AC_RATE_TICKS[i])) as u8);
        let mut seq = [0u16; 18];
        let mut set = |code: u16| seq[(code / 16) as usize] |= 1 << (code % 16);
        set(if s.xray_on { event_code::BEAM_PRESENT } else { event_code::XRAY_DROPPED });
        if s.laser_on {
            set(event_code::LASER_ON);
        }
        let e = s.energy_mev;
        // Energies after BC1, BC2 and at the end of the linac (MeV), and the photon wavelength
        // (0.1 pm units) of a 9.5 keV beam, which scales as 1/E².
        let energies = [(e / 16.0).round() as u16, (e * 0.375).round() as u16, e.round() as u16, 0];
        let wavelength = [(1305.0 * (4000.0 / e).powi(2)).round() as u16, 0];
        let destn = if s.xray_on { DESTN_SC_HXR } else { 0 };
        w.shapes_data(
            &self.timing,
            &[
                FieldValue::U64(p),
                FieldValue::U64(s.timestamp),
                FieldValue::Array(&[10], ArrayData::U8(&fixed)),
                FieldValue::Array(&[6], ArrayData::U8(&ac)),
                FieldValue::U8((1 + tick % 6) as u8),
                FieldValue::U16(phase),
                FieldValue::U8(1),
                FieldValue::U8(destn),
                FieldValue::U16(s.charge_pc.round() as u16),
                FieldValue::Array(&[4], ArrayData::U16(&energies)),
                FieldValue::Array(&[2], ArrayData::U16(&wavelength)),
                FieldValue::U16(0),
                FieldValue::Array(&[16], ArrayData::U8(&[0; 16])),
                FieldValue::Array(&[16], ArrayData::U8(&[0; 16])),
                FieldValue::Array(&[18], ArrayData::U16(&seq)),
                FieldValue::Array(&[8], ArrayData::U32(&[0; 8])),
            ],
        );
    }

    fn write_slow_update(&mut self, w: &mut DgramWriter, delay_ps: f64) {
        let e = &mut self.epics_state;
        e.pressure_torr *= (0.02 * gauss(&mut e.rng)).exp();
        e.heartbeat = e.heartbeat.wrapping_add(1);
        let readback = delay_ps + 0.0005 * gauss(&mut e.rng);
        w.shapes_data(
            &self.epics,
            &[
                FieldValue::F64(e.pressure_torr),
                FieldValue::F64(readback),
                FieldValue::F64(ATTENUATOR_TRANSMISSION),
                FieldValue::Str(SAMPLE_NAME),
                FieldValue::I32(e.heartbeat),
            ],
        );
    }

    fn write_epicsinfo(&self, w: &mut DgramWriter) {
        let values: Vec<String> = EPICS_PVS.iter().map(|(pv, _, _)| format!("{pv},ca")).collect();
        let mut fields = vec![FieldValue::Str("epicsname,provider")];
        fields.extend(values.iter().map(|v| FieldValue::Str(v)));
        w.shapes_data(&self.epicsinfo, &fields);
    }
}

/// `scan.raw.step_docstring` of a step, as the DAQ's scan scripts write it.
pub fn step_docstring(step: u32) -> String {
    format!(r#"{{"detname": "scan", "scantype": "scan", "step": {step}}}"#)
}

// ---- stream 1: digitizer and camera ----

const HSD_BASELINE: f64 = 1500.0;
const HSD_NOISE: f64 = 3.0;
/// Peak height per unit of I0 (ipm2 sum), ADC counts.
const HSD_COUNTS_PER_I0: f64 = 200.0;
const HSD_PEAK_AT: f64 = 24.0;
const HSD_PEAK_WIDTH: f64 = 2.5;
/// The readout window: 64 samples at 6.4 GS/s.
const HSD_GATE_NS: u32 = 10;
/// Feature extraction settings, also written as the hsd `config`.
const HSD_BASELINE_SAMPLES: usize = 8;
const HSD_WINDOW: [u16; 2] = [12, 40];
const HSD_THRESHOLD: i32 = 20;

struct Hsd {
    raw: NamesDef,
    fex: NamesDef,
    config: NamesDef,
    rng: ChaCha8Rng,
    waveform: [u16; HSD_SAMPLES],
}

/// The hsd's feature extraction of one waveform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HsdFex {
    pub baseline: f32,
    pub area: i64,
    pub peak_pos: u16,
    pub peak_ampl: i16,
    pub n_over: u32,
}

/// `hsd.fex` computed from `hsd.raw.waveform`: baseline = mean of the first 8 samples; area =
/// Σ (sample − round(baseline)) over samples [12, 40); peak = first maximum; n_over = samples
/// above baseline + 20.
pub fn hsd_fex(wf: &[u16]) -> HsdFex {
    let baseline = wf[..HSD_BASELINE_SAMPLES].iter().map(|&v| v as f64).sum::<f64>() / HSD_BASELINE_SAMPLES as f64;
    let base = baseline.round() as i64;
    let window = &wf[HSD_WINDOW[0] as usize..HSD_WINDOW[1] as usize];
    let area = window.iter().map(|&v| v as i64 - base).sum();
    let (peak_pos, peak) = wf.iter().enumerate().fold((0, 0), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) });
    let n_over = wf.iter().filter(|&&v| v as f64 > baseline + HSD_THRESHOLD as f64).count() as u32;
    HsdFex {
        baseline: baseline as f32,
        area,
        peak_pos: peak_pos as u16,
        peak_ampl: (peak as i64 - base).clamp(i16::MIN as i64, i16::MAX as i64) as i16,
        n_over,
    }
}

impl Hsd {
    fn new(ids: &mut Ids, seed: u64) -> Self {
        Hsd {
            raw: ids.def("hsd", "hsd", "raw", [1, 0, 0], 0, &[("waveform", U16, 1)]),
            fex: ids.def(
                "hsd",
                "hsd",
                "fex",
                [1, 0, 0],
                0,
                &[("baseline", F32, 0), ("area", I64, 0), ("peak_pos", U16, 0), ("peak_ampl", I16, 0), ("n_over", U32, 0)],
            ),
            config: ids.def(
                "hsd",
                "hsd",
                "config",
                [1, 0, 0],
                0,
                &[
                    ("user.raw.start_ns", U32, 0),
                    ("user.raw.gate_ns", U32, 0),
                    ("user.fex.baseline_samples", U32, 0),
                    ("user.fex.threshold", I32, 0),
                    ("user.fex.window", U16, 1),
                    ("expert.firmware", CharStr, 1),
                ],
            ),
            rng: rng(seed, rng_stream::HSD),
            waveform: [0; HSD_SAMPLES],
        }
    }

    fn write_config(&self, w: &mut DgramWriter) {
        w.shapes_data(
            &self.config,
            &[
                FieldValue::U32(100),
                FieldValue::U32(HSD_GATE_NS),
                FieldValue::U32(HSD_BASELINE_SAMPLES as u32),
                FieldValue::I32(HSD_THRESHOLD),
                FieldValue::Array(&[2], ArrayData::U16(&HSD_WINDOW)),
                FieldValue::Str("beamtime-sim hsd 1.0.0"),
            ],
        );
    }

    /// Writes raw and fex; returns `hsd.fex.area`.
    fn write_l1(&mut self, w: &mut DgramWriter, s: &Shot) -> i64 {
        let r = &mut self.rng;
        let height = HSD_COUNTS_PER_I0 * s.ipm2.sum * (1.0 + 0.05 * gauss(r));
        let at = HSD_PEAK_AT + 0.3 * gauss(r);
        for (i, v) in self.waveform.iter_mut().enumerate() {
            let d = (i as f64 - at) / HSD_PEAK_WIDTH;
            let x = HSD_BASELINE + height * (-0.5 * d * d).exp() + HSD_NOISE * gauss(r);
            *v = x.round().clamp(0.0, 4095.0) as u16; // a 12-bit ADC
        }
        let fex = hsd_fex(&self.waveform);
        w.shapes_data(&self.raw, &[FieldValue::Array(&[HSD_SAMPLES as u32], ArrayData::U16(&self.waveform))]);
        w.shapes_data(
            &self.fex,
            &[
                FieldValue::F32(fex.baseline),
                FieldValue::I64(fex.area),
                FieldValue::U16(fex.peak_pos),
                FieldValue::I16(fex.peak_ampl),
                FieldValue::U32(fex.n_over),
            ],
        );
        fex.area
    }
}

const CAM_PEDESTAL: f64 = 100.0;
const CAM_READ_NOISE: f64 = 3.0;
/// Spot peak per unit of I0, counts.
const CAM_COUNTS_PER_I0: f64 = 500.0;
/// Beam position to pixels: 10 µm pixels.
const CAM_PIXELS_PER_MM: f64 = 100.0;

struct Cam {
    def: NamesDef,
    rng: ChaCha8Rng,
    width: usize,
    height: usize,
    image: Vec<u16>,
    profile_x: Vec<f64>,
    profile_y: Vec<f64>,
    /// `--cam-calib`: per-pixel dark levels and gains, and each frame's truth.
    calib: Option<CamCalib>,
}

/// psana1's `<Group>` for camera constants (spec §2.2).
pub const CAM_CALIB_GROUP: &str = "Camera::CalibV1";
/// Relative rms of the camera's per-pixel gains and rms of its dark levels (ADU) with `--cam-calib`.
const CAM_GAIN_REL_SPREAD: f64 = 0.05;
const CAM_PEDESTAL_SPREAD: f64 = 5.0;

struct CamCalib {
    pedestal: Vec<f32>,
    gain: Vec<f32>,
    frames: Vec<CamFrameTruth>,
}

/// One camera frame's truth (`--cam-calib`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CamFrameTruth {
    pub index: u64,
    pub timestamp: u64,
    /// Σ over pixels of the noise-free signal before the gain: what psana's calib,
    /// `(raw − ped)/gain`, sums to without noise and rounding.
    pub signal: f64,
}

/// The camera's truth with `--cam-calib`: `raw = round(ped + gain·signal + noise)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CamTruth {
    pub det_name: String,
    pub stream: u32,
    pub width: u32,
    pub height: u32,
    pub calib_dir: std::path::PathBuf,
    pub pedestal_adu: f64,
    pub pedestal_spread_adu: f64,
    pub gain_rel_spread: f64,
    pub noise_adu: f64,
    pub frames: Vec<CamFrameTruth>,
}

impl Cam {
    fn new(ids: &mut Ids, seed: u64, (width, height): (u32, u32)) -> Self {
        let (width, height) = (width as usize, height as usize);
        Cam {
            def: ids.def("cam", "opal", "raw", [1, 0, 0], 0, &[("image", U16, 2)]),
            rng: rng(seed, rng_stream::CAM),
            width,
            height,
            image: vec![0; width * height],
            profile_x: vec![0.0; width],
            profile_y: vec![0.0; height],
            calib: None,
        }
    }

    /// Gives the camera per-pixel dark levels (to 1/8 ADU) and gains (4 digits), from a random
    /// sequence of their own (the frames' noise stays the same).
    fn calibrate(&mut self, seed: u64) {
        let mut r = rng(seed, rng_stream::CAM_CALIB);
        let n = self.width * self.height;
        let pedestal = (0..n).map(|_| (((CAM_PEDESTAL + CAM_PEDESTAL_SPREAD * gauss(&mut r)) * 8.0).round() / 8.0) as f32).collect();
        let gain = (0..n).map(|_| ((1.0 + CAM_GAIN_REL_SPREAD * gauss(&mut r)) * 1000.0).round() as f32 / 1000.0).collect();
        self.calib = Some(CamCalib { pedestal, gain, frames: Vec::new() });
    }

    /// pedestals and pixel_gain `(rows, cols)`.
    fn constant(&self, ctype: detector::CalibType) -> detector::constants::array::NdArray {
        use detector::constants::array::{Elements, NdArray};
        let c = self.calib.as_ref().expect("a calibrated camera");
        let data = match ctype {
            detector::CalibType::Pedestals => c.pedestal.clone(),
            detector::CalibType::PixelGain => c.gain.clone(),
            other => unreachable!("beamtime sim writes no camera {other:?}"),
        };
        NdArray::new(vec![self.height, self.width], Elements::F32(data))
    }

    /// Writes a frame with the beam spot (a Gaussian whose height follows I0 and whose centre
    /// follows the beam position); returns the sum of its pixels.
    fn write_l1(&mut self, w: &mut DgramWriter, s: &Shot) -> u64 {
        let sigma = (self.width.min(self.height) as f64 / 8.0).max(1.0);
        let profile = |p: &mut [f64], centre: f64| {
            for (i, v) in p.iter_mut().enumerate() {
                let d = (i as f64 - centre) / sigma;
                *v = (-0.5 * d * d).exp();
            }
        };
        profile(&mut self.profile_x, (self.width as f64 - 1.0) / 2.0 + s.x_mm * CAM_PIXELS_PER_MM);
        profile(&mut self.profile_y, (self.height as f64 - 1.0) / 2.0 + s.y_mm * CAM_PIXELS_PER_MM);
        let peak = CAM_COUNTS_PER_I0 * s.ipm2.sum;
        let mut sum = 0u64;
        if let Some(c) = &mut self.calib {
            let mut signal = 0.0;
            for (y, (row, py)) in self.image.chunks_exact_mut(self.width).zip(&self.profile_y).enumerate() {
                for (x, (px, gx)) in row.iter_mut().zip(&self.profile_x).enumerate() {
                    let i = y * self.width + x;
                    let sig = peak * gx * py;
                    signal += sig;
                    let v = c.pedestal[i] as f64 + c.gain[i] as f64 * sig + CAM_READ_NOISE * gauss(&mut self.rng);
                    *px = v.round().clamp(0.0, u16::MAX as f64) as u16;
                    sum += *px as u64;
                }
            }
            c.frames.push(CamFrameTruth { index: s.index, timestamp: s.timestamp, signal });
            let dims = [self.height as u32, self.width as u32];
            w.shapes_data(&self.def, &[FieldValue::Array(&dims, ArrayData::U16(&self.image))]);
            return sum;
        }
        for (row, py) in self.image.chunks_exact_mut(self.width).zip(&self.profile_y) {
            for (px, gx) in row.iter_mut().zip(&self.profile_x) {
                let v = CAM_PEDESTAL + peak * gx * py + CAM_READ_NOISE * gauss(&mut self.rng);
                *px = v.round().clamp(0.0, u16::MAX as f64) as u16;
                sum += *px as u64;
            }
        }
        let dims = [self.height as u32, self.width as u32];
        w.shapes_data(&self.def, &[FieldValue::Array(&dims, ArrayData::U16(&self.image))]);
        sum
    }
}

// ---- streams 2…: a mixed-rate FIM ----

/// FIM integral counts per unit of I0 (ipm2 sum) downstream of the sample.
const FIM_COUNTS_PER_I0: f64 = 60_000.0;
const FIM_NOISE: f64 = 50.0;
const FIM_BASE: f64 = 12_000.0;
/// The 24-bit signed range of the integrals.
const FIM_MAX: f64 = ((1 << 23) - 1) as f64;

struct Fim {
    def: NamesDef,
    rng: ChaCha8Rng,
}

impl Fim {
    fn new(ids: &mut Ids, seed: u64, segment: u32) -> Self {
        let mut fields: Vec<(String, DataType, u32)> = Vec::new();
        fields.extend((0..8).map(|i| (format!("integral_{i}"), I32, 0)));
        fields.extend((0..8).map(|i| (format!("base_{i}"), U16, 0)));
        fields.extend(["intensity", "posX", "posY"].map(|n| (n.to_string(), F64, 0)));
        let fields: Vec<(&str, DataType, u32)> = fields.iter().map(|(n, t, r)| (n.as_str(), *t, *r)).collect();
        Fim {
            def: ids.def("fim", "wave8", "fex", [1, 0, 0], segment, &fields),
            rng: rng(seed, rng_stream::FIM + segment as u64),
        }
    }

    /// Channels 0–3 see the transmitted beam (left, up, right, down), 4–7 are unconnected.
    /// `intensity` = Σ integral_0..3 / 60000 (so it reads like ipm2.sum); returns it.
    fn write_l1(&mut self, w: &mut DgramWriter, s: &Shot) -> f64 {
        let r = &mut self.rng;
        let q = FIM_COUNTS_PER_I0 * s.ipm2.sum / 4.0;
        let (fx, fy) = (s.x_mm / 0.5, s.y_mm / 0.5);
        let signal = [q * (1.0 + fx), q * (1.0 + fy), q * (1.0 - fx), q * (1.0 - fy), 0.0, 0.0, 0.0, 0.0];
        let integral: [i32; 8] = std::array::from_fn(|i| (signal[i] + FIM_NOISE * gauss(r)).round().clamp(-FIM_MAX, FIM_MAX) as i32);
        let base: [u16; 8] = std::array::from_fn(|_| (FIM_BASE + 5.0 * gauss(r)).round() as u16);
        let [i0, i1, i2, i3] = [0, 1, 2, 3].map(|i| integral[i] as f64);
        let intensity = (i0 + i1 + i2 + i3) / FIM_COUNTS_PER_I0;
        let ratio = |a: f64, b: f64| if a + b > 0.0 { 0.5 * (a - b) / (a + b) } else { 0.0 };
        let tail = [intensity, ratio(i0, i2), ratio(i1, i3)];
        let values: [FieldValue; 19] = std::array::from_fn(|k| match k {
            0..8 => FieldValue::I32(integral[k]),
            8..16 => FieldValue::U16(base[k - 8]),
            _ => FieldValue::F64(tail[k - 16]),
        });
        w.shapes_data(&self.def, &values);
        intensity
    }
}

// ---- a node ----

/// What one stream's L1Accept recorded, for the truth file.
#[derive(Clone, Copy, Debug, Default)]
pub struct L1Record {
    pub hsd_area: Option<i64>,
    pub cam_sum: Option<u64>,
    /// (segment, `fim.fex.intensity`).
    pub fim: Option<(u32, f64)>,
    /// A Jungfrau frame was written (its truth is kept by the detector).
    pub jungfrau: bool,
}

/// One DRP node: the detectors of one stream.
pub struct Node {
    pub stream: u32,
    runinfo: NamesDef,
    chunkinfo: NamesDef,
    smdinfo: NamesDef,
    beam: Option<Beam>,
    hsd: Option<Hsd>,
    cam: Option<Cam>,
    fim: Option<Fim>,
    jungfrau: Option<Jungfrau>,
    area: Option<AreaDetector>,
    /// This stream records the L1Accept of events whose index is a multiple of this.
    l1_every: u64,
    /// Its readout group (0: every event, 1: the mixed-rate FIMs, 2: a Jungfrau below full rate).
    readout_group: u32,
}

impl Node {
    /// The node of stream `stream` of `streams`; its DRP node id is the stream number.
    pub fn new(stream: u32, streams: u32, seed: u64, image: Option<(u32, u32)>) -> Self {
        let node = stream;
        let mut ids = Ids { node, next: 0 };
        let beam = (stream == 0).then(|| Beam::new(&mut ids, seed));
        let hsd = (stream == 1).then(|| Hsd::new(&mut ids, seed));
        let cam_stream = streams.min(2) - 1;
        let cam = image.filter(|_| stream == cam_stream).map(|wh| Cam::new(&mut ids, seed, wh));
        let fim = (stream >= 2).then(|| Fim::new(&mut ids, seed, stream - 2));
        Node {
            stream,
            runinfo: make_def(names_id(node, RUNINFO_ID), "runinfo", "runinfo", "runinfo", [0, 0, 1], 0, &[("expt", CharStr, 1), ("runnum", U32, 0)]),
            chunkinfo: make_def(
                names_id(node, CHUNKINFO_ID),
                "chunkinfo",
                "chunkinfo",
                "chunkinfo",
                [0, 0, 1],
                0,
                &[("chunkid", U32, 0), ("filename", CharStr, 1)],
            ),
            smdinfo: xtc::writer::smdinfo_names(names_id(node, SMDINFO_ID)),
            beam,
            hsd,
            cam,
            l1_every: if fim.is_some() { MIXED_RATE_EVERY } else { 1 },
            readout_group: u32::from(fim.is_some()),
            fim,
            jungfrau: None,
            area: None,
        }
    }

    /// An area detector's own node (epix10ka, epixM320, Archon): a frame every `every` events.
    pub fn area(stream: u32, seed: u64, every: u64, make: impl FnOnce(u32) -> AreaDetector) -> Self {
        let mut node = Node::new(stream, 2, seed, None);
        (node.beam, node.hsd, node.fim) = (None, None, None);
        node.area = Some(make(stream));
        node.l1_every = every;
        node.readout_group = if every > 1 { 2 } else { 0 };
        node
    }

    /// The area detector of this node, if it has one.
    pub fn area_detector(&self) -> Option<&AreaDetector> {
        self.area.as_ref()
    }

    /// `--cam-calib`: the camera of this node (if any) gets per-pixel dark levels and gains.
    pub fn calibrate_cam(&mut self, seed: u64) {
        if let Some(c) = &mut self.cam {
            c.calibrate(seed);
        }
    }

    /// Writes the camera's constants, if it has some (`Camera::CalibV1/cam/<ctype>/<run>-end.data`).
    pub fn deploy_cam_constants(&self, calib_dir: &std::path::Path, run: u32) -> Result<(), crate::SimError> {
        let Some(cam) = self.cam.as_ref().filter(|c| c.calib.is_some()) else { return Ok(()) };
        let what = format!("{}x{} camera", cam.width, cam.height);
        for ctype in [detector::CalibType::Pedestals, detector::CalibType::PixelGain] {
            area::write_constant(calib_dir, CAM_CALIB_GROUP, &cam.def.det_name, ctype, run, &cam.constant(ctype), &what)?;
        }
        Ok(())
    }

    /// The camera's truth with `--cam-calib`.
    pub fn cam_truth(&self, calib_dir: std::path::PathBuf) -> Option<CamTruth> {
        let cam = self.cam.as_ref()?;
        let c = cam.calib.as_ref()?;
        Some(CamTruth {
            det_name: cam.def.det_name.clone(),
            stream: self.stream,
            width: cam.width as u32,
            height: cam.height as u32,
            calib_dir,
            pedestal_adu: CAM_PEDESTAL,
            pedestal_spread_adu: CAM_PEDESTAL_SPREAD,
            gain_rel_spread: CAM_GAIN_REL_SPREAD,
            noise_adu: CAM_READ_NOISE,
            frames: c.frames.clone(),
        })
    }

    /// The Jungfrau's own node: stream `stream`, `modules` modules, a frame every `every` events.
    pub fn jungfrau(stream: u32, seed: u64, modules: u32, every: u64) -> Self {
        // The DAQ's own records (runinfo, chunkinfo, smdinfo) as every node, no other detector.
        let mut node = Node::new(stream, 2, seed, None);
        (node.beam, node.hsd, node.fim) = (None, None, None);
        node.jungfrau = Some(Jungfrau::new(stream, 0, seed, modules));
        node.l1_every = every;
        node.readout_group = if every > 1 { 2 } else { 0 };
        node
    }

    /// The simulated Jungfrau, on its node.
    pub fn jungfrau_detector(&self) -> Option<&Jungfrau> {
        self.jungfrau.as_ref()
    }

    pub fn l1_every(&self) -> u64 {
        self.l1_every
    }

    pub fn readout_group(&self) -> u32 {
        self.readout_group
    }

    /// The `smdinfo` Names of this stream's smd Configure.
    pub fn smdinfo(&self) -> &NamesDef {
        &self.smdinfo
    }

    /// Whether this stream records the L1Accept of event `index`.
    pub fn records(&self, index: u64) -> bool {
        index.is_multiple_of(self.l1_every)
    }

    /// Every Names of the Configure with the datagram its data goes into.
    pub fn names(&self) -> Vec<(&NamesDef, DataIn)> {
        let mut v = vec![(&self.runinfo, DataIn::BeginRun), (&self.chunkinfo, DataIn::ChunkEnable)];
        if let Some(b) = &self.beam {
            v.extend([&b.timing, &b.gmd, &b.ipm2, &b.lasr, &b.diode].map(|d| (d, DataIn::L1Accept)));
            v.extend([(&b.scan, DataIn::BeginStep), (&b.epics, DataIn::SlowUpdate), (&b.epicsinfo, DataIn::Configure)]);
        }
        if let Some(h) = &self.hsd {
            v.extend([(&h.raw, DataIn::L1Accept), (&h.fex, DataIn::L1Accept), (&h.config, DataIn::Configure)]);
        }
        if let Some(c) = &self.cam {
            v.push((&c.def, DataIn::L1Accept));
        }
        if let Some(f) = &self.fim {
            v.push((&f.def, DataIn::L1Accept));
        }
        if let Some(j) = &self.jungfrau {
            v.extend(j.names().map(|(d, l1)| (d, if l1 { DataIn::L1Accept } else { DataIn::Configure })));
        }
        if let Some(a) = &self.area {
            v.extend(a.names().into_iter().map(|(d, l1)| (d, if l1 { DataIn::L1Accept } else { DataIn::Configure })));
        }
        v
    }

    pub fn write_configure(&self, w: &mut DgramWriter) {
        for (def, _) in self.names() {
            w.names(def);
        }
        if let Some(b) = &self.beam {
            b.write_epicsinfo(w);
        }
        if let Some(h) = &self.hsd {
            h.write_config(w);
        }
        if let Some(j) = &self.jungfrau {
            j.write_configure(w);
        }
        if let Some(a) = &self.area {
            a.write_configure(w);
        }
    }

    pub fn write_begin_run(&self, w: &mut DgramWriter, exp: &str, run: u32) {
        w.shapes_data(&self.runinfo, &[FieldValue::Str(exp), FieldValue::U32(run)]);
    }

    /// The scan values go into stream 0 only (as in the DAQ's `fakesteps` files).
    pub fn write_begin_step(&mut self, w: &mut DgramWriter, step: u32, delay_ps: f64) {
        if let Some(j) = &mut self.jungfrau {
            j.begin_step(step);
        }
        if let Some(b) = &self.beam {
            let doc = step_docstring(step);
            w.shapes_data(&b.scan, &[FieldValue::F64(delay_ps), FieldValue::F64(step as f64), FieldValue::Str(&doc)]);
        }
    }

    /// `next_chunk` = (chunk id, bare file name) when this Enable ends the current chunk.
    pub fn write_enable(&self, w: &mut DgramWriter, next_chunk: Option<(u32, &str)>) {
        if let Some((id, name)) = next_chunk {
            w.shapes_data(&self.chunkinfo, &[FieldValue::U32(id), FieldValue::Str(name)]);
        }
    }

    pub fn write_slow_update(&mut self, w: &mut DgramWriter, delay_ps: f64) {
        if let Some(b) = &mut self.beam {
            b.write_slow_update(w, delay_ps);
        }
    }

    pub fn write_l1(&mut self, w: &mut DgramWriter, shot: &Shot) -> L1Record {
        let mut rec = L1Record::default();
        if let Some(b) = &self.beam {
            b.write_l1(w, shot);
        }
        if let Some(h) = &mut self.hsd {
            rec.hsd_area = Some(h.write_l1(w, shot));
        }
        if let Some(c) = &mut self.cam {
            rec.cam_sum = Some(c.write_l1(w, shot));
        }
        if let Some(f) = &mut self.fim {
            rec.fim = Some((f.def.segment, f.write_l1(w, shot)));
        }
        if let Some(j) = &mut self.jungfrau {
            j.write_l1(w, shot);
            rec.jungfrau = true;
        }
        if let Some(a) = &mut self.area {
            a.write_l1(w, shot);
        }
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_data_is_the_153_byte_struct() {
        let size: usize = TIMING_FIELDS
            .iter()
            .map(|&(n, t, r)| {
                let len = match (n, r) {
                    (_, 0) => 1,
                    ("fixedRates", _) => 10,
                    ("acRates", _) => 6,
                    ("ebeamEnergy", _) => 4,
                    ("xWavelength", _) => 2,
                    ("mpsLimits" | "mpsPowerClass", _) => 16,
                    ("sequenceValues", _) => 18,
                    ("inhibitCounts", _) => 8,
                    _ => unreachable!("{n}"),
                };
                len * t.size()
            })
            .sum();
        assert_eq!(size, 153);
    }

    #[test]
    fn fex_of_a_known_waveform() {
        let mut wf = [100u16; HSD_SAMPLES];
        wf[20] = 150;
        wf[21] = 130;
        wf[50] = 400; // outside the area window, still the peak
        let f = hsd_fex(&wf);
        assert_eq!((f.baseline, f.area, f.peak_pos, f.peak_ampl, f.n_over), (100.0, 80, 50, 300, 3));
    }

    #[test]
    fn names_ids_are_unique_per_stream_and_avoid_smdinfo() {
        for streams in [1, 3] {
            for s in 0..streams {
                let n = Node::new(s, streams, 1, Some((8, 4)));
                let mut ids: Vec<u32> = n.names().iter().map(|(d, _)| d.names_id).collect();
                ids.push(n.smdinfo().names_id);
                let len = ids.len();
                ids.sort();
                ids.dedup();
                assert_eq!(ids.len(), len, "stream {s} of {streams}");
            }
        }
    }
}
