//! Simulated area detectors besides the Jungfrau, each in the layout psana's files have and
//! with its constants written into the calib dir (psana's LCLS-I layout, spec §2.2):
//!
//! | option | det / detType | Names (alg, version, segment) | constants (group/source) |
//! |---|---|---|---|
//! | `--epix10ka N` | `epixquad` (N = 2–4), `epix10ka` (1), `epix10k2M` (5–16) / `epix10ka` | per segment s: `raw` 2.0.1 {`raw` (352,384) u16, `aux` (4,384) u16} in L1Accepts, `config` 2.0.0 {`asicPixelConfig` (4,176,192) u8, `trbit` (4,) u8} in the Configure | `Epix10ka::CalibV1` (1), `Epix10kaQuad::CalibV1` (2–4), `Epix10ka2M::CalibV1` (5–16): pedestals, pixel_gain, pixel_rms `(7, N, 352, 384)` f32, pixel_status `(7, N, 352, 384)` u64 |
//! | `--epixm320` | `epixm` / `epixm320` | `raw` 0.1.0 {`raw` (4,192,384) u16}, segment 0 (the 4 ASICs are psana's "segments" 0–3) | `EpixM320::CalibV1/epixm`: pedestals `(3, 4, 192, 384)` f32 (index 0 gain bit 15 clear, 1 set, 2 the fixed-low set), pixel_status `(4, 192, 384)` u64 |
//! | `--archon ROWS` | `archon` / `archon` | `raw` 1.0.0 {`value` (ROWS, 4800) u16}, segment 0 | `Archon::CalibV1/archon`: pedestals `(ROWS, 4800)` f32 |
//!
//! (The camera's constants, `--cam-calib`, are in [`crate::detectors`].)
//!
//! Each detector has a stream of its own after the others (and after the Jungfrau's), in the
//! order epix10ka, epixM320, Archon, and records every `--jungfrau-every`-th event, as the
//! Jungfrau does. Frames are cheap: per pixel, a pedestal plus noise read from a table of unit
//! normals at a random offset and sign (as [`crate::jungfrau`]), then a few Bragg spots (or
//! spectral lines) whose photons are drawn per pixel.
//!
//! # epix10ka
//!
//! Gain modes are set as the DAQ does, by each ASIC's `asicPixelConfig` (per pixel) and `trbit`.
//! ASIC a of segment s gets family `(4s + a) mod 5` of
//! FH (config 12, trbit 1), FM (12, 0), FL (8, 0), auto high-to-low (0, 1), auto medium-to-low
//! (0, 0), and a 16×16 pixel map of config 8 (FL) in its own corner (row 0, col 0), which the
//! panel assembly (ASICs 1 and 2 rotated by 180°) moves to a panel corner. A pixel in an auto
//! family reads in its high (or medium) range and switches to low above a charge threshold,
//! setting data bit 14 (AHL_H→AHL_L, AML_M→AML_L); fixed-low pixels also read bit 14 set, as in
//! psana's `test_epix_calib.xtc2`. Per pixel and mode, `raw = bit14 | clamp(round(ped[m] +
//! gain[m]·E + rms[m]·n), 0, 0x3fff)`; gains are psana's defaults (16.4, 5.466, 0.164 ADU/keV
//! for H, M, L). No common mode is deployed.
//!
//! # epixM320
//!
//! Auto-ranging: a pixel reads in its high range (pedestal set 0) and switches, above a charge
//! threshold, to low (set 1), setting bit 15; 15 data bits. Calib is `raw & 0x7fff − ped[bit15]`
//! in ADU (no gain in psana's formula).
//!
//! # Archon
//!
//! 16 banks of 300 columns per row: 264 real, then 36 fake (no photons). Each bank of each row
//! gets a common offset per frame (all its 300 columns, fakes included), which psana's common
//! mode (the median of the bank's fake columns) removes. Signal: three emission lines across the
//! real columns, scaled by I0.

use std::path::{Path, PathBuf};

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

use crate::model::{gauss, rng, rng_stream, Shot};
use crate::SimError;

/// `pixel_status` bits as the Jungfrau's (psana's dark processing): hot, dead.
pub const STATUS_HOT: u64 = 1 | 16;
pub const STATUS_DEAD: u64 = 2 | 32;
const HOT_FRACTION: f64 = 2e-4;
const DEAD_FRACTION: f64 = 1e-4;

/// Writes one constant as `<calib>/<group>/<source>/<ctype>/<run>-end.data` (NDArrIO text);
/// returns the path and its size.
pub fn write_constant(calib_dir: &Path, group: &str, source: &str, ctype: CalibType, run: u32, array: &NdArray, what: &str) -> Result<(PathBuf, u64), SimError> {
    let path = deploy_path(calib_dir, group, source, ctype, run, None);
    let dir = path.parent().expect("a deploy path has a folder");
    std::fs::create_dir_all(dir).map_err(|e| SimError::io(dir, e))?;
    let comment = format!("beamtime sim: {} of the simulated {what}, runs {run} on", ctype.name());
    write_text(&path, array, &[&comment]).map_err(|e| SimError::io(&path, e))?;
    let bytes = std::fs::metadata(&path).map_err(|e| SimError::io(&path, e))?.len();
    Ok((path, bytes))
}

/// Rounds to `digits` significant digits (short in the text files, read back exactly).
fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// A Poisson draw of mean `mean` (0 for a mean ≤ 0).
fn poisson(r: &mut ChaCha8Rng, mean: f64) -> u64 {
    if mean > 0.0 { Poisson::new(mean).map_or(0.0, |d| d.sample(r)) as u64 } else { 0 }
}

/// Unit normals read at a random offset and sign per panel and frame.
struct NoiseTable {
    values: Vec<f32>,
    panel: usize,
}

impl NoiseTable {
    fn new(r: &mut ChaCha8Rng, panel: usize) -> Self {
        NoiseTable { values: (0..4 * panel).map(|_| gauss(r) as f32).collect(), panel }
    }

    /// One panel's noise window and its sign.
    fn window(&self, r: &mut ChaCha8Rng) -> (&[f32], f32) {
        let offset = r.random_range(0..=self.values.len() - self.panel);
        let sign = if r.random() { 1.0 } else { -1.0 };
        (&self.values[offset..offset + self.panel], sign)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PixelKind {
    Good,
    Hot,
    Dead,
}

/// Marks hot and dead pixels among `total`.
fn bad_pixels(r: &mut ChaCha8Rng, total: usize) -> Vec<PixelKind> {
    let mut kinds = vec![PixelKind::Good; total];
    for (kind, fraction) in [(PixelKind::Hot, HOT_FRACTION), (PixelKind::Dead, DEAD_FRACTION)] {
        let mut left = (total as f64 * fraction).round() as usize;
        while left > 0 {
            let i = r.random_range(0..total);
            if kinds[i] == PixelKind::Good {
                kinds[i] = kind;
                left -= 1;
            }
        }
    }
    kinds
}

fn status_of(kinds: &[PixelKind]) -> Vec<u64> {
    kinds
        .iter()
        .map(|k| match k {
            PixelKind::Good => 0,
            PixelKind::Hot => STATUS_HOT,
            PixelKind::Dead => STATUS_DEAD,
        })
        .collect()
}

/// A Gaussian spot of radius 5 px: its pixels (index in the panel) with weights 1 at the peak.
#[derive(Clone, Debug)]
struct Spot {
    pixels: Vec<(u32, f64)>,
    peak_photons_per_i0: f64,
}

fn spot(rows: usize, cols: usize, row: f64, col: f64, sigma: f64, peak: f64) -> Spot {
    let mut pixels = Vec::new();
    for dr in -5i64..=5 {
        for dc in -5i64..=5 {
            let (pr, pc) = (row.round() as i64 + dr, col.round() as i64 + dc);
            let d2 = (pr as f64 - row).powi(2) + (pc as f64 - col).powi(2);
            if d2 <= 25.0 && (0..rows as i64).contains(&pr) && (0..cols as i64).contains(&pc) {
                pixels.push(((pr as usize * cols + pc as usize) as u32, (-0.5 * d2 / (sigma * sigma)).exp()));
            }
        }
    }
    Spot { pixels, peak_photons_per_i0: peak }
}

/// The photons of one frame on the spots' pixels: (pixel, photons), each pixel once, sorted.
fn draw_photons(r: &mut ChaCha8Rng, spots: &[Spot], i0: f64) -> Vec<(usize, u64)> {
    let mut hits: Vec<(usize, u64)> = Vec::new();
    for sp in spots {
        for &(i, wgt) in &sp.pixels {
            let n = poisson(r, i0 * sp.peak_photons_per_i0 * wgt);
            if n > 0 {
                hits.push((i as usize, n));
            }
        }
    }
    hits.sort_unstable();
    let mut merged: Vec<(usize, u64)> = Vec::with_capacity(hits.len());
    for (i, n) in hits {
        match merged.last_mut() {
            Some(last) if last.0 == i => last.1 += n,
            _ => merged.push((i, n)),
        }
    }
    merged
}

fn names_def(id: u32, det: &str, det_type: &str, alg: &str, version: [u8; 3], segment: u32, fields: &[(&str, DataType, u32)]) -> NamesDef {
    NamesDef {
        names_id: id,
        det_name: det.into(),
        det_type: det_type.into(),
        det_id: format!("beamtime-sim-{det}-{segment:02}"),
        alg_name: alg.into(),
        alg_version: (version[0] as u32) << 16 | (version[1] as u32) << 8 | version[2] as u32,
        segment,
        fields: fields.iter().map(|&(n, t, r)| FieldDef::new(n, t, r)).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// epix10ka

pub const EPIX_ROWS: usize = 352;
pub const EPIX_COLS: usize = 384;
pub const EPIX_PANEL: usize = EPIX_ROWS * EPIX_COLS;
pub const ASIC_ROWS: usize = 176;
pub const ASIC_COLS: usize = 192;
pub const EPIX_MAX_SEGMENTS: u32 = 16;
/// The gain modes, in the order of the constants' first axis (spec §3.2).
pub const EPIX_MODES: [&str; 7] = ["FH", "FM", "FL", "AHL_H", "AML_M", "AHL_L", "AML_L"];
/// The ASIC families: (name, asicPixelConfig, trbit).
pub const EPIX_FAMILIES: [(&str, u8, u8); 5] = [("FH", 12, 1), ("FM", 12, 0), ("FL", 8, 0), ("AHL", 0, 1), ("AML", 0, 0)];
/// Rows and columns of the config-8 (FL) pixel map in each ASIC's own corner.
pub const EPIX_MAP_CORNER: usize = 16;
/// Data bit 14: the pixel read in a low range (FL, AHL_L, AML_L).
pub const EPIX_LOW_BIT: u16 = 0x4000;
pub const EPIX_ADU_MASK: u16 = 0x3fff;

/// The epix10ka's physics; written to the truth file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epix10kaParams {
    pub photon_kev: f64,
    /// Per mode (FH, FM, FL, AHL_H, AML_M, AHL_L, AML_L): mean pedestal (ADU), gain (ADU/keV,
    /// psana's defaults), noise rms (ADU).
    pub pedestal_adu: [f64; 7],
    pub pedestal_spread_adu: f64,
    pub gain_adu_per_kev: [f64; 7],
    pub gain_rel_spread: f64,
    pub noise_adu: [f64; 7],
    pub noise_rel_spread: f64,
    /// Charge (keV) above which an auto-ranging pixel switches to low: AHL, AML.
    pub switch_kev: [f64; 2],
    /// Hot pixels read their pedestal plus this, with 5× the noise; dead ones read 0.
    pub hot_excess_adu: f64,
    pub spots_per_segment: u32,
    pub spot_sigma_px: f64,
}

impl Default for Epix10kaParams {
    fn default() -> Self {
        Epix10kaParams {
            photon_kev: 8.0,
            pedestal_adu: [2500.0, 2700.0, 3200.0, 2500.0, 2700.0, 3300.0, 3350.0],
            pedestal_spread_adu: 150.0,
            gain_adu_per_kev: [16.4, 5.466, 0.164, 16.4, 5.466, 0.164, 0.164],
            gain_rel_spread: 0.03,
            noise_adu: [4.0, 3.0, 2.0, 4.0, 3.0, 2.0, 2.0],
            noise_rel_spread: 0.1,
            switch_kev: [400.0, 1600.0],
            hot_excess_adu: 500.0,
            spots_per_segment: 6,
            spot_sigma_px: 1.3,
        }
    }
}

/// One ASIC's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AsicTruth {
    pub segment: u32,
    pub asic: u32,
    /// FH, FM, FL, AHL or AML (its pixels outside the corner map).
    pub family: String,
    pub asic_pixel_config: u8,
    pub trbit: u8,
}

/// One epix10ka frame's truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epix10kaFrameTruth {
    pub index: u64,
    pub timestamp: u64,
    pub i0: f64,
    /// Pixels (all segments, bad ones included) read in each gain mode, in [`EPIX_MODES`] order.
    pub mode_pixels: [u64; 7],
    /// Deposited energy (keV) on good pixels whose noise-free value fits the ADC: what their
    /// calib sums to without noise.
    pub energy_kev: f64,
    /// Good pixels whose noise-free value left the ADC range (a saturated fixed-high pixel).
    pub clipped_pixels: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epix10kaTruth {
    pub det_name: String,
    pub stream: u32,
    pub segments: u32,
    pub every: u64,
    pub calib_dir: PathBuf,
    /// The calib-dir group its constants are in.
    pub calib_group: String,
    pub params: Epix10kaParams,
    pub asics: Vec<AsicTruth>,
    pub map_corner: u32,
    pub hot_pixels: u64,
    pub dead_pixels: u64,
    pub frames: Vec<Epix10kaFrameTruth>,
}

/// The detector name psana's files use for `segments` epix10ka panels.
pub fn epix10ka_name(segments: u32) -> &'static str {
    match segments {
        1 => "epix10ka",
        2..=4 => "epixquad",
        _ => "epix10k2M",
    }
}

/// The calib-dir group for `segments` panels (spec §2.2's project choice).
pub fn epix10ka_group(segments: u32) -> &'static str {
    match segments {
        1 => "Epix10ka::CalibV1",
        2..=4 => "Epix10kaQuad::CalibV1",
        _ => "Epix10ka2M::CalibV1",
    }
}

/// The panel position of pixel (row, col) of ASIC `asic` (spec §3.2: ASICs 2 | 1 rotated by
/// 180° on top, 3 | 0 as they are below).
pub fn asic_to_panel(asic: usize, row: usize, col: usize) -> (usize, usize) {
    match asic {
        0 => (ASIC_ROWS + row, ASIC_COLS + col),
        1 => (ASIC_ROWS - 1 - row, 2 * ASIC_COLS - 1 - col),
        2 => (ASIC_ROWS - 1 - row, ASIC_COLS - 1 - col),
        3 => (ASIC_ROWS + row, col),
        _ => unreachable!("4 ASICs"),
    }
}

/// The gain mode a control byte selects (spec §3.2), `None` for none.
pub fn epix10ka_mode(c: u8) -> Option<usize> {
    [(28, 28), (28, 12), (12, 8), (60, 16), (60, 0), (60, 48), (60, 32)].iter().position(|&(m, v)| c & m == v)
}

/// The ASIC family index of ASIC `asic` of `segment`.
fn family_of(segment: u32, asic: u32) -> usize {
    ((4 * segment + asic) % 5) as usize
}

/// One segment's `asicPixelConfig` (4, 176, 192) and `trbit` (4,).
pub fn epix10ka_config(segment: u32) -> (Vec<u8>, [u8; 4]) {
    let mut pca = vec![0u8; 4 * ASIC_ROWS * ASIC_COLS];
    let mut trbit = [0u8; 4];
    for a in 0..4 {
        let (_, config, t) = EPIX_FAMILIES[family_of(segment, a as u32)];
        trbit[a] = t;
        for r in 0..ASIC_ROWS {
            for c in 0..ASIC_COLS {
                let corner = r < EPIX_MAP_CORNER && c < EPIX_MAP_CORNER;
                pca[(a * ASIC_ROWS + r) * ASIC_COLS + c] = if corner { 8 } else { config };
            }
        }
    }
    (pca, trbit)
}

/// Per panel pixel: the mode it reads in the dark and when switched (equal for fixed modes).
#[derive(Clone, Copy)]
struct PixelModes {
    dark: u8,
    low: u8,
}

struct EpixSegment {
    raw: NamesDef,
    config: NamesDef,
    pca: Vec<u8>,
    trbit: [u8; 4],
    modes: Vec<PixelModes>,
    /// Per mode, per pixel: pedestal and gain; per pixel: the noise factor.
    ped: Vec<Vec<f32>>,
    gain: Vec<Vec<f32>>,
    rms_factor: Vec<f32>,
    /// The dark frame's pedestal, noise rms and high bits per pixel.
    dark_ped: Vec<f32>,
    dark_rms: Vec<f32>,
    dark_bits: Vec<u16>,
    kinds: Vec<PixelKind>,
    spots: Vec<Spot>,
    aux: Vec<u16>,
}

pub struct Epix10ka {
    pub det_name: &'static str,
    pub params: Epix10kaParams,
    segments: Vec<EpixSegment>,
    noise: NoiseTable,
    rng: ChaCha8Rng,
    frame: Vec<u16>,
    pub frames: Vec<Epix10kaFrameTruth>,
}

impl Epix10ka {
    pub fn new(node: u32, seed: u64, nseg: u32) -> Self {
        let params = Epix10kaParams::default();
        let p = &params;
        let det = epix10ka_name(nseg);
        let mut r = rng(seed, rng_stream::EPIX10KA);
        let mut id = 0u8;
        let mut segments = Vec::new();
        for s in 0..nseg {
            let raw = names_def(names_id(node, id), det, "epix10ka", "raw", [2, 0, 1], s, &[("raw", U16, 2), ("aux", U16, 2)]);
            let config = names_def(names_id(node, id + 1), det, "epix10ka", "config", [2, 0, 0], s, &[("asicPixelConfig", U8, 3), ("trbit", U8, 1)]);
            id += 2;
            let (pca, trbit) = epix10ka_config(s);
            // The control bits of each panel pixel, as psana assembles them.
            let mut modes = vec![PixelModes { dark: 0, low: 0 }; EPIX_PANEL];
            for a in 0..4 {
                for ar in 0..ASIC_ROWS {
                    for ac in 0..ASIC_COLS {
                        let (pr, pc) = asic_to_panel(a, ar, ac);
                        let c = (pca[(a * ASIC_ROWS + ar) * ASIC_COLS + ac] & 12) | (trbit[a] << 4);
                        let dark = epix10ka_mode(c).expect("configs 0, 8, 12 have a mode") as u8;
                        let low = match dark {
                            3 => 5,
                            4 => 6,
                            m => m,
                        };
                        modes[pr * EPIX_COLS + pc] = PixelModes { dark, low };
                    }
                }
            }
            let ped: Vec<Vec<f32>> = (0..7)
                .map(|m| (0..EPIX_PANEL).map(|_| (((p.pedestal_adu[m] + p.pedestal_spread_adu * gauss(&mut r)) * 8.0).round() / 8.0) as f32).collect())
                .collect();
            let gain: Vec<Vec<f32>> = (0..7)
                .map(|m| (0..EPIX_PANEL).map(|_| significant(p.gain_adu_per_kev[m] * (1.0 + p.gain_rel_spread * gauss(&mut r)), 4) as f32).collect())
                .collect();
            let rms_factor: Vec<f32> = (0..EPIX_PANEL).map(|_| (1.0 + p.noise_rel_spread * gauss(&mut r)).max(0.5) as f32).collect();
            let rms_of = |m: usize, i: usize| ((p.noise_adu[m] * rms_factor[i] as f64 * 100.0).round() / 100.0) as f32;
            let dark_ped = (0..EPIX_PANEL).map(|i| ped[modes[i].dark as usize][i]).collect();
            let dark_rms = (0..EPIX_PANEL).map(|i| rms_of(modes[i].dark as usize, i)).collect();
            let dark_bits = modes.iter().map(|m| if m.dark == 2 { EPIX_LOW_BIT } else { 0 }).collect();
            let kinds = bad_pixels(&mut r, EPIX_PANEL);
            // One bright spot in each ASIC (every auto family switches), then dimmer ones.
            let mut spots = Vec::new();
            for k in 0..p.spots_per_segment as usize {
                let (row, col) = if k < 4 {
                    let (r0, c0) = ((k / 2) * ASIC_ROWS, (k % 2) * ASIC_COLS);
                    (r0 as f64 + 20.0 + r.random::<f64>() * (ASIC_ROWS - 40) as f64, c0 as f64 + 20.0 + r.random::<f64>() * (ASIC_COLS - 40) as f64)
                } else {
                    (10.0 + r.random::<f64>() * (EPIX_ROWS - 20) as f64, 10.0 + r.random::<f64>() * (EPIX_COLS - 20) as f64)
                };
                let peak = if k < 4 { 400.0 + 600.0 * r.random::<f64>() } else { 20.0 + 200.0 * r.random::<f64>() };
                spots.push(spot(EPIX_ROWS, EPIX_COLS, row, col, p.spot_sigma_px, peak.round()));
            }
            // Four calibration rows, as the real aux field: dark, fixed-low-like values.
            let aux = (0..4 * EPIX_COLS).map(|_| EPIX_LOW_BIT | (3200.0 + 150.0 * gauss(&mut r)).round() as u16).collect();
            segments.push(EpixSegment { raw, config, pca, trbit, modes, ped, gain, rms_factor, dark_ped, dark_rms, dark_bits, kinds, spots, aux });
        }
        let noise = NoiseTable::new(&mut r, EPIX_PANEL);
        Epix10ka { det_name: det, params, segments, noise, rng: r, frame: vec![0; EPIX_PANEL], frames: Vec::new() }
    }

    pub fn names(&self) -> Vec<(&NamesDef, bool)> {
        self.segments.iter().map(|s| (&s.raw, true)).chain(self.segments.iter().map(|s| (&s.config, false))).collect()
    }

    pub fn write_configure(&self, w: &mut DgramWriter) {
        for s in &self.segments {
            w.shapes_data(
                &s.config,
                &[
                    FieldValue::Array(&[4, ASIC_ROWS as u32, ASIC_COLS as u32], ArrayData::U8(&s.pca)),
                    FieldValue::Array(&[4], ArrayData::U8(&s.trbit)),
                ],
            );
        }
    }

    pub fn write_l1(&mut self, w: &mut DgramWriter, shot: &Shot) {
        let p = &self.params;
        let i0 = shot.ipm2.sum.max(0.0);
        let mut truth = Epix10kaFrameTruth { index: shot.index, timestamp: shot.timestamp, i0, mode_pixels: [0; 7], energy_kev: 0.0, clipped_pixels: 0 };
        for s in &self.segments {
            let (noise, sign) = self.noise.window(&mut self.rng);
            for (i, v) in self.frame.iter_mut().enumerate() {
                *v = s.dark_bits[i] | (s.dark_ped[i] + s.dark_rms[i] * (sign * noise[i]) + 0.5).min(EPIX_ADU_MASK as f32) as u16;
            }
            for m in &s.modes {
                truth.mode_pixels[m.dark as usize] += 1;
            }
            let mut good_photons = 0u64;
            // Bad pixels carry no signal.
            for (i, n) in draw_photons(&mut self.rng, &s.spots, i0) {
                if s.kinds[i] != PixelKind::Good {
                    continue;
                }
                let e = n as f64 * p.photon_kev;
                let pm = s.modes[i];
                let mode = match pm.dark {
                    3 if e > p.switch_kev[0] => pm.low,
                    4 if e > p.switch_kev[1] => pm.low,
                    m => m,
                } as usize;
                truth.mode_pixels[pm.dark as usize] -= 1;
                truth.mode_pixels[mode] += 1;
                let rms = (p.noise_adu[mode] * s.rms_factor[i] as f64 * 100.0).round() / 100.0;
                let noise_free = s.ped[mode][i] as f64 + s.gain[mode][i] as f64 * e;
                let adu = (noise_free + rms * (sign * noise[i]) as f64).round().clamp(0.0, EPIX_ADU_MASK as f64) as u16;
                let bit = if matches!(mode, 2 | 5 | 6) { EPIX_LOW_BIT } else { 0 };
                self.frame[i] = bit | adu;
                if (0.0..=EPIX_ADU_MASK as f64).contains(&noise_free) {
                    good_photons += n;
                } else {
                    truth.clipped_pixels += 1;
                }
            }
            truth.energy_kev += good_photons as f64 * p.photon_kev;
            for (i, k) in s.kinds.iter().enumerate() {
                match k {
                    PixelKind::Good => {}
                    PixelKind::Dead => self.frame[i] = 0,
                    PixelKind::Hot => {
                        let v = s.dark_ped[i] as f64 + p.hot_excess_adu + 5.0 * s.dark_rms[i] as f64 * (sign * noise[i]) as f64;
                        self.frame[i] = s.dark_bits[i] | v.round().clamp(0.0, EPIX_ADU_MASK as f64) as u16;
                    }
                }
            }
            w.shapes_data(
                &s.raw,
                &[
                    FieldValue::Array(&[EPIX_ROWS as u32, EPIX_COLS as u32], ArrayData::U16(&self.frame)),
                    FieldValue::Array(&[4, EPIX_COLS as u32], ArrayData::U16(&s.aux)),
                ],
            );
        }
        self.frames.push(truth);
    }

    /// The constants in psana's shapes: `(7, NSEG, 352, 384)`.
    pub fn constant(&self, ctype: CalibType) -> NdArray {
        let nseg = self.segments.len();
        let shape = vec![7, nseg, EPIX_ROWS, EPIX_COLS];
        let p = &self.params;
        let data = match ctype {
            CalibType::Pedestals => Elements::F32((0..7).flat_map(|m| self.segments.iter().flat_map(move |s| s.ped[m].iter().copied())).collect()),
            CalibType::PixelGain => Elements::F32((0..7).flat_map(|m| self.segments.iter().flat_map(move |s| s.gain[m].iter().copied())).collect()),
            CalibType::PixelRms => Elements::F32(
                (0..7)
                    .flat_map(|m| self.segments.iter().flat_map(move |s| s.rms_factor.iter().map(move |f| ((p.noise_adu[m] * *f as f64 * 100.0).round() / 100.0) as f32)))
                    .collect(),
            ),
            CalibType::PixelStatus => {
                let one: Vec<u64> = self.segments.iter().flat_map(|s| status_of(&s.kinds)).collect();
                Elements::U64([one.as_slice(); 7].concat())
            }
            other => unreachable!("beamtime sim writes no epix10ka {other:?}"),
        };
        NdArray::new(shape, data)
    }

    pub fn write_constants(&self, calib_dir: &Path, run: u32) -> Result<(Vec<PathBuf>, u64), SimError> {
        let what = format!("{}-segment epix10ka", self.segments.len());
        let group = epix10ka_group(self.segments.len() as u32);
        let mut files = Vec::new();
        let mut bytes = 0;
        for ctype in [CalibType::Pedestals, CalibType::PixelGain, CalibType::PixelStatus, CalibType::PixelRms] {
            let (f, b) = write_constant(calib_dir, group, self.det_name, ctype, run, &self.constant(ctype), &what)?;
            files.push(f);
            bytes += b;
        }
        Ok((files, bytes))
    }

    pub fn truth(&self, stream: u32, every: u64, calib_dir: PathBuf) -> Epix10kaTruth {
        let count = |k: PixelKind| self.segments.iter().map(|s| s.kinds.iter().filter(|&&x| x == k).count() as u64).sum();
        Epix10kaTruth {
            det_name: self.det_name.into(),
            stream,
            segments: self.segments.len() as u32,
            every,
            calib_dir,
            calib_group: epix10ka_group(self.segments.len() as u32).into(),
            params: self.params.clone(),
            asics: (0..self.segments.len() as u32)
                .flat_map(|s| {
                    (0..4).map(move |a| {
                        let (family, config, trbit) = EPIX_FAMILIES[family_of(s, a)];
                        AsicTruth { segment: s, asic: a, family: family.into(), asic_pixel_config: config, trbit }
                    })
                })
                .collect(),
            map_corner: EPIX_MAP_CORNER as u32,
            hot_pixels: count(PixelKind::Hot),
            dead_pixels: count(PixelKind::Dead),
            frames: self.frames.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// epixM320

pub const EPIXM_DET: &str = "epixm";
pub const EPIXM_GROUP: &str = "EpixM320::CalibV1";
pub const EPIXM_ASICS: usize = 4;
pub const EPIXM_ROWS: usize = 192;
pub const EPIXM_COLS: usize = 384;
pub const EPIXM_ASIC: usize = EPIXM_ROWS * EPIXM_COLS;
pub const EPIXM_GAIN_BIT: u16 = 0x8000;
pub const EPIXM_ADU_MASK: u16 = 0x7fff;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epixm320Params {
    pub photon_kev: f64,
    /// Pedestal sets 0 (high range, bit 15 clear), 1 (switched to low, bit 15 set), 2 (fixed
    /// low, not read by the data): mean and spread, ADU.
    pub pedestal_adu: [f64; 3],
    pub pedestal_spread_adu: f64,
    /// Gains of the high and low ranges (ADU/keV; psana's calib has none, the output is ADU).
    pub gain_adu_per_kev: [f64; 2],
    pub noise_adu: [f64; 2],
    pub switch_kev: f64,
    pub hot_excess_adu: f64,
    pub spots_per_asic: u32,
}

impl Default for Epixm320Params {
    fn default() -> Self {
        Epixm320Params {
            photon_kev: 2.0,
            pedestal_adu: [6000.0, 1500.0, 1550.0],
            pedestal_spread_adu: 200.0,
            gain_adu_per_kev: [30.0, 1.0],
            noise_adu: [5.0, 2.0],
            switch_kev: 400.0,
            hot_excess_adu: 800.0,
            spots_per_asic: 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epixm320FrameTruth {
    pub index: u64,
    pub timestamp: u64,
    pub i0: f64,
    /// Pixels read with bit 15 set (switched to the low range).
    pub switched_pixels: u64,
    /// Σ over good pixels of the noise-free `value − pedestal` (ADU) of their range: what their
    /// calib sums to without noise and rounding.
    pub signal_adu: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epixm320Truth {
    pub det_name: String,
    pub stream: u32,
    pub every: u64,
    pub calib_dir: PathBuf,
    pub params: Epixm320Params,
    pub hot_pixels: u64,
    pub dead_pixels: u64,
    pub frames: Vec<Epixm320FrameTruth>,
}

pub struct Epixm320 {
    raw: NamesDef,
    pub params: Epixm320Params,
    /// Pedestal sets 0–2, each (4, 192, 384).
    ped: [Vec<f32>; 3],
    rms: [Vec<f32>; 2],
    kinds: Vec<PixelKind>,
    spots: Vec<Spot>,
    noise: NoiseTable,
    rng: ChaCha8Rng,
    frame: Vec<u16>,
    pub frames: Vec<Epixm320FrameTruth>,
}

impl Epixm320 {
    pub fn new(node: u32, seed: u64) -> Self {
        let params = Epixm320Params::default();
        let p = &params;
        let mut r = rng(seed, rng_stream::EPIXM320);
        let total = EPIXM_ASICS * EPIXM_ASIC;
        let ped = std::array::from_fn(|k| (0..total).map(|_| (((p.pedestal_adu[k] + p.pedestal_spread_adu * gauss(&mut r)) * 8.0).round() / 8.0) as f32).collect());
        let rms = std::array::from_fn(|k| (0..total).map(|_| ((p.noise_adu[k] * (1.0 + 0.1 * gauss(&mut r)).max(0.5) * 100.0).round() / 100.0) as f32).collect());
        let kinds = bad_pixels(&mut r, total);
        // Spots on the (768, 384) stack of the 4 ASICs, whole inside one ASIC.
        let mut spots = Vec::new();
        for a in 0..EPIXM_ASICS {
            for _ in 0..p.spots_per_asic {
                let row = (a * EPIXM_ROWS) as f64 + 10.0 + r.random::<f64>() * (EPIXM_ROWS - 20) as f64;
                let col = 10.0 + r.random::<f64>() * (EPIXM_COLS - 20) as f64;
                let peak = (100.0 + 400.0 * r.random::<f64>()).round();
                spots.push(spot(EPIXM_ASICS * EPIXM_ROWS, EPIXM_COLS, row, col, 1.5, peak));
            }
        }
        Epixm320 {
            raw: names_def(names_id(node, 0), EPIXM_DET, "epixm320", "raw", [0, 1, 0], 0, &[("raw", U16, 3)]),
            params,
            ped,
            rms,
            kinds,
            spots,
            noise: NoiseTable::new(&mut r, total),
            rng: r,
            frame: vec![0; total],
            frames: Vec::new(),
        }
    }

    pub fn names(&self) -> Vec<(&NamesDef, bool)> {
        vec![(&self.raw, true)]
    }

    pub fn write_l1(&mut self, w: &mut DgramWriter, shot: &Shot) {
        let p = &self.params;
        let i0 = shot.ipm2.sum.max(0.0);
        let (noise, sign) = self.noise.window(&mut self.rng);
        for (i, v) in self.frame.iter_mut().enumerate() {
            *v = (self.ped[0][i] + self.rms[0][i] * (sign * noise[i]) + 0.5).min(EPIXM_ADU_MASK as f32) as u16;
        }
        let mut truth = Epixm320FrameTruth { index: shot.index, timestamp: shot.timestamp, i0, switched_pixels: 0, signal_adu: 0.0 };
        for (i, n) in draw_photons(&mut self.rng, &self.spots, i0) {
            if self.kinds[i] != PixelKind::Good {
                continue;
            }
            let e = n as f64 * p.photon_kev;
            let k = usize::from(e > p.switch_kev);
            let signal = p.gain_adu_per_kev[k] * e;
            let v = (self.ped[k][i] as f64 + signal + self.rms[k][i] as f64 * (sign * noise[i]) as f64).round().clamp(0.0, EPIXM_ADU_MASK as f64) as u16;
            self.frame[i] = if k == 1 { EPIXM_GAIN_BIT | v } else { v };
            truth.signal_adu += signal;
        }
        for (i, k) in self.kinds.iter().enumerate() {
            match k {
                PixelKind::Good => {}
                PixelKind::Dead => self.frame[i] = 0,
                PixelKind::Hot => {
                    let v = self.ped[0][i] as f64 + p.hot_excess_adu + 5.0 * self.rms[0][i] as f64 * (sign * noise[i]) as f64;
                    self.frame[i] = v.round().clamp(0.0, EPIXM_ADU_MASK as f64) as u16;
                }
            }
        }
        truth.switched_pixels = self.frame.iter().filter(|&&v| v & EPIXM_GAIN_BIT != 0).count() as u64;
        let dims = [EPIXM_ASICS as u32, EPIXM_ROWS as u32, EPIXM_COLS as u32];
        w.shapes_data(&self.raw, &[FieldValue::Array(&dims, ArrayData::U16(&self.frame))]);
        self.frames.push(truth);
    }

    /// pedestals `(3, 4, 192, 384)`, pixel_status `(4, 192, 384)`.
    pub fn constant(&self, ctype: CalibType) -> NdArray {
        match ctype {
            CalibType::Pedestals => NdArray::new(vec![3, EPIXM_ASICS, EPIXM_ROWS, EPIXM_COLS], Elements::F32(self.ped.concat())),
            CalibType::PixelStatus => NdArray::new(vec![EPIXM_ASICS, EPIXM_ROWS, EPIXM_COLS], Elements::U64(status_of(&self.kinds))),
            other => unreachable!("beamtime sim writes no epixM320 {other:?}"),
        }
    }

    pub fn write_constants(&self, calib_dir: &Path, run: u32) -> Result<(Vec<PathBuf>, u64), SimError> {
        let mut files = Vec::new();
        let mut bytes = 0;
        for ctype in [CalibType::Pedestals, CalibType::PixelStatus] {
            let (f, b) = write_constant(calib_dir, EPIXM_GROUP, EPIXM_DET, ctype, run, &self.constant(ctype), "epixM320")?;
            files.push(f);
            bytes += b;
        }
        Ok((files, bytes))
    }

    pub fn truth(&self, stream: u32, every: u64, calib_dir: PathBuf) -> Epixm320Truth {
        let count = |k: PixelKind| self.kinds.iter().filter(|&&x| x == k).count() as u64;
        Epixm320Truth {
            det_name: EPIXM_DET.into(),
            stream,
            every,
            calib_dir,
            params: self.params.clone(),
            hot_pixels: count(PixelKind::Hot),
            dead_pixels: count(PixelKind::Dead),
            frames: self.frames.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Archon

pub const ARCHON_DET: &str = "archon";
pub const ARCHON_GROUP: &str = "Archon::CalibV1";
pub const ARCHON_BANKS: usize = 16;
pub const ARCHON_BANK_COLS: usize = 300;
pub const ARCHON_REAL_COLS: usize = 264;
pub const ARCHON_COLS: usize = ARCHON_BANKS * ARCHON_BANK_COLS;
pub const ARCHON_MAX_ROWS: u32 = 512;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchonParams {
    pub pedestal_adu: f64,
    pub pedestal_spread_adu: f64,
    pub noise_adu: f64,
    /// rms of the per-frame offset of each bank of each row, ADU.
    pub common_offset_rms_adu: f64,
    /// Emission lines: centre (image column, fake columns left out), rms width (columns) and
    /// peak ADU per unit I0 (per row).
    pub lines: Vec<[f64; 3]>,
}

impl Default for ArchonParams {
    fn default() -> Self {
        ArchonParams {
            pedestal_adu: 2000.0,
            pedestal_spread_adu: 30.0,
            noise_adu: 4.0,
            common_offset_rms_adu: 25.0,
            lines: vec![[900.0, 6.0, 120.0], [2100.0, 10.0, 300.0], [3500.0, 4.0, 80.0]],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchonFrameTruth {
    pub index: u64,
    pub timestamp: u64,
    pub i0: f64,
    /// The common offset (ADU) of each bank of each row, row-major (rows × 16).
    pub offsets_adu: Vec<f64>,
    /// Σ of the noise-free signal over the real pixels, ADU (× gainfact 3.65 = eV).
    pub signal_adu: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchonTruth {
    pub det_name: String,
    pub stream: u32,
    pub rows: u32,
    pub every: u64,
    pub calib_dir: PathBuf,
    pub params: ArchonParams,
    pub frames: Vec<ArchonFrameTruth>,
}

pub struct Archon {
    raw: NamesDef,
    pub rows: usize,
    pub params: ArchonParams,
    ped: Vec<f32>,
    /// The lines' profile per raw column (0 on fake columns), per unit I0.
    profile: Vec<f64>,
    noise: NoiseTable,
    rng: ChaCha8Rng,
    frame: Vec<u16>,
    pub frames: Vec<ArchonFrameTruth>,
}

impl Archon {
    pub fn new(node: u32, seed: u64, rows: u32) -> Self {
        let params = ArchonParams::default();
        let rows = rows as usize;
        let mut r = rng(seed, rng_stream::ARCHON);
        let ped = (0..rows * ARCHON_COLS).map(|_| (((params.pedestal_adu + params.pedestal_spread_adu * gauss(&mut r)) * 8.0).round() / 8.0) as f32).collect();
        let profile = (0..ARCHON_COLS)
            .map(|c| {
                let (bank, k) = (c / ARCHON_BANK_COLS, c % ARCHON_BANK_COLS);
                if k >= ARCHON_REAL_COLS {
                    return 0.0;
                }
                let x = (bank * ARCHON_REAL_COLS + k) as f64;
                params.lines.iter().map(|&[at, width, peak]| peak * (-0.5 * ((x - at) / width).powi(2)).exp()).sum()
            })
            .collect();
        Archon {
            raw: names_def(names_id(node, 0), ARCHON_DET, "archon", "raw", [1, 0, 0], 0, &[("value", U16, 2)]),
            rows,
            params,
            ped,
            profile,
            noise: NoiseTable::new(&mut r, rows * ARCHON_COLS),
            rng: r,
            frame: vec![0; rows * ARCHON_COLS],
            frames: Vec::new(),
        }
    }

    pub fn names(&self) -> Vec<(&NamesDef, bool)> {
        vec![(&self.raw, true)]
    }

    pub fn write_l1(&mut self, w: &mut DgramWriter, shot: &Shot) {
        let p = &self.params;
        let i0 = shot.ipm2.sum.max(0.0);
        let offsets: Vec<f64> = (0..self.rows * ARCHON_BANKS).map(|_| (p.common_offset_rms_adu * gauss(&mut self.rng) * 8.0).round() / 8.0).collect();
        let (noise, sign) = self.noise.window(&mut self.rng);
        let mut signal_sum = 0.0;
        for (i, v) in self.frame.iter_mut().enumerate() {
            let (row, col) = (i / ARCHON_COLS, i % ARCHON_COLS);
            let signal = i0 * self.profile[col];
            signal_sum += signal;
            let x = self.ped[i] as f64 + offsets[row * ARCHON_BANKS + col / ARCHON_BANK_COLS] + signal + p.noise_adu * (sign * noise[i]) as f64;
            *v = x.round().clamp(0.0, u16::MAX as f64) as u16;
        }
        let dims = [self.rows as u32, ARCHON_COLS as u32];
        w.shapes_data(&self.raw, &[FieldValue::Array(&dims, ArrayData::U16(&self.frame))]);
        self.frames.push(ArchonFrameTruth { index: shot.index, timestamp: shot.timestamp, i0, offsets_adu: offsets, signal_adu: signal_sum });
    }

    /// pedestals `(rows, 4800)`, the raw array's shape.
    pub fn constant(&self) -> NdArray {
        NdArray::new(vec![self.rows, ARCHON_COLS], Elements::F32(self.ped.clone()))
    }

    pub fn write_constants(&self, calib_dir: &Path, run: u32) -> Result<(Vec<PathBuf>, u64), SimError> {
        let (f, b) = write_constant(calib_dir, ARCHON_GROUP, ARCHON_DET, CalibType::Pedestals, run, &self.constant(), &format!("{}-row Archon", self.rows))?;
        Ok((vec![f], b))
    }

    pub fn truth(&self, stream: u32, every: u64, calib_dir: PathBuf) -> ArchonTruth {
        ArchonTruth {
            det_name: ARCHON_DET.into(),
            stream,
            rows: self.rows as u32,
            every,
            calib_dir,
            params: self.params.clone(),
            frames: self.frames.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// One of these detectors, on its node.
pub enum AreaDetector {
    Epix10ka(Epix10ka),
    Epixm320(Epixm320),
    Archon(Archon),
}

impl AreaDetector {
    pub fn names(&self) -> Vec<(&NamesDef, bool)> {
        match self {
            AreaDetector::Epix10ka(d) => d.names(),
            AreaDetector::Epixm320(d) => d.names(),
            AreaDetector::Archon(d) => d.names(),
        }
    }

    pub fn write_configure(&self, w: &mut DgramWriter) {
        if let AreaDetector::Epix10ka(d) = self {
            d.write_configure(w);
        }
    }

    pub fn write_l1(&mut self, w: &mut DgramWriter, shot: &Shot) {
        match self {
            AreaDetector::Epix10ka(d) => d.write_l1(w, shot),
            AreaDetector::Epixm320(d) => d.write_l1(w, shot),
            AreaDetector::Archon(d) => d.write_l1(w, shot),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            AreaDetector::Epix10ka(d) => d.det_name,
            AreaDetector::Epixm320(_) => EPIXM_DET,
            AreaDetector::Archon(_) => ARCHON_DET,
        }
    }

    /// Writes its constants for runs `run` on; says where and how long it took.
    pub fn deploy(&self, calib_dir: &Path, run: u32) -> Result<(), SimError> {
        let started = std::time::Instant::now();
        let (files, bytes) = match self {
            AreaDetector::Epix10ka(d) => d.write_constants(calib_dir, run)?,
            AreaDetector::Epixm320(d) => d.write_constants(calib_dir, run)?,
            AreaDetector::Archon(d) => d.write_constants(calib_dir, run)?,
        };
        let folder = files[0].parent().and_then(Path::parent).unwrap_or(calib_dir);
        eprintln!("  {} constants: {} files, {:.1} MB in {:.2} s under {}", self.name(), files.len(), bytes as f64 / 1e6, started.elapsed().as_secs_f64(), folder.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asics_land_in_psanas_quadrants() {
        assert_eq!(asic_to_panel(0, 0, 0), (176, 192));
        assert_eq!(asic_to_panel(3, 0, 0), (176, 0));
        assert_eq!(asic_to_panel(2, 0, 0), (175, 191));
        assert_eq!(asic_to_panel(1, 0, 0), (175, 383));
        assert_eq!(asic_to_panel(1, 175, 191), (0, 192));
        assert_eq!(asic_to_panel(2, 175, 191), (0, 0));
    }

    #[test]
    fn configs_give_the_intended_modes() {
        let m = |config: u8, trbit: u8, bit14: bool| epix10ka_mode(config | trbit << 4 | if bit14 { 32 } else { 0 }).map(|i| EPIX_MODES[i]);
        assert_eq!(m(12, 1, false), Some("FH"));
        assert_eq!(m(12, 0, true), Some("FM"));
        assert_eq!(m(8, 1, true), Some("FL"));
        assert_eq!(m(0, 1, false), Some("AHL_H"));
        assert_eq!(m(0, 1, true), Some("AHL_L"));
        assert_eq!(m(0, 0, false), Some("AML_M"));
        assert_eq!(m(0, 0, true), Some("AML_L"));
        assert_eq!(m(4, 0, false), None);
    }
}
