//! A simulated Jungfrau area detector (`--jungfrau N`): N modules of 512×1024 pixels, laid out
//! as psana's own Jungfrau files are (detector `jungfrau`, detType `jungfrau`, alg `raw` 0.2.0,
//! one Names per module with the module as its segment; a `config` Names per segment in the
//! Configure), and its calibration constants in psana's calib-dir layout.
//!
//! # The model
//!
//! Every pixel has, per gain range g = 0, 1, 2, a pedestal `ped[g]` (ADU), a gain `gain[g]`
//! (ADU/keV) and a noise rms `rms[g]` (ADU); offsets are 0. Gains of ranges 1 and 2 are negative,
//! as in real Jungfrau constants: in those ranges the ADC value falls from the pedestal as the
//! charge grows. A pixel that collects the energy `e` keV (photons × 9.5 keV) in a frame
//! switches range by `e` (dynamic gain): g = 0 below 250 keV, 1 below 5000 keV, else 2, and reads
//!
//! ```text
//! raw = code[g] << 14 | clamp(round(ped[g] + gain[g]·e + rms[g]·n), 0, 0x3fff)
//! code = 00, 01, 11 for g = 0, 1, 2                  n: a unit normal of that pixel and frame
//! ```
//!
//! Hot pixels read `ped[0]` + 600 ADU with 5× the noise, dead ones 0; both are flagged in
//! `pixel_status` (bits 1|16 and 2|32, psana's dark-processing bits, in all three ranges) and
//! carry no signal.
//!
//! The signal, from the shot's I0 = `ipm2.raw.sum` (clamped at 0) and the pump-probe response
//! `r` = `Model::response(delay)` when the laser fires (0 when it does not):
//! - a diffuse scattering ring (water, q = 2.0 Å⁻¹ at 9.5 keV): expected photons per pixel
//!   `ring_photons_per_i0 · I0 · (1 + ring_pump_change · r) · exp(−(ρ − R)²/2σ²)`, ρ the pixel's
//!   distance to the beam; R is 0.6 of the detector's smaller half-extent and fixes the detector
//!   distance, σ = 0.08 R;
//! - a handful of Bragg spots (σ 1.2 px), whose peak photons per unit I0 fall by
//!   `bragg_pump_drop · r`, bright enough to switch to gain ranges 1 and 2.
//!
//! Photon counts are Poisson: the ring's total is drawn, then spread over its pixels by their
//! weights (Poisson splitting gives independent Poisson pixels), a few µs per thousand photons
//! instead of a draw for each of its ~10⁵ faint pixels; each bright spot pixel gets its own draw.
//!
//! Speed: the noise comes from a table of unit normals generated once, read at a random offset
//! per module and frame, so a dark pixel costs a multiply-add.

use std::path::{Path, PathBuf};
use std::time::Instant;

use detector::constants::array::{Elements, NdArray};
use detector::constants::calibdir::deploy_path;
use detector::constants::ndarrio::write_text;
use detector::CalibType;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde::{Deserialize, Serialize};
use xtc::writer::{names_id, ArrayData, DgramWriter, FieldDef, FieldValue, NamesDef};
use xtc::DataType::{self, *};

use crate::clock;
use crate::model::{gauss, rng, rng_stream, Model, Shot};
use crate::SimError;

/// Pixel rows and columns of one module (psana's `(1, 512, 1024)` raw per segment).
pub const ROWS: usize = 512;
pub const COLS: usize = 1024;
pub const PANEL: usize = ROWS * COLS;
/// The most modules: a 4M.
pub const MAX_MODULES: u32 = 8;
/// The 14-bit ADC value of a raw word; bits 15–14 are the gain code.
pub const ADU_MASK: u16 = 0x3fff;
/// The gain code (bits 15–14) of each gain range.
pub const GAIN_CODE: [u16; 3] = [0b00, 0b01, 0b11];
pub const DET_NAME: &str = "jungfrau";
/// psana1's `<Group>` for Jungfrau constants (spec §2.2).
pub const CALIB_GROUP: &str = "Jungfrau::CalibV1";
/// `pixel_status` bits (psana's dark processing): rms too high | average too high, and
/// rms too low | average too low.
pub const STATUS_HOT: u64 = 1 | 16;
pub const STATUS_DEAD: u64 = 2 | 32;
/// The constants `beamtime sim` writes; psana calibrates with the first three and the status.
pub const CTYPES: [CalibType; 5] = [CalibType::Pedestals, CalibType::PixelGain, CalibType::PixelOffset, CalibType::PixelStatus, CalibType::PixelRms];

/// Pixel pitch, µm.
const PIXEL_UM: f64 = 75.0;
/// Pixels between neighbouring modules.
const MODULE_GAP_PX: usize = 36;
/// Bytes of one module's ShapesData beyond its raw array (headers and the scalars).
pub const MODULE_DATAGRAM_BYTES: usize = PANEL * 2 + 256;
/// Unit normals in the noise table: four panels, read at a random offset and with a random
/// sign per module and frame (the sign keeps the overlap of two frames' windows from
/// correlating their noise sums).
const NOISE_TABLE_LEN: usize = 4 * PANEL;
/// `hotPixelThresh` of the config and of every frame (psana's file: 15000).
const HOT_PIXEL_THRESH: u16 = 15_000;
const MAX_HOT_PIXELS: u32 = 3_400;

/// The detector's physics; written to the truth file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JungfrauParams {
    pub photon_kev: f64,
    /// Mean and rms over pixels of the pedestals of gain ranges 0, 1, 2 (ADU).
    pub pedestal_adu: [f64; 3],
    pub pedestal_spread_adu: [f64; 3],
    /// Mean gains of ranges 0, 1, 2 (ADU/keV; ranges 1 and 2 negative) and their relative rms.
    pub gain_adu_per_kev: [f64; 3],
    pub gain_rel_spread: f64,
    /// Mean noise rms of ranges 0, 1, 2 (ADU) and its relative spread over pixels.
    pub noise_adu: [f64; 3],
    pub noise_rel_spread: f64,
    /// Energies (keV) above which a pixel switches to range 1, and to range 2.
    pub switch_kev: [f64; 2],
    /// Fractions of hot and dead pixels.
    pub hot_fraction: f64,
    pub dead_fraction: f64,
    pub hot_excess_adu: f64,
    /// The ring: scattering vector (Å⁻¹), peak photons per pixel per unit I0, and its relative
    /// change at full pump response.
    pub ring_q_per_angstrom: f64,
    pub ring_photons_per_i0: f64,
    pub ring_pump_change: f64,
    /// Bragg spots: count, rms width (px), range of peak photons per unit I0, and their
    /// relative drop at full pump response.
    pub bragg_spots: u32,
    pub bragg_sigma_px: f64,
    pub bragg_peak_photons_per_i0: [f64; 2],
    pub bragg_pump_drop: f64,
}

impl Default for JungfrauParams {
    fn default() -> Self {
        JungfrauParams {
            photon_kev: 9.5,
            pedestal_adu: [3000.0, 14000.0, 15000.0],
            pedestal_spread_adu: [300.0, 300.0, 300.0],
            gain_adu_per_kev: [40.0, -1.5, -0.1],
            gain_rel_spread: 0.03,
            noise_adu: [3.0, 2.0, 2.0],
            noise_rel_spread: 0.1,
            switch_kev: [250.0, 5000.0],
            hot_fraction: 2e-4,
            dead_fraction: 1e-4,
            hot_excess_adu: 600.0,
            ring_q_per_angstrom: 2.0,
            ring_photons_per_i0: 0.1,
            ring_pump_change: 0.15,
            bragg_spots: 6,
            bragg_sigma_px: 1.2,
            bragg_peak_photons_per_i0: [150.0, 1500.0],
            bragg_pump_drop: 0.3,
        }
    }
}

/// Where the modules and the beam are; written to the truth file.
///
/// Module m sits in column `m % 2`, row `m / 2` of a grid (1024 px wide, 512 px high modules,
/// 36 px gaps); the beam hits the centre of the grid's bounding box. `(x, y)` of pixel (row,
/// col) of module m, in pixels from the beam: `(m % 2)·1060 + col + 0.5 − beam_x`,
/// `(m / 2)·548 + row + 0.5 − beam_y`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JungfrauGeometry {
    pub modules: u32,
    pub pixel_um: f64,
    pub module_gap_px: u32,
    pub beam_x_px: f64,
    pub beam_y_px: f64,
    pub distance_mm: f64,
    pub ring_radius_px: f64,
    pub ring_sigma_px: f64,
    pub spots: Vec<BraggSpot>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BraggSpot {
    pub module: u32,
    pub row: f64,
    pub col: f64,
    pub peak_photons_per_i0: f64,
}

impl JungfrauGeometry {
    fn new(modules: u32, params: &JungfrauParams) -> Self {
        let grid_cols = modules.min(2) as usize;
        let grid_rows = modules.div_ceil(2) as usize;
        let width = grid_cols * COLS + (grid_cols - 1) * MODULE_GAP_PX;
        let height = grid_rows * ROWS + (grid_rows - 1) * MODULE_GAP_PX;
        let ring_radius_px = 0.6 * width.min(height) as f64 / 2.0;
        let wavelength_angstrom = 12.398_419_8 / params.photon_kev;
        let two_theta = 2.0 * (params.ring_q_per_angstrom * wavelength_angstrom / (4.0 * std::f64::consts::PI)).asin();
        JungfrauGeometry {
            modules,
            pixel_um: PIXEL_UM,
            module_gap_px: MODULE_GAP_PX as u32,
            beam_x_px: width as f64 / 2.0,
            beam_y_px: height as f64 / 2.0,
            distance_mm: ring_radius_px * PIXEL_UM / 1000.0 / two_theta.tan(),
            ring_radius_px,
            ring_sigma_px: 0.08 * ring_radius_px,
            spots: Vec::new(),
        }
    }

    /// Pixel centre (x, y) in pixels from the beam.
    pub fn pixel_xy(&self, module: u32, row: f64, col: f64) -> (f64, f64) {
        let x0 = (module % 2) as usize * (COLS + MODULE_GAP_PX);
        let y0 = (module / 2) as usize * (ROWS + MODULE_GAP_PX);
        (x0 as f64 + col + 0.5 - self.beam_x_px, y0 as f64 + row + 0.5 - self.beam_y_px)
    }

    /// The (module, row, col) under the point (x, y) from the beam, if a module is there.
    fn locate(&self, x: f64, y: f64) -> Option<(u32, f64, f64)> {
        let (gx, gy) = (x + self.beam_x_px, y + self.beam_y_px);
        (0..self.modules).find_map(|m| {
            let x0 = ((m % 2) as usize * (COLS + MODULE_GAP_PX)) as f64;
            let y0 = ((m / 2) as usize * (ROWS + MODULE_GAP_PX)) as f64;
            let (col, row) = (gx - x0 - 0.5, gy - y0 - 0.5);
            ((0.0..(COLS - 1) as f64).contains(&col) && (0.0..(ROWS - 1) as f64).contains(&row)).then_some((m, row, col))
        })
    }
}

/// Draws items with given weights in O(1) each (Vose's alias method).
struct AliasTable {
    items: Vec<u32>,
    prob: Vec<f32>,
    alias: Vec<u32>,
}

impl AliasTable {
    fn new(items: Vec<u32>, weights: &[f64]) -> Self {
        let n = items.len();
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
        let mut prob = vec![1.0f32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s] as f32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        AliasTable { items, prob, alias }
    }

    fn sample(&self, r: &mut ChaCha8Rng) -> u32 {
        let k = r.random_range(0..self.items.len());
        if r.random::<f32>() < self.prob[k] { self.items[k] } else { self.items[self.alias[k] as usize] }
    }
}

/// A signal source: its pixels (global index `module · PANEL + row · 1024 + col`) with their
/// weights (1 at the peak), and the expected photons per unit I0 over all of them.
struct Source {
    items: Vec<u32>,
    weights: Vec<f64>,
    peak_photons_per_i0: f64,
    table: AliasTable,
    photons_per_i0: f64,
    /// The same over good (unmasked) pixels only.
    good_photons_per_i0: f64,
}

/// One frame's ground truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JungfrauFrameTruth {
    /// The event's index in the run, its timestamp and scan step.
    pub index: u64,
    pub timestamp: u64,
    pub step: u32,
    pub laser_on: bool,
    /// The I0 the signal was scaled by (`ipm2.raw.sum` clamped at 0).
    pub i0: f64,
    /// The deposited energy (keV) summed over the good pixels (`pixel_status` 0 in every gain
    /// range) whose noise-free ADC value `ped[g] + gain[g]·e` lies in 0…0x3fff: exactly what
    /// psana's calib of those pixels sums to without noise, since `(ped + gain·e − ped)/gain = e`.
    /// The calibrated sum over good pixels differs from it by the noise and the ADC's rounding:
    /// per pixel, (rms[g]² + 1/12)/gain[g]² keV² of variance, g the pixel's range.
    pub energy_kev: f64,
    /// The part of `energy_kev`'s photons that came from the ring, and from the Bragg spots
    /// (good pixels, including clipped ones, which by design there are none of).
    pub ring_kev: f64,
    pub bragg_kev: f64,
    /// Good pixels read in gain ranges 1 and 2 (the rest are in range 0).
    pub pixels_g1: u64,
    pub pixels_g2: u64,
    /// Good pixels whose noise-free value left the ADC range (left out of `energy_kev`).
    pub clipped_pixels: u64,
}

/// Per scan step: the ring's intensity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JungfrauStepTruth {
    pub step: u32,
    pub delay_ps: f64,
    pub frames: u64,
    pub laser_on_frames: u64,
    /// The model's expected ring energy on the good pixels per unit I0 (keV), laser on (with the
    /// step's pump response) and off.
    pub ring_kev_per_i0_laser_on: f64,
    pub ring_kev_per_i0_laser_off: f64,
    /// Σ ring_kev and Σ i0 over the step's frames, laser on and off.
    pub ring_kev_laser_on: f64,
    pub ring_kev_laser_off: f64,
    pub i0_laser_on: f64,
    pub i0_laser_off: f64,
}

/// Everything about the Jungfrau of a run; `Truth::jungfrau`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JungfrauTruth {
    pub stream: u32,
    pub modules: u32,
    /// Frames are recorded for events whose index is a multiple of this.
    pub every: u64,
    /// The calib dir holding the constants (`<calib>/Jungfrau::CalibV1/jungfrau/<ctype>/<run>-end.data`).
    pub calib_dir: PathBuf,
    pub params: JungfrauParams,
    pub geometry: JungfrauGeometry,
    pub hot_pixels: u64,
    pub dead_pixels: u64,
    pub frames: Vec<JungfrauFrameTruth>,
    pub steps: Vec<JungfrauStepTruth>,
}

/// One module's constants, per gain range.
struct ModuleConstants {
    pedestal: [Vec<f32>; 3],
    gain: [Vec<f32>; 3],
    rms: [Vec<f32>; 3],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PixelKind {
    Good,
    Hot,
    Dead,
}

/// The simulated detector: its Names, constants, signal and state.
pub struct Jungfrau {
    raw: Vec<NamesDef>,
    config: Vec<NamesDef>,
    pub params: JungfrauParams,
    pub geometry: JungfrauGeometry,
    modules: Vec<ModuleConstants>,
    /// Hot and dead pixels by global index, sorted.
    bad: Vec<(u32, PixelKind)>,
    kinds: Vec<PixelKind>,
    ring: Source,
    spots: Vec<Source>,
    noise: Vec<f32>,
    rng: ChaCha8Rng,
    /// Photons per pixel of the current frame (global index), and the pixels that have some.
    photons: Vec<u32>,
    touched: Vec<u32>,
    frame_raw: Vec<u16>,
    frame_cnt: u64,
    step: u32,
    /// The run's model (same seed): the pump-probe response of each delay.
    model: Model,
    pub frames: Vec<JungfrauFrameTruth>,
}

/// Rounds to `digits` significant digits (constants print short and parse back exactly).
fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

impl Jungfrau {
    /// `modules` modules whose Names belong to DRP node `node` (its NamesIds from `first_id`).
    pub fn new(node: u32, first_id: u8, seed: u64, modules: u32) -> Self {
        let params = JungfrauParams::default();
        let mut geometry = JungfrauGeometry::new(modules, &params);
        let mut r = rng(seed, rng_stream::JUNGFRAU);
        let mut id = first_id;
        let mut next_id = || {
            id += 1;
            names_id(node, id - 1)
        };
        let mut raw = Vec::new();
        let mut config = Vec::new();
        for m in 0..modules {
            raw.push(names_def(next_id(), "raw", m, RAW_FIELDS));
            config.push(names_def(next_id(), "config", m, &config_fields()));
        }

        // Per-pixel constants: pedestals to 1/8 ADU and gains to 4 digits, as a dark run and a
        // gain calibration would give, and short in the text files.
        let p = &params;
        let modules_constants: Vec<ModuleConstants> = (0..modules)
            .map(|_| {
                let per_range = |r: &mut ChaCha8Rng, f: &dyn Fn(f64) -> f64| -> Vec<f32> { (0..PANEL).map(|_| f(gauss(r)) as f32).collect() };
                let pedestal = std::array::from_fn(|g| per_range(&mut r, &|z| ((p.pedestal_adu[g] + p.pedestal_spread_adu[g] * z) * 8.0).round() / 8.0));
                let gain = std::array::from_fn(|g| per_range(&mut r, &|z| significant(p.gain_adu_per_kev[g] * (1.0 + p.gain_rel_spread * z), 4)));
                let rms = std::array::from_fn(|g| per_range(&mut r, &|z| ((p.noise_adu[g] * (1.0 + p.noise_rel_spread * z)).max(0.5 * p.noise_adu[g]) * 100.0).round() / 100.0));
                ModuleConstants { pedestal, gain, rms }
            })
            .collect();

        let total = modules as usize * PANEL;
        let mut kinds = vec![PixelKind::Good; total];
        let mut bad = Vec::new();
        for (kind, fraction) in [(PixelKind::Hot, p.hot_fraction), (PixelKind::Dead, p.dead_fraction)] {
            let count = (total as f64 * fraction).round() as usize;
            while bad.iter().filter(|(_, k)| *k == kind).count() < count {
                let i = r.random_range(0..total);
                if kinds[i] == PixelKind::Good {
                    kinds[i] = kind;
                    bad.push((i as u32, kind));
                }
            }
        }
        bad.sort_by_key(|&(i, _)| i);

        // The ring's pixels: within 4σ of its radius.
        let (radius, sigma) = (geometry.ring_radius_px, geometry.ring_sigma_px);
        let (mut items, mut weights) = (Vec::new(), Vec::new());
        for m in 0..modules {
            for row in 0..ROWS {
                for col in 0..COLS {
                    let (x, y) = geometry.pixel_xy(m, row as f64, col as f64);
                    let d = ((x * x + y * y).sqrt() - radius) / sigma;
                    if d.abs() <= 4.0 {
                        items.push((m as usize * PANEL + row * COLS + col) as u32);
                        weights.push((-0.5 * d * d).exp());
                    }
                }
            }
        }
        let ring = source(items, weights, p.ring_photons_per_i0, &kinds);

        let mut spots = Vec::new();
        while geometry.spots.len() < p.bragg_spots as usize {
            let rho = radius * (0.4 + 1.1 * r.random::<f64>());
            let phi = std::f64::consts::TAU * r.random::<f64>();
            let Some((module, row, col)) = geometry.locate(rho * phi.cos(), rho * phi.sin()) else { continue };
            // Whole spots only: 6 px from every edge.
            if !(6.0..(ROWS - 7) as f64).contains(&row) || !(6.0..(COLS - 7) as f64).contains(&col) {
                continue;
            }
            let [lo, hi] = p.bragg_peak_photons_per_i0;
            let peak = (lo * (hi / lo).powf(r.random::<f64>())).round();
            let (mut items, mut weights) = (Vec::new(), Vec::new());
            for dr in -5..=5 {
                for dc in -5..=5 {
                    let (pr, pc) = (row.round() as i64 + dr, col.round() as i64 + dc);
                    let dist2 = (pr as f64 - row).powi(2) + (pc as f64 - col).powi(2);
                    if dist2 <= 25.0 {
                        items.push((module as usize * PANEL + pr as usize * COLS + pc as usize) as u32);
                        weights.push((-0.5 * dist2 / (p.bragg_sigma_px * p.bragg_sigma_px)).exp());
                    }
                }
            }
            spots.push(source(items, weights, peak, &kinds));
            geometry.spots.push(BraggSpot { module, row, col, peak_photons_per_i0: peak });
        }

        let noise = (0..NOISE_TABLE_LEN).map(|_| gauss(&mut r) as f32).collect();
        Jungfrau {
            raw,
            config,
            params,
            geometry,
            modules: modules_constants,
            bad,
            kinds,
            ring,
            spots,
            noise,
            rng: r,
            photons: vec![0; total],
            touched: Vec::new(),
            frame_raw: vec![0; PANEL],
            frame_cnt: 0,
            step: 0,
            model: Model::from_seed(seed),
            frames: Vec::new(),
        }
    }

    /// Every Names: the raw one (L1Accept) and the config one (Configure) of each segment.
    pub fn names(&self) -> impl Iterator<Item = (&NamesDef, bool)> {
        self.raw.iter().map(|d| (d, true)).chain(self.config.iter().map(|d| (d, false)))
    }

    pub fn write_configure(&self, w: &mut DgramWriter) {
        for def in &self.config {
            w.shapes_data(def, &config_values());
        }
    }

    pub fn begin_step(&mut self, step: u32) {
        self.step = step;
    }

    /// Writes every module's frame of `shot` and records its truth.
    pub fn write_l1(&mut self, w: &mut DgramWriter, shot: &Shot) {
        let i0 = shot.ipm2.sum.max(0.0);
        let response = if shot.laser_on { self.model.response(shot.delay_ps) } else { 0.0 };
        let p = &self.params;
        // Photons. The ring's faint pixels: a Poisson total spread over them by weight. The
        // spots' few bright pixels: a Poisson draw each.
        let ring_mean = i0 * self.ring.photons_per_i0 * (1.0 + p.ring_pump_change * response);
        let mut ring_good = 0u64;
        for _ in 0..poisson(&mut self.rng, ring_mean) {
            let i = self.ring.table.sample(&mut self.rng);
            ring_good += u64::from(self.kinds[i as usize] == PixelKind::Good);
            add_photons(&mut self.photons, &mut self.touched, i, 1);
        }
        let spot_scale = i0 * (1.0 - p.bragg_pump_drop * response);
        let mut bragg_good = 0u64;
        for spot in &self.spots {
            for (&i, w) in spot.items.iter().zip(&spot.weights) {
                let n = poisson(&mut self.rng, spot_scale * spot.peak_photons_per_i0 * w);
                if self.kinds[i as usize] == PixelKind::Good {
                    bragg_good += n;
                }
                add_photons(&mut self.photons, &mut self.touched, i, n as u32);
            }
        }
        self.touched.sort_unstable();

        let mut truth = JungfrauFrameTruth {
            index: shot.index,
            timestamp: shot.timestamp,
            step: self.step,
            laser_on: shot.laser_on,
            i0,
            energy_kev: 0.0,
            ring_kev: ring_good as f64 * p.photon_kev,
            bragg_kev: bragg_good as f64 * p.photon_kev,
            pixels_g1: 0,
            pixels_g2: 0,
            clipped_pixels: 0,
        };
        let mut good_photons = 0u64;
        let (mut touched_at, mut bad_at) = (0, 0);
        for m in 0..self.modules.len() {
            let (lo, hi) = ((m * PANEL) as u32, ((m + 1) * PANEL) as u32);
            let c = &self.modules[m];
            let offset = self.rng.random_range(0..=NOISE_TABLE_LEN - PANEL);
            let noise = &self.noise[offset..offset + PANEL];
            let sign: f32 = if self.rng.random() { 1.0 } else { -1.0 };
            // The dark frame: gain range 0, pedestal plus noise, rounded (values are > 0).
            for (((v, ped), rms), n) in self.frame_raw.iter_mut().zip(&c.pedestal[0]).zip(&c.rms[0]).zip(noise) {
                *v = (ped + rms * (sign * n) + 0.5).min(ADU_MASK as f32) as u16;
            }
            while touched_at < self.touched.len() && self.touched[touched_at] < hi {
                let gi = self.touched[touched_at];
                touched_at += 1;
                let i = (gi - lo) as usize;
                let photons = self.photons[gi as usize];
                self.photons[gi as usize] = 0;
                let e = photons as f64 * p.photon_kev;
                let g = if e < p.switch_kev[0] {
                    0
                } else if e < p.switch_kev[1] {
                    1
                } else {
                    2
                };
                let noise_free = c.pedestal[g][i] as f64 + c.gain[g][i] as f64 * e;
                let adu = noise_free + c.rms[g][i] as f64 * (sign * noise[i]) as f64;
                self.frame_raw[i] = GAIN_CODE[g] << 14 | adu.round().clamp(0.0, ADU_MASK as f64) as u16;
                if self.kinds[gi as usize] == PixelKind::Good {
                    match g {
                        1 => truth.pixels_g1 += 1,
                        2 => truth.pixels_g2 += 1,
                        _ => {}
                    }
                    if (0.0..=ADU_MASK as f64).contains(&noise_free) {
                        good_photons += photons as u64;
                    } else {
                        truth.clipped_pixels += 1;
                    }
                }
            }
            while bad_at < self.bad.len() && self.bad[bad_at].0 < hi {
                let (gi, kind) = self.bad[bad_at];
                bad_at += 1;
                let i = (gi - lo) as usize;
                self.frame_raw[i] = match kind {
                    PixelKind::Hot => (c.pedestal[0][i] as f64 + p.hot_excess_adu + 5.0 * c.rms[0][i] as f64 * (sign * noise[i]) as f64).round().clamp(0.0, ADU_MASK as f64) as u16,
                    _ => 0,
                };
            }
            let hot = self.frame_raw.iter().filter(|&&v| v & ADU_MASK > HOT_PIXEL_THRESH).count() as u32;
            let ticks = (clock::pulse_ns(shot.pulse_id) / 100) as u64; // the module's 10 MHz clock
            w.shapes_data(
                &self.raw[m],
                &[
                    FieldValue::Array(&[1, ROWS as u32, COLS as u32], ArrayData::U16(&self.frame_raw)),
                    FieldValue::U64(self.frame_cnt),
                    FieldValue::U64(ticks),
                    FieldValue::U16(HOT_PIXEL_THRESH),
                    FieldValue::U32(hot),
                    FieldValue::U32(MAX_HOT_PIXELS),
                ],
            );
        }
        self.touched.clear();
        self.frame_cnt += 1;
        truth.energy_kev = good_photons as f64 * p.photon_kev;
        self.frames.push(truth);
    }

    /// The constants in psana's shapes: `(3, NSEG, 512, 1024)` in C order.
    pub fn constant(&self, ctype: CalibType) -> NdArray {
        let nseg = self.modules.len();
        let shape = vec![3, nseg, ROWS, COLS];
        let per_range = |f: &dyn Fn(&ModuleConstants, usize) -> &Vec<f32>| -> Vec<f32> {
            (0..3).flat_map(|g| self.modules.iter().flat_map(move |c| f(c, g).iter().copied())).collect()
        };
        let data = match ctype {
            CalibType::Pedestals => Elements::F32(per_range(&|c, g| &c.pedestal[g])),
            CalibType::PixelGain => Elements::F32(per_range(&|c, g| &c.gain[g])),
            CalibType::PixelRms => Elements::F32(per_range(&|c, g| &c.rms[g])),
            CalibType::PixelOffset => Elements::F32(vec![0.0; 3 * nseg * PANEL]),
            CalibType::PixelStatus => {
                let one: Vec<u64> = self.kinds.iter().map(|k| match k {
                    PixelKind::Good => 0,
                    PixelKind::Hot => STATUS_HOT,
                    PixelKind::Dead => STATUS_DEAD,
                }).collect();
                Elements::U64([one.as_slice(); 3].concat())
            }
            other => unreachable!("beamtime sim writes no {other:?}"),
        };
        NdArray::new(shape, data)
    }

    /// Writes the constants for runs `run` on (`<calib>/Jungfrau::CalibV1/jungfrau/<ctype>/<run>-end.data`,
    /// NDArrIO text); returns the files and the bytes written.
    pub fn write_constants(&self, calib_dir: &Path, run: u32) -> Result<(Vec<PathBuf>, u64), SimError> {
        let mut files = Vec::new();
        let mut bytes = 0;
        for ctype in CTYPES {
            let path = deploy_path(calib_dir, CALIB_GROUP, DET_NAME, ctype, run, None);
            let dir = path.parent().expect("a deploy path has a folder");
            std::fs::create_dir_all(dir).map_err(|e| SimError::io(dir, e))?;
            let comment = format!("beamtime sim: {} of the simulated {}-module Jungfrau, runs {run} on", ctype.name(), self.modules.len());
            write_text(&path, &self.constant(ctype), &[&comment]).map_err(|e| SimError::io(&path, e))?;
            bytes += std::fs::metadata(&path).map_err(|e| SimError::io(&path, e))?.len();
            files.push(path);
        }
        Ok((files, bytes))
    }

    pub fn hot_and_dead(&self) -> (u64, u64) {
        let hot = self.bad.iter().filter(|(_, k)| *k == PixelKind::Hot).count() as u64;
        (hot, self.bad.len() as u64 - hot)
    }

    /// The expected ring energy on good pixels per unit I0 at pump response `response`.
    pub fn ring_kev_per_i0(&self, response: f64) -> f64 {
        self.ring.good_photons_per_i0 * self.params.photon_kev * (1.0 + self.params.ring_pump_change * response)
    }
}

/// A Poisson draw of mean `mean` (0 for a mean ≤ 0).
fn poisson(r: &mut ChaCha8Rng, mean: f64) -> u64 {
    if mean > 0.0 { Poisson::new(mean).map_or(0.0, |d| d.sample(r)) as u64 } else { 0 }
}

fn add_photons(photons: &mut [u32], touched: &mut Vec<u32>, i: u32, n: u32) {
    if n > 0 {
        if photons[i as usize] == 0 {
            touched.push(i);
        }
        photons[i as usize] += n;
    }
}

fn source(items: Vec<u32>, weights: Vec<f64>, peak_photons_per_i0: f64, kinds: &[PixelKind]) -> Source {
    let good: f64 = items.iter().zip(&weights).filter(|(i, _)| kinds[**i as usize] == PixelKind::Good).map(|(_, w)| w).sum();
    let all: f64 = weights.iter().sum();
    Source {
        table: AliasTable::new(items.clone(), &weights),
        items,
        weights,
        peak_photons_per_i0,
        photons_per_i0: peak_photons_per_i0 * all,
        good_photons_per_i0: peak_photons_per_i0 * good,
    }
}

fn names_def(id: u32, alg: &str, segment: u32, fields: &[(&str, DataType, u32)]) -> NamesDef {
    NamesDef {
        names_id: id,
        det_name: DET_NAME.into(),
        det_type: DET_NAME.into(),
        // psana's module ids look like 8000000020000-230920-20004002c.
        det_id: format!("beamtime-sim-jungfrau-{segment:02}"),
        alg_name: alg.into(),
        alg_version: 0x000200, // 0.2.0, as psana's test_jungfrau05M_calib.xtc2
        segment,
        fields: fields.iter().map(|&(n, t, r)| FieldDef::new(n, t, r)).collect(),
    }
}

/// `jungfrau.raw` 0.2.0 as the DAQ records it.
const RAW_FIELDS: &[(&str, DataType, u32)] =
    &[("raw", U16, 3), ("frame_cnt", U64, 0), ("timestamp", U64, 0), ("hotPixelThresh", U16, 0), ("numHotPixels", U32, 0), ("maxHotPixels", U32, 0)];

/// `jungfrau.config` 0.2.0 as in psana's file: names, types and values.
enum ConfigValue {
    Dict(i32),
    Enum(i32),
    U8(u8),
    U16(u16),
    U32(u32),
    F64(f64),
    Str(&'static str),
}

const CONFIG: &[(&str, ConfigValue)] = {
    use ConfigValue::*;
    &[
        ("high:gain0Enum", Dict(1)),
        ("normal:gain0Enum", Dict(0)),
        ("DYNAMIC:gainModeEnum", Dict(0)),
        ("FIX_G1:gainModeEnum", Dict(3)),
        ("FIX_G2:gainModeEnum", Dict(4)),
        ("FORCE_SWITCH_G1:gainModeEnum", Dict(1)),
        ("FORCE_SWITCH_G2:gainModeEnum", Dict(2)),
        ("FULL_SPEED:speedLevelEnum", Dict(0)),
        ("HALF_SPEED:speedLevelEnum", Dict(1)),
        ("QUARTER_SPEED:speedLevelEnum", Dict(2)),
        ("expert.PauseThreshold", U8(16)),
        ("expert.TriggerDelay", U32(42)),
        ("firmwareBuild", Str("beamtime-sim jungfrau")),
        ("firmwareVersion", U32(50_397_184)),
        ("help", Str("-- user --\n  - bias_voltage_v : Module bias voltage in V.\n")),
        ("user.bias_voltage_v", U8(200)),
        ("user.exposure_period", F64(0.2)),
        ("user.exposure_time_s", F64(1e-5)),
        ("user.gain0:gain0Enum", Enum(0)),
        // Dynamic gain switching, as the model does.
        ("user.gainMode:gainModeEnum", Enum(0)),
        ("user.hot_pixel_threshold", U16(HOT_PIXEL_THRESH)),
        ("user.jungfrau_ip", Str("10.0.0.15")),
        ("user.jungfrau_mac", Str("aa:bb:cc:dd:ee:ff")),
        ("user.kcu_ip", Str("10.0.0.10")),
        ("user.kcu_mac", Str("08:00:56:00:00:00")),
        ("user.max_hot_pixels", U32(MAX_HOT_PIXELS)),
        ("user.port", U16(8192)),
        ("user.speedLevel:speedLevelEnum", Enum(1)),
        ("user.trigger_delay_s", F64(0.00021)),
    ]
};

fn config_fields() -> Vec<(&'static str, DataType, u32)> {
    CONFIG
        .iter()
        .map(|(n, v)| match v {
            ConfigValue::Dict(_) => (*n, EnumDict, 0),
            ConfigValue::Enum(_) => (*n, EnumVal, 0),
            ConfigValue::U8(_) => (*n, U8, 0),
            ConfigValue::U16(_) => (*n, U16, 0),
            ConfigValue::U32(_) => (*n, U32, 0),
            ConfigValue::F64(_) => (*n, F64, 0),
            ConfigValue::Str(_) => (*n, CharStr, 1),
        })
        .collect()
}

fn config_values() -> Vec<FieldValue<'static>> {
    CONFIG
        .iter()
        .map(|(_, v)| match v {
            ConfigValue::Dict(x) => FieldValue::EnumDict(*x),
            ConfigValue::Enum(x) => FieldValue::Enum(*x),
            ConfigValue::U8(x) => FieldValue::U8(*x),
            ConfigValue::U16(x) => FieldValue::U16(*x),
            ConfigValue::U32(x) => FieldValue::U32(*x),
            ConfigValue::F64(x) => FieldValue::F64(*x),
            ConfigValue::Str(s) => FieldValue::Str(s),
        })
        .collect()
}

/// The per-step truth from the frames (in event order).
pub fn step_truths(jf: &Jungfrau, steps: &[(u32, f64)]) -> Vec<JungfrauStepTruth> {
    steps
        .iter()
        .map(|&(step, delay_ps)| {
            let mut t = JungfrauStepTruth {
                step,
                delay_ps,
                frames: 0,
                laser_on_frames: 0,
                ring_kev_per_i0_laser_on: jf.ring_kev_per_i0(jf.model.response(delay_ps)),
                ring_kev_per_i0_laser_off: jf.ring_kev_per_i0(0.0),
                ring_kev_laser_on: 0.0,
                ring_kev_laser_off: 0.0,
                i0_laser_on: 0.0,
                i0_laser_off: 0.0,
            };
            for f in jf.frames.iter().filter(|f| f.step == step) {
                t.frames += 1;
                if f.laser_on {
                    t.laser_on_frames += 1;
                    t.ring_kev_laser_on += f.ring_kev;
                    t.i0_laser_on += f.i0;
                } else {
                    t.ring_kev_laser_off += f.ring_kev;
                    t.i0_laser_off += f.i0;
                }
            }
            t
        })
        .collect()
}

/// Writes the constants of `jf` for `run` into `calib_dir`, saying how long it took.
pub fn deploy(jf: &Jungfrau, calib_dir: &Path, run: u32) -> Result<(), SimError> {
    let started = Instant::now();
    let (files, bytes) = jf.write_constants(calib_dir, run)?;
    eprintln!(
        "  jungfrau constants: {} files, {:.1} MB in {:.2} s under {}",
        files.len(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        calib_dir.join(CALIB_GROUP).join(DET_NAME).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_table_draws_by_weight() {
        let t = AliasTable::new(vec![10, 20, 30], &[1.0, 2.0, 7.0]);
        let mut r = rng(1, 99);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[(t.sample(&mut r) / 10 - 1) as usize] += 1;
        }
        for (c, want) in counts.iter().zip([0.1, 0.2, 0.7]) {
            assert!((*c as f64 / 1e5 - want).abs() < 0.005, "{counts:?}");
        }
    }

    #[test]
    fn geometry_puts_the_beam_in_the_middle_and_spots_on_modules() {
        let jf = Jungfrau::new(2, 0, 5, 1);
        let g = &jf.geometry;
        assert_eq!((g.beam_x_px, g.beam_y_px, g.ring_radius_px), (512.0, 256.0, 153.6));
        assert_eq!(g.pixel_xy(0, 255.5, 511.5), (0.0, 0.0));
        assert_eq!(g.locate(0.0, 0.0), Some((0, 255.5, 511.5)));
        assert!((40.0..120.0).contains(&(g.distance_mm * 4.0)), "{} mm", g.distance_mm);
        assert_eq!(g.spots.len(), 6);
        let four = JungfrauGeometry::new(8, &JungfrauParams::default());
        assert_eq!((four.beam_x_px, four.beam_y_px), (1042.0, 1078.0));
        assert_eq!(four.locate(-1042.0 + 0.5 + 1060.0, -1078.0 + 0.5 + 3.0 * 548.0), Some((7, 0.0, 0.0)));
    }
}
