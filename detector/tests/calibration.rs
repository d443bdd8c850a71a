//! Calibrated values against an independent oracle: for each formula, a plain scalar loop written
//! here from the spec (`shared/spec/calibration.md` §3.1, §3.2, §3.6, §4) — never the crate's
//! code — on constants and raw frames generated here with every gain range, bad switch, status
//! and mask case. Values are compared bit for bit (±0 included).

mod common;
use common::oracle_common_mode;
use std::path::PathBuf;

use detector::calib::epix10ka::{gain_mode_index, Epix10kaConfig};
use detector::constants::{CalibType, DetectorConstants, DetectorKind, DetectorSpec, Elements, NdArray};
use detector::{CalibError, Calibrator, Fallback};

/// splitmix64: reproducible values without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn f32s(shape: &[usize], mut f: impl FnMut(usize) -> f32) -> NdArray {
    let n = shape.iter().product();
    NdArray::new(shape.to_vec(), Elements::F32((0..n).map(&mut f).collect()))
}

fn u64s(shape: &[usize], mut f: impl FnMut(usize) -> u64) -> NdArray {
    let n = shape.iter().product();
    NdArray::new(shape.to_vec(), Elements::U64((0..n).map(&mut f).collect()))
}

fn origin(name: &str) -> PathBuf {
    PathBuf::from(format!("generated/{name}"))
}

fn assert_bits_equal(ours: &[f32], oracle: &[f32], what: &str) {
    assert_eq!(ours.len(), oracle.len());
    let bad: Vec<usize> = (0..ours.len()).filter(|&i| ours[i].to_bits() != oracle[i].to_bits()).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} values differ; first at {}: ours {} oracle {}",
        bad.len(),
        ours.len(),
        bad[0],
        ours[bad[0]],
        oracle[bad[0]]
    );
}

// ---------------------------------------------------------------- Jungfrau (§3.1, §4)

const JF_PANEL: usize = 512 * 1024;

struct JungfrauCase {
    nseg: usize,
    peds: Vec<f32>,
    gain: Vec<f32>,
    offset: Vec<f32>,
    status: Vec<u64>,
    extra: Vec<u64>,
}

fn jungfrau_case(nseg: usize, seed: u64) -> JungfrauCase {
    let mut rng = Rng(seed);
    let n = 3 * nseg * JF_PANEL;
    let peds = (0..n).map(|i| [3000.0, 14000.0, 15000.0][i / (nseg * JF_PANEL)] + rng.uniform(-800.0, 800.0)).collect();
    // Gains in ADU/keV per range, some exactly 0 (factor 0, not inf).
    let gain = (0..n)
        .map(|i| if rng.below(5000) == 0 { 0.0 } else { [40.0, 1.5, 0.1][i / (nseg * JF_PANEL)] * rng.uniform(0.8, 1.2) })
        .collect();
    let offset = (0..n).map(|_| rng.uniform(-20.0, 20.0)).collect();
    // Status bits in every range, including bit 63; status_extra on other pixels.
    let status = (0..n).map(|_| if rng.below(300) == 0 { 1u64 << rng.below(64) } else { 0 }).collect();
    let extra = (0..n).map(|_| if rng.below(700) == 0 { 4 } else { 0 }).collect();
    JungfrauCase { nseg, peds, gain, offset, status, extra }
}

/// Raw frames with every gain code: mostly gain 0, bright pixels in 1 and 2, bad switches.
fn jungfrau_raw(nseg_daq: usize, seed: u64) -> Vec<u16> {
    let mut rng = Rng(seed);
    (0..nseg_daq * JF_PANEL)
        .map(|i| {
            // Dark regions (every chunk gain 0) alternate with regions of bright pixels.
            let dark = (i / 8192) % 2 == 0;
            let code = match if dark { 99 } else { rng.below(100) } {
                0..=2 => 1u16,
                3..=5 => 3,
                6 => 2,
                _ => 0,
            };
            (code << 14) | rng.below(1 << 14) as u16
        })
        .collect()
}

/// The spec's formula, pixel by pixel.
fn jungfrau_oracle(case: &JungfrauCase, segments: &[u32], raw: &[u16], with: (bool, bool, bool)) -> Vec<f32> {
    let (with_gain, with_offset, with_status) = with;
    let nseg = case.nseg;
    let at = |g: usize, s: usize, p: usize| (g * nseg + s) * JF_PANEL + p;
    let mut out = vec![0f32; raw.len()];
    for (k, &s) in segments.iter().enumerate() {
        let s = s as usize;
        for p in 0..JF_PANEL {
            let word = raw[k * JF_PANEL + p];
            let code = word >> 14;
            let adu = (word & 0x3fff) as f32;
            let mut good = true;
            if with_status {
                for g in 0..3 {
                    good &= case.status[at(g, s, p)] == 0 && case.extra[at(g, s, p)] == 0;
                }
            }
            let g = match code {
                0 => 0,
                1 => 1,
                3 => 2,
                _ => {
                    out[k * JF_PANEL + p] = 0.0;
                    continue;
                }
            };
            let off = if with_offset { case.offset[at(g, s, p)] } else { 0.0 };
            let po: f32 = case.peds[at(g, s, p)] + off;
            let gain = if with_gain { case.gain[at(g, s, p)] } else { 1.0 };
            let inv: f32 = if gain != 0.0 { 1.0 / gain } else { 0.0 };
            let gm: f32 = inv * if good { 1.0 } else { 0.0 };
            out[k * JF_PANEL + p] = (adu - po) * gm;
        }
    }
    out
}

fn jungfrau_constants(case: &JungfrauCase, with: (bool, bool, bool)) -> DetectorConstants {
    let spec = DetectorSpec::new("jungfrau", DetectorKind::Jungfrau).unwrap();
    let shape = [3, case.nseg, 512, 1024];
    let mut set = DetectorConstants::new(spec);
    set.insert(CalibType::Pedestals, f32s(&shape, |i| case.peds[i]), origin("pedestals")).unwrap();
    if with.0 {
        set.insert(CalibType::PixelGain, f32s(&shape, |i| case.gain[i]), origin("pixel_gain")).unwrap();
    }
    if with.1 {
        set.insert(CalibType::PixelOffset, f32s(&shape, |i| case.offset[i]), origin("pixel_offset")).unwrap();
    }
    if with.2 {
        set.insert(CalibType::PixelStatus, u64s(&shape, |i| case.status[i]), origin("pixel_status")).unwrap();
        set.insert(CalibType::StatusExtra, u64s(&shape, |i| case.extra[i]), origin("status_extra")).unwrap();
    }
    set
}

#[test]
fn jungfrau_every_gain_range_bad_switch_and_status_by_segment_number() {
    let case = jungfrau_case(3, 11);
    // A daq subset in another order: constants must be taken by segment number.
    let segments = [2u32, 0];
    let raw = jungfrau_raw(segments.len(), 12);
    let all = (true, true, true);
    let cal = Calibrator::new(&jungfrau_constants(&case, all), &[]).unwrap();
    assert!(cal.fallbacks().is_empty(), "{:?}", cal.fallbacks());
    let mut out = vec![f32::NAN; raw.len()];
    cal.calibrate(&segments, &raw, &mut out).unwrap();
    let oracle = jungfrau_oracle(&case, &segments, &raw, all);
    assert_bits_equal(&out, &oracle, "jungfrau");

    // Every case occurred: each gain code, masked pixels, zero gains in use.
    let codes: Vec<usize> = (0..4).map(|c| raw.iter().filter(|&&w| w >> 14 == c).count()).collect();
    assert!(codes.iter().all(|&n| n > 1000), "{codes:?}");
    let mut mask = vec![9u8; raw.len()];
    cal.mask(&segments, &mut mask).unwrap();
    let masked = mask.iter().filter(|&&m| m == 0).count();
    assert!(masked > 1000 && mask.iter().all(|&m| m <= 1), "{masked}");
    let neg_zero = out.iter().filter(|v| v.to_bits() == (-0.0f32).to_bits()).count();
    assert!(neg_zero > 0, "masked pixels below pedestal give -0 as in psana");

    // The mask is the status of all three ranges of that segment number.
    for (k, &s) in segments.iter().enumerate() {
        for p in (0..JF_PANEL).step_by(997) {
            let good = (0..3).all(|g| {
                let i = (g * 3 + s as usize) * JF_PANEL + p;
                case.status[i] == 0 && case.extra[i] == 0
            });
            assert_eq!(mask[k * JF_PANEL + p], good as u8);
        }
    }
}

/// The fast path's edges: every pixel switched, lone switched pixels at each position of a
/// 4-pixel line, a 16-pixel group and a 2048-pixel block, and whole blocks dark.
#[test]
fn jungfrau_dense_and_lone_switched_pixels_match_the_formula() {
    let case = jungfrau_case(1, 51);
    let mut rng = Rng(52);
    let raw: Vec<u16> = (0..JF_PANEL)
        .map(|i| {
            let code = match i / 65536 {
                // every pixel switched or bad
                0 => [1u16, 2, 3][rng.below(3) as usize],
                // any code, dense
                1 => rng.below(4) as u16,
                // one switched pixel per line, group or block, at every offset
                2 => [0u16, 1][(i % 4 == (i / 4) % 4) as usize],
                3 => [0u16, 3][(i % 16 == (i / 16) % 16) as usize],
                4 => [0u16, 1][(i % 2048 == (i / 2048) % 2048 || i % 2048 == 2047) as usize],
                5 => [0u16, 2][(i % 1000 == 0) as usize],
                // dark
                _ => 0,
            };
            (code << 14) | rng.below(1 << 14) as u16
        })
        .collect();
    let all = (true, true, true);
    let cal = Calibrator::new(&jungfrau_constants(&case, all), &[]).unwrap();
    let mut out = vec![f32::NAN; raw.len()];
    cal.calibrate(&[0], &raw, &mut out).unwrap();
    assert_bits_equal(&out, &jungfrau_oracle(&case, &[0], &raw, all), "jungfrau dense and lone switches");
}

#[test]
fn jungfrau_fallbacks_are_psana_s_and_reported() {
    let case = jungfrau_case(1, 21);
    let raw = jungfrau_raw(1, 22);
    let none = (false, false, false);
    let cal = Calibrator::new(&jungfrau_constants(&case, none), &[]).unwrap();
    assert_eq!(cal.fallbacks(), &[Fallback::MaskAllGood, Fallback::OffsetZero, Fallback::GainOne]);
    let mut out = vec![0f32; raw.len()];
    cal.calibrate(&[0], &raw, &mut out).unwrap();
    assert_bits_equal(&out, &jungfrau_oracle(&case, &[0], &raw, none), "jungfrau without gain, offset, status");

    // No pedestals at all: raw unchanged, gain bits included.
    let spec = DetectorSpec::new("jungfrau", DetectorKind::Jungfrau).unwrap();
    let cal = Calibrator::new(&DetectorConstants::new(spec), &[]).unwrap();
    assert_eq!(cal.fallbacks()[0], Fallback::RawUnchanged);
    cal.calibrate(&[5], &raw, &mut out).unwrap();
    assert!(raw.iter().zip(&out).all(|(&r, &o)| o == r as f32));
}

#[test]
fn jungfrau_float64_constants_round_once() {
    // f64 constants: po and gm computed in f64 and rounded to f32 (spec §3 preamble).
    let case = jungfrau_case(1, 31);
    let raw = jungfrau_raw(1, 32);
    let spec = DetectorSpec::new("jungfrau", DetectorKind::Jungfrau).unwrap();
    let shape = vec![3, 1, 512, 1024];
    let peds64: Vec<f64> = case.peds.iter().map(|&v| v as f64 + 1.0 / 3.0).collect();
    let gain64: Vec<f64> = case.gain.iter().map(|&v| v as f64 * 1.000000001).collect();
    let mut set = DetectorConstants::new(spec);
    set.insert(CalibType::Pedestals, NdArray::new(shape.clone(), Elements::F64(peds64.clone())), origin("p")).unwrap();
    set.insert(CalibType::PixelGain, NdArray::new(shape.clone(), Elements::F64(gain64.clone())), origin("g")).unwrap();
    let cal = Calibrator::new(&set, &[]).unwrap();
    let mut out = vec![0f32; raw.len()];
    cal.calibrate(&[0], &raw, &mut out).unwrap();
    let oracle: Vec<f32> = raw
        .iter()
        .enumerate()
        .map(|(p, &w)| {
            let g = match w >> 14 {
                0 => 0,
                1 => 1,
                3 => 2,
                _ => return 0.0,
            };
            let po = peds64[g * JF_PANEL + p] as f32;
            let gain = gain64[g * JF_PANEL + p];
            let gm = (if gain != 0.0 { 1.0 / gain } else { 0.0 }) as f32;
            ((w & 0x3fff) as f32 - po) * gm
        })
        .collect();
    assert_bits_equal(&out, &oracle, "jungfrau f64 constants");
}

#[test]
fn jungfrau_bad_frames_are_errors_not_panics() {
    let case = jungfrau_case(2, 41);
    let cal = Calibrator::new(&jungfrau_constants(&case, (true, true, true)), &[]).unwrap();
    let raw = vec![0u16; JF_PANEL];
    let mut out = vec![0f32; JF_PANEL];
    assert!(matches!(
        cal.calibrate(&[2], &raw, &mut out),
        Err(CalibError::SegmentOutOfRange { segment: 2, nseg: 2, .. })
    ));
    assert!(matches!(cal.calibrate(&[0, 1], &raw, &mut out), Err(CalibError::RawSize { .. })));
    assert!(matches!(cal.calibrate(&[0], &raw[..100], &mut out), Err(CalibError::RawSize { .. })));
    assert!(matches!(cal.calibrate(&[0], &raw, &mut out[..10]), Err(CalibError::OutSize { .. })));
    let e = cal.calibrate(&[7], &raw, &mut out).unwrap_err().to_string();
    assert!(e.contains("jungfrau") && e.contains("segment 7"), "{e}");
}

// ---------------------------------------------------------------- epix10ka (§3.2, §4)

const EP_ROWS: usize = 352;
const EP_COLS: usize = 384;
const EP_PANEL: usize = EP_ROWS * EP_COLS;

/// Panel control bits from `asicPixelConfig`/`trbit`, built from the spec's table by placing
/// each ASIC pixel (the crate goes the other way, from panel pixel to ASIC).
fn oracle_cbits(pca: &[u8], trbit: [u8; 4]) -> Vec<u8> {
    let mut panel = vec![0u8; EP_PANEL];
    for a in 0..4 {
        for ra in 0..176 {
            for ca in 0..192 {
                let (r, c) = match a {
                    2 => (175 - ra, 191 - ca),       // top left, rotated 180°
                    1 => (175 - ra, 192 + 191 - ca), // top right, rotated 180°
                    3 => (176 + ra, ca),             // bottom left
                    _ => (176 + ra, 192 + ca),       // ASIC 0 bottom right
                };
                let v = pca[(a * 176 + ra) * 192 + ca] & 12;
                panel[r * EP_COLS + c] = v | if trbit[a] != 0 { 16 } else { 0 };
            }
        }
    }
    panel
}

/// The mode table of §3.2, written as the spec lists it.
fn oracle_mode(c: u8) -> Option<usize> {
    let tests: [(u8, u8); 7] = [(28, 28), (28, 12), (12, 8), (60, 16), (60, 0), (60, 48), (60, 32)];
    tests.iter().position(|&(m, v)| c & m == v)
}

struct EpixCase {
    nseg: usize,
    peds: Vec<f32>,
    gain: Vec<f32>,
    status: Vec<u64>,
    configs: Vec<(u32, Vec<u8>, [u8; 4])>,
}

fn epix_case(seed: u64) -> EpixCase {
    let mut rng = Rng(seed);
    let nseg = 4;
    let n = 7 * nseg * EP_PANEL;
    let peds = (0..n).map(|_| rng.uniform(1000.0, 3000.0)).collect();
    let gain = (0..n).map(|i| if rng.below(4000) == 0 { 0.0 } else { [16.4, 5.466, 0.164, 16.4, 5.466, 0.164, 0.164][i / (nseg * EP_PANEL)] * rng.uniform(0.9, 1.1) }).collect();
    // Status in every range; ranges 5 and 6 must not mask (AHL_L, AML_L statuses ignored).
    let status = (0..n).map(|_| if rng.below(500) == 0 { 1 + rng.below(64) } else { 0 }).collect();
    // Every pixel config value 0..15 (bits 0–1 are noise to be dropped), trbit mixed per ASIC.
    let configs = vec![
        (0u32, (0..4 * 176 * 192).map(|_| rng.below(16) as u8).collect(), [1, 0, 1, 0]),
        (1, vec![12; 4 * 176 * 192], [1, 1, 1, 1]),
        (3, (0..4 * 176 * 192).map(|i| [0u8, 4, 8, 12][i % 4]).collect(), [0, 1, 0, 0]),
    ];
    EpixCase { nseg, peds, gain, status, configs }
}

fn epix_raw(nseg_daq: usize, seed: u64) -> Vec<u16> {
    let mut rng = Rng(seed);
    (0..nseg_daq * EP_PANEL)
        .map(|i| {
            // Regions of uniform gain bit and mixed ones; bit 15 random (not data, not gain).
            let bit14 = if (i / 4096) % 3 == 0 { 1 } else if (i / 4096) % 3 == 1 { 0 } else { rng.below(2) as u16 };
            (bit14 << 14) | ((rng.below(2) as u16) << 15) | rng.below(1 << 14) as u16
        })
        .collect()
}

fn epix_oracle(case: &EpixCase, segments: &[u32], raw: &[u16], with: (bool, bool, bool)) -> Vec<f32> {
    let (with_peds, with_gain, with_status) = with;
    let at = |g: usize, s: usize, p: usize| (g * case.nseg + s) * EP_PANEL + p;
    let mut out = vec![0f32; raw.len()];
    for (k, &s) in segments.iter().enumerate() {
        let (_, pca, trbit) = case.configs.iter().find(|c| c.0 == s).unwrap();
        let cbits = oracle_cbits(pca, *trbit);
        let s = s as usize;
        for p in 0..EP_PANEL {
            let word = raw[k * EP_PANEL + p];
            let c = cbits[p] | (((word & 0x4000) >> 9) as u8);
            let (ped, factor) = match oracle_mode(c) {
                Some(i) => {
                    let ped = if with_peds { case.peds[at(i, s, p)] } else { 0.0 };
                    let g = if with_gain { case.gain[at(i, s, p)] } else { 1.0 };
                    (ped, if g != 0.0 { 1.0 / g } else { 0.0 })
                }
                None => (0.0, 1.0),
            };
            let good = !with_status || (0..5).all(|g| case.status[at(g, s, p)] == 0);
            let arrf: f32 = (word & 0x3fff) as f32 - ped;
            out[k * EP_PANEL + p] = arrf * factor * if good { 1.0 } else { 0.0 };
        }
    }
    out
}

fn epix_calibrator(case: &EpixCase, with: (bool, bool, bool)) -> Calibrator {
    let spec = DetectorSpec::new("epixquad", DetectorKind::Epix10ka).unwrap();
    let shape = [7, case.nseg, EP_ROWS, EP_COLS];
    let mut set = DetectorConstants::new(spec);
    if with.0 {
        set.insert(CalibType::Pedestals, f32s(&shape, |i| case.peds[i]), origin("pedestals")).unwrap();
    }
    if with.1 {
        set.insert(CalibType::PixelGain, f32s(&shape, |i| case.gain[i]), origin("pixel_gain")).unwrap();
    }
    if with.2 {
        set.insert(CalibType::PixelStatus, u64s(&shape, |i| case.status[i]), origin("pixel_status")).unwrap();
    }
    let configs: Vec<(u32, Epix10kaConfig)> = case
        .configs
        .iter()
        .map(|(s, pca, trbit)| (*s, Epix10kaConfig::Asics { asic_pixel_config: pca.clone(), trbit: *trbit }))
        .collect();
    Calibrator::new(&set, &configs).unwrap()
}

#[test]
fn epix10ka_seven_gain_modes_from_config_and_data_bit() {
    let case = epix_case(51);
    let segments = [3u32, 0, 1];
    let raw = epix_raw(segments.len(), 52);
    let all = (true, true, true);
    let cal = epix_calibrator(&case, all);
    assert!(cal.fallbacks().is_empty());
    let mut out = vec![f32::NAN; raw.len()];
    cal.calibrate(&segments, &raw, &mut out).unwrap();
    assert_bits_equal(&out, &epix_oracle(&case, &segments, &raw, all), "epix10ka");

    // Every mode and the no-mode case occurred in this frame.
    let mut seen = [0usize; 8];
    for (k, &s) in segments.iter().enumerate() {
        let (_, pca, trbit) = case.configs.iter().find(|c| c.0 == s).unwrap();
        let cbits = oracle_cbits(pca, *trbit);
        for p in 0..EP_PANEL {
            let c = cbits[p] | ((raw[k * EP_PANEL + p] & 0x4000) >> 9) as u8;
            seen[oracle_mode(c).unwrap_or(7)] += 1;
        }
    }
    assert!(seen[..7].iter().all(|&n| n > 0), "{seen:?}");

    // The crate's mode table agrees with the spec's on every 6-bit value.
    for c in 0..64u8 {
        assert_eq!(gain_mode_index(c), oracle_mode(c), "c = {c}");
    }
}

#[test]
fn epix10ka_fallbacks() {
    let case = epix_case(61);
    let segments = [0u32];
    let raw = epix_raw(1, 62);
    for with in [(false, true, true), (true, false, true), (true, true, false), (false, false, false)] {
        let cal = epix_calibrator(&case, with);
        let mut expected = Vec::new();
        if !with.0 {
            expected.push(Fallback::NoPedestalSubtraction);
        }
        if !with.1 {
            expected.push(Fallback::GainOne);
        }
        if !with.2 {
            expected.push(Fallback::MaskAllGood);
        }
        assert_eq!(cal.fallbacks(), expected.as_slice());
        let mut out = vec![0f32; raw.len()];
        cal.calibrate(&segments, &raw, &mut out).unwrap();
        assert_bits_equal(&out, &epix_oracle(&case, &segments, &raw, with), &format!("epix10ka {with:?}"));
    }
}

#[test]
fn epix10ka_bad_config_and_unknown_segment_are_errors() {
    let case = epix_case(71);
    let cal = epix_calibrator(&case, (true, true, true));
    let raw = vec![0u16; EP_PANEL];
    let mut out = vec![0f32; EP_PANEL];
    // Segment 2 is covered by the constants but had no config.
    assert!(matches!(cal.calibrate(&[2], &raw, &mut out), Err(CalibError::Config { segment: 2, .. })));
    assert!(matches!(cal.calibrate(&[4], &raw, &mut out), Err(CalibError::SegmentOutOfRange { .. })));
    let spec = DetectorSpec::new("epixquad", DetectorKind::Epix10ka).unwrap();
    let set = DetectorConstants::new(spec);
    let bad = [(0u32, Epix10kaConfig::Asics { asic_pixel_config: vec![8; 100], trbit: [0; 4] })];
    let e = Calibrator::new(&set, &bad).err().unwrap().to_string();
    assert!(e.contains("asicPixelConfig has 100 values"), "{e}");
}

// ---------------------------------------------------------------- cameras (§3.6)

#[test]
fn camera_subtract_then_divide_protected() {
    let (rows, cols) = (31, 47);
    let mut rng = Rng(81);
    let raw: Vec<u16> = (0..rows * cols).map(|_| rng.below(4096) as u16).collect();
    let peds: Vec<f32> = (0..rows * cols).map(|_| rng.uniform(20.0, 40.0)).collect();
    let gain: Vec<f32> = (0..rows * cols).map(|i| if i % 13 == 0 { 0.0 } else { rng.uniform(0.5, 2.0) }).collect();
    let spec = DetectorSpec::with_panel("opal", DetectorKind::Camera, (rows, cols));
    let mut set = DetectorConstants::new(spec.clone());
    set.insert(CalibType::Pedestals, f32s(&[rows, cols], |i| peds[i]), origin("p")).unwrap();
    set.insert(CalibType::PixelGain, f32s(&[rows, cols], |i| gain[i]), origin("g")).unwrap();
    let cal = Calibrator::new(&set, &[]).unwrap();
    let mut out = vec![0f32; raw.len()];
    cal.calibrate(&[0], &raw, &mut out).unwrap();
    let oracle: Vec<f32> = (0..raw.len())
        .map(|i| {
            let d: f32 = raw[i] as f32 - peds[i];
            if gain[i] != 0.0 { d / gain[i] } else { 0.0 }
        })
        .collect();
    assert_bits_equal(&out, &oracle, "camera");

    // Without gain: raw − peds; without pedestals: raw as float.
    let mut set = DetectorConstants::new(spec.clone());
    set.insert(CalibType::Pedestals, f32s(&[rows, cols], |i| peds[i]), origin("p")).unwrap();
    let cal = Calibrator::new(&set, &[]).unwrap();
    assert_eq!(cal.fallbacks(), &[Fallback::GainOne]);
    cal.calibrate(&[0], &raw, &mut out).unwrap();
    let oracle: Vec<f32> = (0..raw.len()).map(|i| raw[i] as f32 - peds[i]).collect();
    assert_bits_equal(&out, &oracle, "camera without gain");
    let cal = Calibrator::new(&DetectorConstants::new(spec), &[]).unwrap();
    assert_eq!(cal.fallbacks(), &[Fallback::RawAsFloat]);
    cal.calibrate(&[0], &raw, &mut out).unwrap();
    assert!(raw.iter().zip(&out).all(|(&r, &o)| o == r as f32));
    assert!(matches!(cal.calibrate(&[0], &raw[1..], &mut out[1..]), Err(CalibError::RawSize { .. })));
}

// ---------------------------------------------------------------- epixM320 (§3.4)

#[test]
fn epixm320_pedestal_by_bit15_and_mask() {
    let panel = 192 * 384;
    let mut rng = Rng(121);
    let n = 3 * 4 * panel;
    let peds: Vec<f32> = (0..n).map(|_| rng.uniform(500.0, 1500.0)).collect();
    let status: Vec<u64> = (0..n).map(|_| if rng.below(400) == 0 { 2 } else { 0 }).collect();
    let spec = DetectorSpec::new("epixm", DetectorKind::Epixm320).unwrap();
    let mut set = DetectorConstants::new(spec.clone());
    set.insert(CalibType::Pedestals, f32s(&[3, 4, 192, 384], |i| peds[i]), origin("p")).unwrap();
    set.insert(CalibType::PixelStatus, u64s(&[3, 4, 192, 384], |i| status[i]), origin("s")).unwrap();
    let cal = Calibrator::new(&set, &[]).unwrap();
    let segments = [0u32, 3, 1];
    let raw: Vec<u16> = (0..segments.len() * panel).map(|_| rng.below(1 << 16) as u16).collect();
    let mut out = vec![0f32; raw.len()];
    cal.calibrate(&segments, &raw, &mut out).unwrap();
    let oracle: Vec<f32> = (0..raw.len())
        .map(|i| {
            let (s, p) = (segments[i / panel] as usize, i % panel);
            let w = raw[i];
            let ped = if w & 0x8000 != 0 { peds[(4 + s) * panel + p] } else { peds[s * panel + p] };
            let good = (0..3).all(|g| status[(g * 4 + s) * panel + p] == 0);
            ((w & 0x7fff) as f32 - ped) * if good { 1.0 } else { 0.0 }
        })
        .collect();
    assert_bits_equal(&out, &oracle, "epixm320");
    // Without pedestals: raw unchanged.
    let cal = Calibrator::new(&DetectorConstants::new(spec), &[]).unwrap();
    assert_eq!(cal.fallbacks(), &[Fallback::RawUnchanged, Fallback::MaskAllGood]);
    cal.calibrate(&segments, &raw, &mut out).unwrap();
    assert!(raw.iter().zip(&out).all(|(&r, &o)| o == r as f32));
}

// ---------------------------------------------------------------- common mode (§3.7)



/// Raw frames whose gain-0 pixels carry a common-mode offset per (row, bank) of up to ±60 ADU.
fn raw_with_common_mode(pixels: usize, cols: usize, bank: usize, peds: impl Fn(usize) -> f32, bits: impl Fn(usize) -> u16, seed: u64) -> Vec<u16> {
    let mut rng = Rng(seed);
    (0..pixels)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            let offset = (((r * 7 + (c / bank) * 13) % 121) as f32) - 60.0;
            let adu = (peds(i) + offset + rng.uniform(-3.0, 3.0)).clamp(0.0, 16383.0) as u16;
            bits(i) | adu
        })
        .collect()
}

#[test]
fn jungfrau_common_mode_all_bits() {
    let case = jungfrau_case(2, 91);
    let with = (true, true, true);
    let mut cal = Calibrator::new(&jungfrau_constants(&case, with), &[]).unwrap();
    let segment = 1usize;
    // Gain 0 near the pedestal (plus offsets), a few switched pixels, a few bad switches.
    let mut rng = Rng(92);
    let codes: Vec<u16> = (0..JF_PANEL).map(|_| match rng.below(200) { 0 => 1, 1 => 3, 2 => 2, _ => 0 }).collect();
    let base = |i: usize| case.peds[(segment) * JF_PANEL + i] + case.offset[segment * JF_PANEL + i];
    let raw = raw_with_common_mode(JF_PANEL, 1024, 64, base, |i| codes[i] << 14, 93);
    for (mode, cormax, npix_min) in [(7u32, 40.0f32, 10usize), (1, 100.0, 60), (2, 25.0, 10), (4, 1000.0, 15000)] {
        cal.set_common_mode(Some(detector::CommonMode { alg: 7, mode, cormax: cormax as f64, npix_min })).unwrap();
        let mut out = vec![0f32; JF_PANEL];
        cal.calibrate(&[segment as u32], &raw, &mut out).unwrap();

        let at = |g: usize, p: usize| (g * 2 + segment) * JF_PANEL + p;
        let range = |w: u16| match w >> 14 { 0 => Some(0), 1 => Some(1), 3 => Some(2), _ => None };
        let good: Vec<bool> = (0..JF_PANEL)
            .map(|p| raw[p] >> 14 == 0 && (0..3).all(|g| case.status[at(g, p)] == 0 && case.extra[at(g, p)] == 0))
            .collect();
        let mut arrf: Vec<f32> = (0..JF_PANEL)
            .map(|p| {
                let adu = (raw[p] & 0x3fff) as f32;
                match range(raw[p]) {
                    Some(g) => adu - (case.peds[at(g, p)] + case.offset[at(g, p)]),
                    None => adu,
                }
            })
            .collect();
        let counts = oracle_common_mode(&mut arrf, &good, 512, 1024, 16, mode, cormax, npix_min);
        // Every case occurs: medians subtracted, over cormax (mode 7), short of pixels (npix_min 60).
        assert!(counts[0] > 0, "{counts:?}");
        assert!(mode != 7 || counts[1] > 0, "{counts:?}");
        assert!(npix_min != 60 || counts[2] > 0, "{counts:?}");
        let oracle: Vec<f32> = (0..JF_PANEL)
            .map(|p| match range(raw[p]) {
                None => 0.0,
                Some(g) => {
                    let gain = case.gain[at(g, p)];
                    let inv: f32 = if gain != 0.0 { 1.0 / gain } else { 0.0 };
                    let masked = (0..3).any(|r| case.status[at(r, p)] != 0 || case.extra[at(r, p)] != 0);
                    arrf[p] * (inv * if masked { 0.0 } else { 1.0 })
                }
            })
            .collect();
        assert_bits_equal(&out, &oracle, &format!("jungfrau common mode {mode} {cormax} {npix_min}"));
    }
    // Mode 0 is off: the plain formula again.
    cal.set_common_mode(Some(detector::CommonMode { alg: 7, mode: 0, cormax: 100.0, npix_min: 10 })).unwrap();
    let mut out = vec![0f32; JF_PANEL];
    cal.calibrate(&[segment as u32], &raw, &mut out).unwrap();
    assert_bits_equal(&out, &jungfrau_oracle(&case, &[segment as u32], &raw, with), "common mode off");
}

#[test]
fn epix10ka_common_mode_alg7_selects_high_and_medium_modes() {
    let case = epix_case(101);
    let mut cal = epix_calibrator(&case, (true, true, true));
    let segment = 0u32; // random pixel configs: every mode present
    let (_, pca, trbit) = case.configs.iter().find(|c| c.0 == segment).unwrap();
    let cbits = oracle_cbits(pca, *trbit);
    let mut rng = Rng(102);
    let bit14: Vec<u16> = (0..EP_PANEL).map(|_| if rng.below(10) == 0 { 0x4000 } else { 0 }).collect();
    let mode_of = |p: usize| oracle_mode(cbits[p] | ((bit14[p] >> 9) as u8));
    let at = |g: usize, p: usize| (g * case.nseg + segment as usize) * EP_PANEL + p;
    let base = |p: usize| mode_of(p).map_or(0.0, |i| case.peds[at(i, p)]);
    let raw = raw_with_common_mode(EP_PANEL, 384, 48, base, |p| bit14[p], 103);
    for (alg, mode, cormax) in [(7i64, 7u32, 45.0f32), (0, 7, 45.0), (7, 3, 1000.0)] {
        cal.set_common_mode(Some(detector::CommonMode { alg, mode, cormax: cormax as f64, npix_min: 10 })).unwrap();
        let mut out = vec![0f32; EP_PANEL];
        cal.calibrate(&[segment], &raw, &mut out).unwrap();

        let good_status = |p: usize| (0..5).all(|g| case.status[at(g, p)] == 0);
        let good: Vec<bool> = (0..EP_PANEL)
            .map(|p| good_status(p) && (alg != 7 || matches!(mode_of(p), Some(0 | 1 | 3 | 4))))
            .collect();
        let mut arrf: Vec<f32> = (0..EP_PANEL).map(|p| (raw[p] & 0x3fff) as f32 - base(p)).collect();
        let counts = oracle_common_mode(&mut arrf, &good, 352, 384, 8, mode, cormax, 10);
        assert!(counts[0] > 0 && (cormax > 100.0 || counts[1] > 0), "applied / over cormax / too few: {counts:?}");
        let oracle: Vec<f32> = (0..EP_PANEL)
            .map(|p| {
                let factor = mode_of(p).map_or(1.0, |i| {
                    let g = case.gain[at(i, p)];
                    if g != 0.0 { 1.0 / g } else { 0.0 }
                });
                arrf[p] * factor * if good_status(p) { 1.0 } else { 0.0 }
            })
            .collect();
        assert_bits_equal(&out, &oracle, &format!("epix10ka common mode alg {alg} mode {mode}"));
    }
}

// ---------------------------------------------------------------- user mask (§4, psana's umask)

#[test]
fn user_mask_files_join_the_status_mask() {
    let case = jungfrau_case(2, 111);
    let segments = [1u32, 0];
    let raw = jungfrau_raw(2, 112);
    let dir = tempfile::tempdir().unwrap();
    // A user mask (2, 512, 1024): a bad rectangle and scattered bad pixels.
    let umask: Vec<u8> = (0..2 * JF_PANEL)
        .map(|i| {
            let (r, c) = ((i % JF_PANEL) / 1024, i % 1024);
            u8::from(!((100..140).contains(&r) && (300..420).contains(&c)) && i % 1013 != 0)
        })
        .collect();
    // NDArrIO text as psana writes a mask: SHAPE, DATATYPE uint8, %d rows.
    let text_path = dir.path().join("umask.data");
    let mut text = String::from("# SHAPE       (2,512,1024)\n# DATATYPE    uint8\n\n");
    for row in umask.chunks(1024) {
        text += &row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" ");
        text += "\n";
    }
    std::fs::write(&text_path, text).unwrap();
    // The same as .npy bytes.
    let npy_path = dir.path().join("umask.npy");
    let mut header = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 512, 1024), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(&umask);
    std::fs::write(&npy_path, bytes).unwrap();

    for path in [&text_path, &npy_path] {
        let mut set = jungfrau_constants(&case, (true, true, true));
        set.load_user_mask(path).unwrap();
        let cal = Calibrator::new(&set, &[]).unwrap();
        let mut out = vec![0f32; raw.len()];
        cal.calibrate(&segments, &raw, &mut out).unwrap();
        let mut mask = vec![0u8; raw.len()];
        cal.mask(&segments, &mut mask).unwrap();
        // Oracle: the spec's formula with good = status good AND user mask 1.
        let at = |g: usize, s: usize, p: usize| (g * 2 + s) * JF_PANEL + p;
        for (k, &s) in segments.iter().enumerate() {
            let s = s as usize;
            for p in 0..JF_PANEL {
                let w = raw[k * JF_PANEL + p];
                let good = umask[s * JF_PANEL + p] == 1 && (0..3).all(|g| case.status[at(g, s, p)] == 0 && case.extra[at(g, s, p)] == 0);
                assert_eq!(mask[k * JF_PANEL + p], good as u8);
                let g = match w >> 14 {
                    0 => 0,
                    1 => 1,
                    3 => 2,
                    _ => {
                        assert_eq!(out[k * JF_PANEL + p].to_bits(), 0);
                        continue;
                    }
                };
                let po: f32 = case.peds[at(g, s, p)] + case.offset[at(g, s, p)];
                let gain = case.gain[at(g, s, p)];
                let gm: f32 = (if gain != 0.0 { 1.0 / gain } else { 0.0 }) * if good { 1.0 } else { 0.0 };
                let expected = ((w & 0x3fff) as f32 - po) * gm;
                assert_eq!(out[k * JF_PANEL + p].to_bits(), expected.to_bits(), "{} pixel {p}", path.display());
            }
        }
    }

    // A user mask of another detector's shape: the error names the file and psana's shape.
    let bad = dir.path().join("bad.data");
    let row = vec!["1"; 1024].join(" ") + "\n";
    std::fs::write(&bad, "# SHAPE       (1,512,1024)\n# DATATYPE    uint8\n".to_string() + &row.repeat(512)).unwrap();
    let mut set = jungfrau_constants(&case, (true, true, true));
    let e = set.load_user_mask(&bad).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, detector::ConstantError::Shape { .. }), "{text}");
    assert!(text.contains("bad.data") && text.contains("(1, 512, 1024), expected (2, 512, 1024)"), "{text}");
}
