//! epixhr2x2 (spec §3.3 on §3.2, §3.7, §4) and Archon (§3.5) against oracles written here from
//! the spec's text — plain scalar loops, never the crate's code — on constants, configs and raw
//! words generated to hit every gain mode, trbit quadrant, status range and common-mode case.
//! Values are compared bit for bit; bad input must give typed errors, never a panic.

mod common;
use common::{oracle_common_mode, oracle_median};
use std::path::PathBuf;

use detector::calib::archon;
use detector::constants::{CalibType, DetectorConstants, DetectorKind, DetectorSpec, Elements, NdArray};
use detector::{CalibError, Calibrator, CommonMode, ConstantError, Epix10kaConfig, Fallback};

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

fn f32s(shape: &[usize], values: &[f32]) -> NdArray {
    assert_eq!(shape.iter().product::<usize>(), values.len());
    NdArray::new(shape.to_vec(), Elements::F32(values.to_vec()))
}

fn origin(name: &str) -> PathBuf {
    PathBuf::from(format!("generated/{name}"))
}

fn assert_bits_equal(ours: &[f32], oracle: &[f32], what: &str) {
    assert_eq!(ours.len(), oracle.len(), "{what}: lengths");
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


// ---------------------------------------------------------------- epixhr2x2 (§3.3)

const HR_ROWS: usize = 288;
const HR_COLS: usize = 384;
const HR_PANEL: usize = HR_ROWS * HR_COLS;
const HR_NSEG: usize = 2;

/// The §3.2 gain-mode table, first matching test wins.
fn oracle_mode(c: u8) -> Option<usize> {
    let tests: [(u8, u8); 7] = [(28, 28), (28, 12), (12, 8), (60, 16), (60, 0), (60, 48), (60, 32)];
    tests.iter().position(|&(m, v)| c & m == v)
}

/// §3.3's quadrants: ASIC1 top-left, ASIC3 top-right, ASIC0 bottom-left, ASIC2 bottom-right;
/// rows 0–143 are the top.
fn oracle_asic(r: usize, c: usize) -> usize {
    match (r < 144, c < 192) {
        (true, true) => 1,
        (true, false) => 3,
        (false, true) => 0,
        (false, false) => 2,
    }
}

/// Control bits of one pixel: `asicPixelConfig & 12`, trbit → bit 4, raw bit 15 → bit 5.
fn oracle_hr_cbits(pca: &[u8], trbit: [u8; 4], p: usize, word: u16) -> u8 {
    let (r, c) = (p / HR_COLS, p % HR_COLS);
    let tr = if trbit[oracle_asic(r, c)] != 0 { 16 } else { 0 };
    (pca[p] & 12) | tr | ((word & 0x8000) >> 10) as u8
}

struct HrCase {
    peds: Vec<f32>,
    gain: Vec<f32>,
    status: Vec<u64>,
    /// (segment, asicPixelConfig, trbit)
    configs: Vec<(u32, Vec<u8>, [u8; 4])>,
}

fn hr_case(seed: u64) -> HrCase {
    let mut rng = Rng(seed);
    let n = 7 * HR_NSEG * HR_PANEL;
    let peds = (0..n).map(|_| rng.uniform(0.0, 3000.0)).collect();
    // Some zero gains: the protected inverse gives factor 0.
    let gain = (0..n).map(|_| if rng.below(37) == 0 { 0.0 } else { rng.uniform(0.1, 50.0) }).collect();
    // Status set in ranges 5 and 6 too, which the mask must ignore.
    let status = (0..n).map(|_| if rng.below(40) == 0 { 1 << rng.below(7) } else { 0 }).collect();
    // Whole random bytes: bits other than 3–2 must be dropped (`& 12`); each ASIC has trbit 0
    // in one segment and 1 in the other.
    let configs = vec![
        (0, (0..HR_PANEL).map(|_| rng.below(256) as u8).collect(), [1, 0, 1, 0]),
        (1, (0..HR_PANEL).map(|_| rng.below(256) as u8).collect(), [0, 1, 0, 1]),
    ];
    HrCase { peds, gain, status, configs }
}

/// Raw words with random bit 15 (gain) and bit 14 (wired to gain too, must be ignored).
fn hr_raw(nseg: usize, seed: u64) -> Vec<u16> {
    let mut rng = Rng(seed);
    (0..nseg * HR_PANEL).map(|_| rng.below(1 << 16) as u16).collect()
}

fn hr_configs(case: &HrCase) -> Vec<(u32, Epix10kaConfig)> {
    case.configs
        .iter()
        .map(|(s, pca, trbit)| (*s, Epix10kaConfig::HrAsics { asic_pixel_config: pca.clone(), trbit: *trbit }))
        .collect()
}

fn hr_calibrator(case: &HrCase, with: (bool, bool, bool)) -> Calibrator {
    let spec = DetectorSpec::new("epixhr", DetectorKind::Epixhr2x2).unwrap();
    assert_eq!(spec.panel, (288, 384));
    let shape = [7, HR_NSEG, HR_ROWS, HR_COLS];
    let mut set = DetectorConstants::new(spec);
    if with.0 {
        set.insert(CalibType::Pedestals, f32s(&shape, &case.peds), origin("pedestals")).unwrap();
    }
    if with.1 {
        set.insert(CalibType::PixelGain, f32s(&shape, &case.gain), origin("pixel_gain")).unwrap();
    }
    if with.2 {
        let status = NdArray::new(shape.to_vec(), Elements::U64(case.status.clone()));
        set.insert(CalibType::PixelStatus, status, origin("pixel_status")).unwrap();
    }
    Calibrator::new(&set, &hr_configs(case)).unwrap()
}

/// §3.2 formula with §3.3's bits: `(f32(raw & 0x3fff) − ped[i]) × f32(1/gain[i]) × mask`, no
/// mode → ped 0, factor 1; mask = no status bit in gain ranges 0–4 (§4).
fn hr_oracle(case: &HrCase, segments: &[u32], raw: &[u16], with: (bool, bool, bool)) -> Vec<f32> {
    let at = |g: usize, s: usize, p: usize| (g * HR_NSEG + s) * HR_PANEL + p;
    let mut out = vec![0f32; raw.len()];
    for (k, &s) in segments.iter().enumerate() {
        let (_, pca, trbit) = case.configs.iter().find(|c| c.0 == s).unwrap();
        let s = s as usize;
        for p in 0..HR_PANEL {
            let word = raw[k * HR_PANEL + p];
            let (ped, factor) = match oracle_mode(oracle_hr_cbits(pca, *trbit, p, word)) {
                Some(i) => {
                    let ped = if with.0 { case.peds[at(i, s, p)] } else { 0.0 };
                    let g = if with.1 { case.gain[at(i, s, p)] } else { 1.0 };
                    (ped, if g != 0.0 { 1.0 / g } else { 0.0 })
                }
                None => (0.0, 1.0),
            };
            let good = !with.2 || (0..5).all(|g| case.status[at(g, s, p)] == 0);
            let arrf: f32 = (word & 0x3fff) as f32 - ped;
            out[k * HR_PANEL + p] = arrf * factor * if good { 1.0 } else { 0.0 };
        }
    }
    out
}

#[test]
fn epixhr2x2_seven_gain_modes_from_config_trbit_and_bit15() {
    let case = hr_case(1);
    let segments = [1u32, 0];
    let raw = hr_raw(segments.len(), 2);
    let all = (true, true, true);
    let cal = hr_calibrator(&case, all);
    assert!(cal.fallbacks().is_empty());
    let mut out = vec![f32::NAN; raw.len()];
    cal.calibrate(&segments, &raw, &mut out).unwrap();
    assert_bits_equal(&out, &hr_oracle(&case, &segments, &raw, all), "epixhr2x2");

    // Every mode and the no-mode case occurred, and in each ASIC quadrant with either trbit.
    let mut seen = [[0usize; 8]; 4];
    for (k, &s) in segments.iter().enumerate() {
        let (_, pca, trbit) = case.configs.iter().find(|c| c.0 == s).unwrap();
        for p in 0..HR_PANEL {
            let mode = oracle_mode(oracle_hr_cbits(pca, *trbit, p, raw[k * HR_PANEL + p])).unwrap_or(7);
            seen[oracle_asic(p / HR_COLS, p % HR_COLS)][mode] += 1;
        }
    }
    assert!(seen.iter().all(|a| a.iter().all(|&n| n > 0)), "{seen:?}");
}

#[test]
fn epixhr2x2_fallbacks_and_mask_of_first_five_ranges() {
    let case = hr_case(11);
    let segments = [0u32];
    let raw = hr_raw(1, 12);
    for with in [(false, true, true), (true, false, true), (true, true, false), (false, false, false)] {
        let cal = hr_calibrator(&case, with);
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
        assert_bits_equal(&out, &hr_oracle(&case, &segments, &raw, with), &format!("epixhr2x2 {with:?}"));
    }

    // det.raw._mask() for daq segments [1, 0]: ranges 0–4 only.
    let cal = hr_calibrator(&case, (true, true, true));
    let mut mask = vec![7u8; 2 * HR_PANEL];
    cal.mask(&[1, 0], &mut mask).unwrap();
    let at = |g: usize, s: usize, p: usize| (g * HR_NSEG + s) * HR_PANEL + p;
    let status = &case.status;
    let oracle: Vec<u8> = [1usize, 0]
        .iter()
        .flat_map(|&s| (0..HR_PANEL).map(move |p| u8::from((0..5).all(|g| status[at(g, s, p)] == 0))))
        .collect();
    assert_eq!(mask, oracle);
    // Pixels bad only in ranges 5–6 exist and stay good.
    let only_late = (0..HR_PANEL).filter(|&p| (0..5).all(|g| case.status[at(g, 0, p)] == 0) && (5..7).any(|g| case.status[at(g, 0, p)] != 0));
    assert!(only_late.count() > 0);
}

#[test]
fn epixhr2x2_trbit_quadrants() {
    // asicPixelConfig 12 everywhere: trbit 1 → FH (index 0), trbit 0 → FM (index 1), whatever
    // bit 15 says. Pedestals 10 (FH) and 20 (FM), gain 1: calib = adu − 10 or adu − 20.
    let spec = DetectorSpec::new("epixhr", DetectorKind::Epixhr2x2).unwrap();
    let mut set = DetectorConstants::new(spec);
    let peds: Vec<f32> = (0..7).flat_map(|g| std::iter::repeat_n(10.0 * (g + 1) as f32, HR_PANEL)).collect();
    set.insert(CalibType::Pedestals, f32s(&[7, 1, HR_ROWS, HR_COLS], &peds), origin("pedestals")).unwrap();
    let mut rng = Rng(21);
    let raw: Vec<u16> = (0..HR_PANEL).map(|_| 1000 | (rng.below(4) as u16) << 14).collect();
    // One-hot trbit per ASIC, then all and none.
    let quadrant = |asic: usize| -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        match asic {
            1 => (0..144, 0..192),
            3 => (0..144, 192..384),
            0 => (144..288, 0..192),
            _ => (144..288, 192..384),
        }
    };
    for trbit in [[1u8, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]] {
        let configs = [(0u32, Epix10kaConfig::HrAsics { asic_pixel_config: vec![12; HR_PANEL], trbit })];
        let cal = Calibrator::new(&set, &configs).unwrap();
        let mut out = vec![0f32; HR_PANEL];
        cal.calibrate(&[0], &raw, &mut out).unwrap();
        for (p, &v) in out.iter().enumerate() {
            let (r, c) = (p / HR_COLS, p % HR_COLS);
            let fh = (0..4).any(|a| trbit[a] != 0 && quadrant(a).0.contains(&r) && quadrant(a).1.contains(&c));
            assert_eq!(v, if fh { 990.0 } else { 980.0 }, "trbit {trbit:?} pixel ({r}, {c})");
        }
    }
}


#[test]
fn epixhr2x2_common_mode_halves_of_144_banks_of_48() {
    let case = hr_case(31);
    let mut cal = hr_calibrator(&case, (true, true, true));
    let segment = 1u32;
    let (_, pca, trbit) = case.configs.iter().find(|c| c.0 == segment).unwrap();
    let at = |g: usize, p: usize| (g * HR_NSEG + segment as usize) * HR_PANEL + p;
    // Bit 15 on a tenth of the pixels, bit 14 on random others (ignored); ADU near the pixel's
    // pedestal plus an offset per (row, bank) of up to ±60.
    let mut rng = Rng(32);
    let bits: Vec<u16> = (0..HR_PANEL).map(|_| (if rng.below(10) == 0 { 0x8000 } else { 0 }) | (rng.below(2) as u16) << 14).collect();
    let mode_of = |p: usize| oracle_mode(oracle_hr_cbits(pca, *trbit, p, bits[p]));
    let base = |p: usize| mode_of(p).map_or(0.0, |i| case.peds[at(i, p)]);
    let raw: Vec<u16> = (0..HR_PANEL)
        .map(|p| {
            let (r, c) = (p / HR_COLS, p % HR_COLS);
            let offset = ((r * 7 + (c / 48) * 13) % 121) as f32 - 60.0;
            bits[p] | (base(p) + offset + rng.uniform(-3.0, 3.0)).clamp(0.0, 16383.0) as u16
        })
        .collect();
    for (alg, mode, cormax) in [(7i64, 7u32, 45.0f32), (0, 7, 45.0), (7, 1, 1000.0), (7, 2, 1000.0), (7, 4, 1000.0)] {
        cal.set_common_mode(Some(CommonMode { alg, mode, cormax: cormax as f64, npix_min: 10 })).unwrap();
        let mut out = vec![0f32; HR_PANEL];
        cal.calibrate(&[segment], &raw, &mut out).unwrap();

        let good_status = |p: usize| (0..5).all(|g| case.status[at(g, p)] == 0);
        // alg 7 uses and corrects the good pixels in modes FH, FM, AHL_H, AML_M.
        let good: Vec<bool> = (0..HR_PANEL).map(|p| good_status(p) && (alg != 7 || matches!(mode_of(p), Some(0 | 1 | 3 | 4)))).collect();
        let mut arrf: Vec<f32> = (0..HR_PANEL).map(|p| (raw[p] & 0x3fff) as f32 - base(p)).collect();
        let counts = oracle_common_mode(&mut arrf, &good, HR_ROWS, HR_COLS, 8, mode, cormax, 10);
        assert!(counts[0] > 0 && (cormax > 100.0 || counts[1] > 0), "applied / over cormax / too few: {counts:?}");
        let oracle: Vec<f32> = (0..HR_PANEL)
            .map(|p| {
                let factor = mode_of(p).map_or(1.0, |i| {
                    let g = case.gain[at(i, p)];
                    if g != 0.0 { 1.0 / g } else { 0.0 }
                });
                arrf[p] * factor * if good_status(p) { 1.0 } else { 0.0 }
            })
            .collect();
        assert_bits_equal(&out, &oracle, &format!("epixhr2x2 common mode alg {alg} mode {mode}"));
    }
}

#[test]
fn epixhr2x2_config_records_and_config_errors() {
    // from_fields picks the variant from the detector kind.
    let fields = |name: &str| match name {
        "asicPixelConfig" => Some(vec![8i64; HR_PANEL]),
        "trbit" => Some(vec![1, 0, 1, 0]),
        _ => None,
    };
    assert_eq!(
        Epix10kaConfig::from_fields(DetectorKind::Epixhr2x2, fields),
        Some(Epix10kaConfig::HrAsics { asic_pixel_config: vec![8; HR_PANEL], trbit: [1, 0, 1, 0] })
    );
    assert!(matches!(Epix10kaConfig::from_fields(DetectorKind::Epix10ka, fields), Some(Epix10kaConfig::Asics { .. })));
    assert_eq!(Epix10kaConfig::from_fields(DetectorKind::Archon, fields), None);
    assert_eq!(Epix10kaConfig::from_fields(DetectorKind::Epixhr2x2, |_| None), None);

    let hr = DetectorSpec::new("epixhr", DetectorKind::Epixhr2x2).unwrap();
    let set = DetectorConstants::new(hr.clone());
    // A config of the wrong size names the field and the expected count.
    let short = [(0u32, Epix10kaConfig::HrAsics { asic_pixel_config: vec![8; 1000], trbit: [0; 4] })];
    let e = Calibrator::new(&set, &short).err().unwrap().to_string();
    assert!(e.contains("epixhr") && e.contains("asicPixelConfig has 1000 values") && e.contains("110592"), "{e}");
    // An epix10ka record for an epixhr2x2 and the reverse.
    let epix10ka_record = [(0u32, Epix10kaConfig::Asics { asic_pixel_config: vec![8; 4 * 176 * 192], trbit: [0; 4] })];
    let e = Calibrator::new(&set, &epix10ka_record).err().unwrap().to_string();
    assert!(e.contains("epixhr") && e.contains("epix10ka config record"), "{e}");
    let quad = DetectorConstants::new(DetectorSpec::new("epixquad", DetectorKind::Epix10ka).unwrap());
    let hr_record = [(0u32, Epix10kaConfig::HrAsics { asic_pixel_config: vec![8; HR_PANEL], trbit: [0; 4] })];
    let e = Calibrator::new(&quad, &hr_record).err().unwrap().to_string();
    assert!(e.contains("epixquad") && e.contains("epixhr2x2 config record"), "{e}");
    // A daq segment without a config is a frame error.
    let cal = Calibrator::new(&set, &hr_record).unwrap();
    let (raw, mut out) = (vec![0u16; HR_PANEL], vec![0f32; HR_PANEL]);
    assert!(matches!(cal.calibrate(&[3], &raw, &mut out), Err(CalibError::Config { segment: 3, .. })));
}

// ---------------------------------------------------------------- Archon (§3.5)

const AR_COLS: usize = 4800;

/// psana's Archon calib written from §3.5: `cal = f32(raw) − ped`; with common mode, for each row
/// and bank b, `cal[r, 300b .. 300b+300] −= median(cal[r, 300b+264 .. 300b+300])` (the 36 fake
/// columns follow the 264 real ones); then `cal *= f32(gainfact)` unless gainfact is 1.
fn archon_oracle(raw: &[u16], peds: &[f32], common_mode: bool, gainfact: f64) -> Vec<f32> {
    let mut cal: Vec<f32> = raw.iter().zip(peds).map(|(&r, &p)| r as f32 - p).collect();
    if common_mode {
        for r in 0..raw.len() / AR_COLS {
            for b in 0..16 {
                let start = r * AR_COLS + 300 * b;
                let m = oracle_median(cal[start + 264..start + 300].to_vec());
                for v in &mut cal[start..start + 300] {
                    *v -= m;
                }
            }
        }
    }
    if gainfact != 1.0 {
        cal.iter_mut().for_each(|v| *v *= gainfact as f32);
    }
    cal
}

fn archon_constants(rows: usize, peds: &[f32]) -> DetectorConstants {
    let spec = DetectorSpec::with_panel("archon", DetectorKind::Archon, (rows, AR_COLS));
    let mut set = DetectorConstants::new(spec);
    set.insert(CalibType::Pedestals, f32s(&[rows, AR_COLS], peds), origin("pedestals")).unwrap();
    set
}

#[test]
fn archon_common_mode_from_fake_columns_and_gainfact() {
    let rows = 6;
    let mut rng = Rng(41);
    let peds: Vec<f32> = (0..rows * AR_COLS).map(|_| rng.uniform(800.0, 1200.0)).collect();
    // A common offset per (row, bank) of up to ±80 ADU, noise, and signal on some real pixels.
    let raw: Vec<u16> = (0..rows * AR_COLS)
        .map(|i| {
            let (r, c) = (i / AR_COLS, i % AR_COLS);
            let offset = ((r * 29 + (c / 300) * 17) % 161) as f32 - 80.0;
            let signal = if c % 300 < 264 && rng.below(20) == 0 { rng.uniform(0.0, 5000.0) } else { 0.0 };
            (peds[i] + offset + signal + rng.uniform(-4.0, 4.0)) as u16
        })
        .collect();
    let mut cal = Calibrator::new(&archon_constants(rows, &peds), &[]).unwrap();
    assert!(cal.fallbacks().is_empty());
    let mut out = vec![f32::NAN; raw.len()];
    // Default: common mode on (psana's cmpars (1,0,0)), gainfact 3.65.
    cal.calibrate(&[0], &raw, &mut out).unwrap();
    assert_bits_equal(&out, &archon_oracle(&raw, &peds, true, 3.65), "archon default");
    // Any cmpars turns it on, even mode 0 (psana: `if cmpars is not None`); None turns it off.
    cal.set_common_mode(Some(CommonMode { alg: 1, mode: 0, cormax: 0.0, npix_min: 10 })).unwrap();
    cal.calibrate(&[0], &raw, &mut out).unwrap();
    assert_bits_equal(&out, &archon_oracle(&raw, &peds, true, 3.65), "archon cmpars (1,0,0)");
    cal.set_common_mode(None).unwrap();
    cal.calibrate(&[0], &raw, &mut out).unwrap();
    assert_bits_equal(&out, &archon_oracle(&raw, &peds, false, 3.65), "archon no common mode");

    // gainfact 1 skips the multiplication; another value multiplies as f32.
    let constants = archon_constants(rows, &peds);
    for (common_mode, gainfact) in [(false, 1.0), (true, 1.0), (true, 2.5)] {
        let mut c = archon::ArchonCalibrator::new(&constants).unwrap();
        c.set_gainfact(gainfact);
        c.set_common_mode(common_mode.then_some(CommonMode { alg: 1, mode: 0, cormax: 0.0, npix_min: 10 }));
        c.calibrate(&[0], &raw, &mut out).unwrap();
        assert_bits_equal(&out, &archon_oracle(&raw, &peds, common_mode, gainfact), &format!("archon cm {common_mode} gainfact {gainfact}"));
    }
    // Without common mode and gainfact 1: exactly raw − pedestals.
    let plain: Vec<f32> = raw.iter().zip(&peds).map(|(&r, &p)| r as f32 - p).collect();
    let mut c = archon::ArchonCalibrator::new(&constants).unwrap();
    c.set_gainfact(1.0);
    c.set_common_mode(None);
    c.calibrate(&[0], &raw, &mut out).unwrap();
    assert_bits_equal(&out, &plain, "archon raw − pedestals");
    // The mask is all good (psana's Archon has none).
    let mut mask = vec![0u8; raw.len()];
    cal.mask(&[0], &mut mask).unwrap();
    assert!(mask.iter().all(|&m| m == 1));
}

#[test]
fn archon_even_count_median_of_the_last_36_columns() {
    // Pedestals 0; in every bank the 264 real columns read 1000 and the 36 fake ones
    // 100..=135 in a scrambled order: the median is (117 + 118) / 2 = 117.5, not a sample,
    // and taking the first 36 columns instead would give 1000.
    let rows = 2;
    let peds = vec![0f32; rows * AR_COLS];
    let raw: Vec<u16> = (0..rows * AR_COLS)
        .map(|i| {
            let k = i % 300;
            if k < 264 { 1000 } else { 100 + ((k - 264) * 7 % 36) as u16 }
        })
        .collect();
    let mut c = archon::ArchonCalibrator::new(&archon_constants(rows, &peds)).unwrap();
    c.set_gainfact(1.0);
    let mut out = vec![0f32; raw.len()];
    c.calibrate(&[0], &raw, &mut out).unwrap();
    for (i, &v) in out.iter().enumerate() {
        let expected = raw[i] as f32 - 117.5;
        assert_eq!(v, expected, "pixel {i}");
    }
    assert_eq!(out[0], 882.5);
    // With the default gainfact: f32(882.5) × f32(3.65).
    c.set_gainfact(archon::DEFAULT_GAINFACT);
    c.calibrate(&[0], &raw, &mut out).unwrap();
    assert_eq!(out[300].to_bits(), (882.5f32 * 3.65f32).to_bits());
}

#[test]
fn archon_f64_pedestals_compute_in_f64() {
    // numpy: u16 − float64 is float64; the result is rounded to f32 once at the end.
    let rows = 1;
    let mut rng = Rng(51);
    let peds: Vec<f64> = (0..AR_COLS).map(|_| rng.uniform(100.0, 200.0) as f64 + 1e-9).collect();
    let raw: Vec<u16> = (0..AR_COLS).map(|_| 150 + rng.below(100) as u16).collect();
    let spec = DetectorSpec::with_panel("archon", DetectorKind::Archon, (rows, AR_COLS));
    let mut set = DetectorConstants::new(spec);
    set.insert(CalibType::Pedestals, NdArray::new(vec![rows, AR_COLS], Elements::F64(peds.clone())), origin("p")).unwrap();
    let cal = Calibrator::new(&set, &[]).unwrap();
    let mut out = vec![0f32; AR_COLS];
    cal.calibrate(&[0], &raw, &mut out).unwrap();
    let mut cal64: Vec<f64> = raw.iter().zip(&peds).map(|(&r, &p)| r as f64 - p).collect();
    for b in 0..16 {
        let mut fake = cal64[300 * b + 264..300 * b + 300].to_vec();
        fake.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let m = (fake[17] + fake[18]) / 2.0;
        cal64[300 * b..300 * b + 300].iter_mut().for_each(|v| *v -= m);
    }
    let oracle: Vec<f32> = cal64.iter().map(|&v| (v * 3.65) as f32).collect();
    assert_bits_equal(&out, &oracle, "archon f64");
}

#[test]
fn archon_image_drops_fake_columns() {
    let rows = 3;
    let frame: Vec<f32> = (0..rows * AR_COLS).map(|i| i as f32).collect();
    let image = archon::image("archon", rows, &frame).unwrap();
    assert_eq!(image.len(), rows * 4224);
    // Image column j of bank j / 264 is raw column 300 (j / 264) + j % 264.
    for r in 0..rows {
        for j in 0..4224 {
            let c = 300 * (j / 264) + j % 264;
            assert_eq!(image[r * 4224 + j], (r * AR_COLS + c) as f32, "row {r} col {j}");
        }
    }
    let columns: Vec<usize> = archon::image_columns().collect();
    assert_eq!(columns.len(), 4224);
    assert_eq!((columns[263], columns[264], columns[4223]), (263, 300, 4763));
    assert!(columns.iter().all(|&c| !archon::is_fake_column(c)));
    assert_eq!((0..AR_COLS).filter(|&c| archon::is_fake_column(c)).count(), 16 * 36);
    // A frame of the wrong size is an error naming the detector and the expected size.
    let e = archon::image("archon", rows, &frame[..100]).unwrap_err();
    assert_eq!(e, CalibError::RawSize { detector: "archon".into(), found: 100, segments: 1, panel: rows * AR_COLS, expected: rows * AR_COLS });
}

// ---------------------------------------------------------------- bad input

#[test]
fn bad_raw_and_constant_shapes_are_typed_errors() {
    // epixhr2x2: raw of 1.5 panels, output of the wrong size.
    let case = hr_case(61);
    let cal = hr_calibrator(&case, (true, true, true));
    let raw = vec![0u16; HR_PANEL + HR_PANEL / 2];
    let mut out = vec![0f32; raw.len()];
    let e = cal.calibrate(&[0], &raw, &mut out).unwrap_err();
    assert_eq!(e, CalibError::RawSize { detector: "epixhr".into(), found: raw.len(), segments: 1, panel: HR_PANEL, expected: HR_PANEL });
    assert!(e.to_string().contains("epixhr") && e.to_string().contains("110592"), "{e}");
    let raw = vec![0u16; HR_PANEL];
    let e = cal.calibrate(&[0], &raw, &mut out).unwrap_err();
    assert!(matches!(e, CalibError::OutSize { .. }), "{e}");
    // Segment 2 is beyond the constants' two.
    let mut out = vec![0f32; HR_PANEL];
    assert!(matches!(cal.calibrate(&[2], &raw, &mut out), Err(CalibError::SegmentOutOfRange { nseg: 2, .. })));

    // epixhr2x2 pedestals with epix10ka panels: the shape error names the expected shape.
    let mut set = DetectorConstants::new(DetectorSpec::new("epixhr", DetectorKind::Epixhr2x2).unwrap());
    let wrong = NdArray::new(vec![7, 1, 352, 384], Elements::F32(vec![0.0; 7 * 352 * 384]));
    let e = set.insert(CalibType::Pedestals, wrong, origin("pedestals")).unwrap_err();
    assert!(matches!(e, ConstantError::Shape { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("epixhr") && e.contains("(7, 1, 352, 384)") && e.contains("288, 384)"), "{e}");

    // Archon: pedestals not shaped as the raw frame.
    let mut set = DetectorConstants::new(DetectorSpec::with_panel("archon", DetectorKind::Archon, (4, AR_COLS)));
    let wrong = NdArray::new(vec![4, 4224], Elements::F32(vec![0.0; 4 * 4224]));
    let e = set.insert(CalibType::Pedestals, wrong, origin("pedestals")).unwrap_err().to_string();
    assert!(e.contains("archon") && e.contains("(4, 4224)") && e.contains("(4, 4800)"), "{e}");
    // Archon without pedestals: psana fails (KeyError); here a typed error.
    let e = Calibrator::new(&set, &[]).err().unwrap().to_string();
    assert!(e.contains("archon") && e.contains("no pedestals") && e.contains("(4, 4800)"), "{e}");
    // A frame that is not 4800 columns wide.
    let set = DetectorConstants::new(DetectorSpec::with_panel("archon", DetectorKind::Archon, (4, 4224)));
    let e = Calibrator::new(&set, &[]).err().unwrap().to_string();
    assert!(e.contains("archon") && e.contains("(nrows, 4800)") && e.contains("(4, 4224)"), "{e}");
    // Archon raw of the wrong size.
    let peds = vec![0f32; 4 * AR_COLS];
    let cal = Calibrator::new(&archon_constants(4, &peds), &[]).unwrap();
    let raw = vec![0u16; 3 * AR_COLS];
    let mut out = vec![0f32; raw.len()];
    let e = cal.calibrate(&[0], &raw, &mut out).unwrap_err();
    assert_eq!(e, CalibError::RawSize { detector: "archon".into(), found: 3 * AR_COLS, segments: 1, panel: 4 * AR_COLS, expected: 4 * AR_COLS });
}
