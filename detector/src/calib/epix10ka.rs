//! epix10ka (spec §3.2): seven gain modes from per-pixel control bits — pixel config bits 3–2
//! and trbit (bit 4) from the segment's config, the data's gain bit 14 as bit 5.
//! `out = (f32(raw & 0x3fff) − ped[i]) × (1/gain[i]) × mask`; no mode → ped 0, factor 1.
//! The epixhr2x2 (§3.3) shares the formula with its own panel, config and gain bit 15
//! (`super::epixhr2x2`); a [`Layout`] tells the two apart.

use super::common_mode::{self, CommonMode, PanelBanks};
use super::epixhr2x2;
use super::real::{all_f32, Real};
use super::{Fallback, SegmentIndex};
use crate::calib::mask::calib_mask;
use crate::constants::{CalibType, DetectorConstants, DetectorKind, FloatValues};
use crate::error::{CalibError, ConstantError};

pub const ROWS: usize = 352;
pub const COLS: usize = 384;
const ASIC_ROWS: usize = 176;
const ASIC_COLS: usize = 192;
/// Pixels per gain-bit check: the fast pass computes a group with data bit 0's constants; only
/// a group holding a pixel with the gain bit set is looked at again, line by line.
const GROUP: usize = 16;
/// Pixels per [`Set1`] (one cache line of f32 constants).
const LINE: usize = 8;
/// Pixels streamed between two looks for set gain bits.
const BLOCK: usize = 2048;

/// The config values calibration needs for one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Epix10kaConfig {
    /// raw 2.0.1: `asicPixelConfig` `(4, 176, 192)` and `trbit` `(4,)`.
    Asics { asic_pixel_config: Vec<u8>, trbit: [u8; 4] },
    /// raw 3.0.1: `cbitsConfig`, panel-shaped `(352, 384)`, trbit already in bit 4.
    Panel { cbits: Vec<u8> },
    /// epixhr2x2 raw 2.0.1: `asicPixelConfig` flat 110592 values in panel order `(288, 384)`
    /// and `trbit` `(4,)`.
    HrAsics { asic_pixel_config: Vec<u8>, trbit: [u8; 4] },
}

/// What differs between the epix10ka and the epixhr2x2 besides the config: the data's gain bit
/// (its value becomes control bit 5) and the panel with its common-mode banks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub gain_bit: u32,
    pub banks: PanelBanks,
}

/// epix10ka common mode: two row halves of 176, 8 banks of 48 columns.
const EPIX10KA: Layout = Layout { gain_bit: 14, banks: PanelBanks { rows: ROWS, cols: COLS, banks: 8 } };

/// The panel's control bits without the data bit (psana's `cbits_config_epix10ka`): ASICs 2 and
/// 1 rotated by 180° on top, 3 and 0 as they are below; `& 12`; trbit per ASIC quadrant.
/// An epixhr2x2 config goes to `epixhr2x2::control_bits`.
pub fn control_bits(config: &Epix10kaConfig) -> Result<Vec<u8>, String> {
    match config {
        Epix10kaConfig::HrAsics { asic_pixel_config, trbit } => epixhr2x2::control_bits(asic_pixel_config, trbit),
        Epix10kaConfig::Panel { cbits } => {
            if cbits.len() != ROWS * COLS {
                return Err(format!("cbitsConfig has {} values, expected 352×384 = {}", cbits.len(), ROWS * COLS));
            }
            Ok(cbits.clone())
        }
        Epix10kaConfig::Asics { asic_pixel_config: pca, trbit } => {
            let asic = ASIC_ROWS * ASIC_COLS;
            if pca.len() != 4 * asic {
                return Err(format!("asicPixelConfig has {} values, expected 4×176×192 = {}", pca.len(), 4 * asic));
            }
            let at = |a: usize, r: usize, c: usize| pca[a * asic + r * ASIC_COLS + c];
            let mut cbits = vec![0u8; ROWS * COLS];
            for r in 0..ROWS {
                for c in 0..COLS {
                    let (top, left) = (r < ASIC_ROWS, c < ASIC_COLS);
                    let (rr, cc) = (r % ASIC_ROWS, c % ASIC_COLS);
                    let (bits, asic_index) = match (top, left) {
                        (true, true) => (at(2, ASIC_ROWS - 1 - rr, ASIC_COLS - 1 - cc), 2),
                        (true, false) => (at(1, ASIC_ROWS - 1 - rr, ASIC_COLS - 1 - cc), 1),
                        (false, true) => (at(3, rr, cc), 3),
                        (false, false) => (at(0, rr, cc), 0),
                    };
                    cbits[r * COLS + c] = (bits & 12) | if trbit[asic_index] != 0 { 16 } else { 0 };
                }
            }
            Ok(cbits)
        }
    }
}

/// The gain-mode index of control bits `c` (first matching test wins), `None` for no mode.
/// 0 FH, 1 FM, 2 FL, 3 AHL_H, 4 AML_M, 5 AHL_L, 6 AML_L.
pub fn gain_mode_index(c: u8) -> Option<usize> {
    Some(if c & 28 == 28 {
        0
    } else if c & 28 == 12 {
        1
    } else if c & 12 == 8 {
        2
    } else if c & 60 == 16 {
        3
    } else if c & 60 == 0 {
        4
    } else if c & 60 == 48 {
        5
    } else if c & 60 == 32 {
        6
    } else {
        return None;
    })
}

/// One segment's constants per pixel for data bit 0 and 1, and its mask, in precision `T`.
struct SegmentTables<T> {
    /// Data bit 0: pedestal and factor, two streams (all a pixel without the gain bit reads).
    ped0: Vec<T>,
    factor0: Vec<T>,
    /// Data bit 1, by line of [`LINE`] pixels: a pixel with the gain bit set reads one line.
    set1: Vec<Set1<T>>,
    /// Per line: whether any of its pixels has other constants for data bit 1 (fixed-gain
    /// modes have the same): a line that does not is never recomputed.
    matters: Vec<bool>,
    /// 1 good, 0 bad; multiplied after the factor as psana does (not folded into it, which
    /// would differ where `arrf × factor` overflows).
    mask: Vec<u8>,
    /// The pixels whose mask is 0: the fast pass computes every pixel as good, then these again.
    bad: Vec<u32>,
    /// Per data bit: the pixel's mode is FH, FM, AHL_H or AML_M (common-mode alg 7's pixels).
    high_or_medium: [Vec<bool>; 2],
}

/// Data bit 1's pedestals and factors of [`LINE`] pixels, on a cache-line boundary.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Set1<T> {
    ped: [T; LINE],
    factor: [T; LINE],
}

impl<T: Real> SegmentTables<T> {
    /// psana's formula for pixel `i` of word `x` and mask `m`, gain bit `BIT`.
    #[inline(always)]
    fn formula<const BIT: u32>(&self, x: u16, i: usize, m: u8) -> f32 {
        let (p, f) = self.constants((x >> BIT) as usize & 1, i);
        (((T::from_u16(x & 0x3fff) - p) * f) * T::from_u8(m)).to_f32()
    }

    /// Pedestal and factor of pixel `i` for data bit `set`.
    fn constants(&self, set: usize, i: usize) -> (T, T) {
        match set {
            0 => (self.ped0[i], self.factor0[i]),
            _ => {
                let g = &self.set1[i / LINE];
                (g.ped[i % LINE], g.factor[i % LINE])
            }
        }
    }
}

enum Tables {
    F32(Vec<(u32, SegmentTables<f32>)>),
    F64(Vec<(u32, SegmentTables<f64>)>),
}

/// The epix10ka's calibrator, also the epixhr2x2's (its [`Layout`] says which).
pub struct Epix10kaCalibrator {
    detector: String,
    layout: Layout,
    segments: SegmentIndex,
    tables: Tables,
    mask: Option<Vec<u8>>,
    fallbacks: Vec<Fallback>,
    common_mode: Option<CommonMode>,
}

impl Epix10kaCalibrator {
    /// Holds the constants for the daq segments given with their configs (epix10ka or epixhr2x2).
    pub fn new(constants: &DetectorConstants, configs: &[(u32, Epix10kaConfig)]) -> Result<Self, ConstantError> {
        let spec = &constants.spec;
        let other = |message: String| ConstantError::Other { detector: spec.name.clone(), message };
        let layout = match spec.kind {
            DetectorKind::Epix10ka => EPIX10KA,
            DetectorKind::Epixhr2x2 => epixhr2x2::LAYOUT,
            kind => return Err(other(format!("a {kind} is not an epix10ka nor an epixhr2x2"))),
        };
        let (rows, cols) = (layout.banks.rows, layout.banks.cols);
        if spec.panel != (rows, cols) {
            return Err(other(format!("a {} panel is {rows}×{cols}, not {}×{}", spec.kind, spec.panel.0, spec.panel.1)));
        }
        let panel = spec.panel_pixels();
        let segments = SegmentIndex { detector: spec.name.clone(), nseg: constants.nseg(), panel };
        let mask = calib_mask(constants)?;
        let peds = constants.get(CalibType::Pedestals).map(|c| c.array.to_float());
        let gain = constants.get(CalibType::PixelGain).map(|c| c.array.to_float());
        let mut fallbacks = Vec::new();
        if peds.is_none() {
            fallbacks.push(Fallback::NoPedestalSubtraction);
        }
        if gain.is_none() {
            fallbacks.push(Fallback::GainOne);
        }
        if mask.is_none() {
            fallbacks.push(Fallback::MaskAllGood);
        }
        let mut cbits = Vec::with_capacity(configs.len());
        for (segment, config) in configs {
            segments.range(*segment).map_err(|e| other(e.to_string()))?;
            let for_hr = matches!(config, Epix10kaConfig::HrAsics { .. });
            if for_hr != (spec.kind == DetectorKind::Epixhr2x2) {
                let which = if for_hr { "an epixhr2x2" } else { "an epix10ka" };
                return Err(other(format!("config of segment {segment}: {which} config record for a {}", spec.kind)));
            }
            let bits = control_bits(config).map_err(|m| other(format!("config of segment {segment}: {m}")))?;
            cbits.push((*segment, bits));
        }
        let inputs = Inputs { peds: peds.as_ref(), gain: gain.as_ref(), mask: mask.as_deref(), nseg: constants.nseg().unwrap_or(1), panel };
        let tables = if all_f32(&[inputs.peds, inputs.gain]) {
            Tables::F32(cbits.iter().map(|(s, c)| (*s, inputs.segment_tables(*s, c))).collect())
        } else {
            Tables::F64(cbits.iter().map(|(s, c)| (*s, inputs.segment_tables(*s, c))).collect())
        };
        Ok(Epix10kaCalibrator { detector: spec.name.clone(), layout, segments, tables, mask, fallbacks, common_mode: None })
    }

    /// psana's common mode (`cmpars`; the DB's 1-D `common_mode` makes psana fail, §3.2):
    /// medians subtracted from `raw − pedestal` before the gain. `None` or mode 0: off.
    pub fn set_common_mode(&mut self, cm: Option<CommonMode>) {
        self.common_mode = cm.filter(|c| c.mode != 0);
    }

    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// Calibrates a frame of the daq `segments` (each must have had its config at `new`).
    pub fn calibrate(&self, segments: &[u32], raw: &[u16], out: &mut [f32]) -> Result<(), CalibError> {
        let (bit, banks) = (self.layout.gain_bit, self.layout.banks);
        for (segment, raw, out) in super::panels(&self.detector, self.segments.panel, segments, raw, out)? {
            // The gain bit is a constant of each loop so the bit tests stay immediate.
            match (&self.tables, &self.common_mode, bit) {
                (Tables::F32(t), None, 14) => calibrate_panel::<_, 14>(self.find(t, segment)?, raw, out),
                (Tables::F64(t), None, 14) => calibrate_panel::<_, 14>(self.find(t, segment)?, raw, out),
                (Tables::F32(t), None, _) => calibrate_panel::<_, 15>(self.find(t, segment)?, raw, out),
                (Tables::F64(t), None, _) => calibrate_panel::<_, 15>(self.find(t, segment)?, raw, out),
                (Tables::F32(t), Some(cm), _) => calibrate_panel_common_mode(self.find(t, segment)?, cm, banks, bit, raw, out),
                (Tables::F64(t), Some(cm), _) => calibrate_panel_common_mode(self.find(t, segment)?, cm, banks, bit, raw, out),
            }
        }
        Ok(())
    }

    /// The default mask of the daq `segments` (1 good), all ones without status constants.
    pub fn mask(&self, segments: &[u32], out: &mut [u8]) -> Result<(), CalibError> {
        super::daq_mask(&self.segments, self.mask.as_deref(), segments, out)
    }

    fn find<'a, T>(&self, tables: &'a [(u32, SegmentTables<T>)], segment: u32) -> Result<&'a SegmentTables<T>, CalibError> {
        self.segments.range(segment)?;
        tables.iter().find(|(s, _)| *s == segment).map(|(_, t)| t).ok_or_else(|| CalibError::Config {
            detector: self.detector.clone(),
            segment,
            message: "no config for this segment in the Configure".into(),
        })
    }
}

struct Inputs<'a> {
    peds: Option<&'a FloatValues>,
    gain: Option<&'a FloatValues>,
    mask: Option<&'a [u8]>,
    nseg: usize,
    panel: usize,
}

impl Inputs<'_> {
    /// Per pixel of `segment`: the mode index for data bit 0 (`c`) and 1 (`c | 32`) picks
    /// `pedestals[i]` and `1/pixel_gain[i]` (protected), ped 0 and factor 1 for no mode.
    fn segment_tables<T: Real>(&self, segment: u32, cbits: &[u8]) -> SegmentTables<T> {
        let base = segment as usize * self.panel;
        let range_stride = self.nseg * self.panel;
        let peds = self.peds.map(T::from_values);
        let factors: Option<Vec<T>> = self.gain.map(|g| T::from_values(g).into_iter().map(T::inverse_protected).collect());
        let for_bit = |bit: u8| {
            let mut ped = Vec::with_capacity(self.panel);
            let mut factor = Vec::with_capacity(self.panel);
            let mut high_or_medium = Vec::with_capacity(self.panel);
            for (p, &c) in cbits.iter().enumerate() {
                let index = gain_mode_index(c | bit);
                high_or_medium.push(matches!(index, Some(0 | 1 | 3 | 4)));
                match index {
                    Some(i) => {
                        let at = i * range_stride + base + p;
                        ped.push(peds.as_ref().map_or(T::ZERO, |v| v[at]));
                        factor.push(factors.as_ref().map_or(T::ONE, |v| v[at]));
                    }
                    None => {
                        ped.push(T::ZERO);
                        factor.push(T::ONE);
                    }
                }
            }
            (ped, factor, high_or_medium)
        };
        let (ped0, factor0, hm0) = for_bit(0);
        let (ped1, factor1, hm1) = for_bit(32);
        let mask = match self.mask {
            Some(m) => m[base..base + self.panel].to_vec(),
            None => vec![1; self.panel],
        };
        let set1 = (0..self.panel.div_ceil(LINE))
            .map(|k| {
                let at = |v: &[T], i: usize| v.get(k * LINE + i).copied().unwrap_or(T::ZERO);
                Set1 { ped: std::array::from_fn(|i| at(&ped1, i)), factor: std::array::from_fn(|i| at(&factor1, i)) }
            })
            .collect();
        // Same bits for both data bits: the result cannot differ.
        let same = |a: T, b: T| a.to_f64().to_bits() == b.to_f64().to_bits();
        let matters = (0..self.panel.div_ceil(LINE))
            .map(|k| (k * LINE..((k + 1) * LINE).min(self.panel)).any(|i| !same(ped0[i], ped1[i]) || !same(factor0[i], factor1[i])))
            .collect();
        let bad = (0..self.panel as u32).filter(|&i| mask[i as usize] == 0).collect();
        SegmentTables { ped0, factor0, set1, matters, mask, bad, high_or_medium: [hm0, hm1] }
    }
}

/// One panel: `((raw & 0x3fff) − ped) × factor × mask` with the set chosen by gain bit `BIT`
/// (epix10ka 14, epixhr2x2 15).
///
/// Block by block: the next block's groups with a gain bit set are found without data-dependent
/// branches and their bit-1 constants prefetched; the block is computed with bit 0's constants
/// as if every pixel were good (vectorised; AVX2 when the CPU has it, the same IEEE operations
/// so the same bits); its groups with a set bit are recomputed branch-free. Last, the bad
/// pixels (a list made once) are computed again with their mask 0. `× 1` for good pixels is
/// exact, so skipping it gives psana's bits.
fn calibrate_panel<T: Real, const BIT: u32>(t: &SegmentTables<T>, raw: &[u16], out: &mut [f32]) {
    let n = raw.len();
    assert!(out.len() == n && t.ped0.len() == n && t.factor0.len() == n && t.set1.len() == n.div_ceil(LINE));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        unsafe { calibrate_panel_avx2::<T, BIT>(t, raw, out) };
        return;
    }
    calibrate_panel_body::<T, BIT>(t, raw, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn calibrate_panel_avx2<T: Real, const BIT: u32>(t: &SegmentTables<T>, raw: &[u16], out: &mut [f32]) {
    calibrate_panel_body::<T, BIT>(t, raw, out);
}

#[inline(always)]
fn calibrate_panel_body<T: Real, const BIT: u32>(t: &SegmentTables<T>, raw: &[u16], out: &mut [f32]) {
    let gain: u16 = 1 << BIT;
    let n = raw.len();
    let whole = n - n % GROUP;
    // The block's groups with a set bit and the next block's, alternately.
    let mut found = [Found::default(), Found::default()];
    found[0].find(&raw[..whole], 0, gain, t);
    let mut start = 0;
    // The next bad pixel in `t.bad`.
    let mut bad = 0;
    while start < whole {
        let end = (start + BLOCK).min(whole);
        let (a, b) = found.split_at_mut(1);
        let (this, next) = if (start / BLOCK) % 2 == 0 { (&a[0], &mut b[0]) } else { (&b[0], &mut a[0]) };
        next.find(&raw[..whole], end, gain, t);
        for at in (start..end).step_by(GROUP) {
            let r: &[u16; GROUP] = raw[at..at + GROUP].try_into().unwrap();
            let p: &[T; GROUP] = t.ped0[at..at + GROUP].try_into().unwrap();
            let f: &[T; GROUP] = t.factor0[at..at + GROUP].try_into().unwrap();
            let o: &mut [f32; GROUP] = (&mut out[at..at + GROUP]).try_into().unwrap();
            for i in 0..GROUP {
                o[i] = ((T::from_u16(r[i] & 0x3fff) - p[i]) * f[i]).to_f32();
            }
        }
        for &k in &this.lines[..this.count] {
            let at = start + k as usize * LINE;
            let r: &[u16; LINE] = raw[at..at + LINE].try_into().unwrap();
            let o: &mut [f32; LINE] = (&mut out[at..at + LINE]).try_into().unwrap();
            let s = &t.set1[at / LINE];
            for i in 0..LINE {
                let v = ((T::from_u16(r[i] & 0x3fff) - s.ped[i]) * s.factor[i]).to_f32();
                o[i] = f32::select(r[i] & gain != 0, v, o[i]);
            }
        }
        // The block's bad pixels, while its data are in L1.
        while let Some(&i) = t.bad.get(bad) {
            let i = i as usize;
            if i >= end {
                break;
            }
            // Listed because its mask is 0 (not read again: it would be a miss per pixel).
            out[i] = t.formula::<BIT>(raw[i], i, 0);
            bad += 1;
        }
        start = end;
    }
    // A partial last group: the whole formula.
    for i in whole..n {
        out[i] = t.formula::<BIT>(raw[i], i, t.mask[i]);
    }
}

/// The lines of a block holding a pixel with the gain bit set whose constants differ.
struct Found {
    lines: [u16; BLOCK / LINE],
    count: usize,
}

impl Default for Found {
    fn default() -> Self {
        Found { lines: [0; BLOCK / LINE], count: 0 }
    }
}

impl Found {
    /// Finds the lines of the block starting at `start` to recompute and prefetches their bit-1
    /// constants. Without branches on the data (where bits are set is unpredictable, and a
    /// mispredicted branch costs as much as a line from memory): an index is always written,
    /// counted only when its line is to be recomputed.
    #[inline(always)]
    fn find<T: Real>(&mut self, raw: &[u16], start: usize, gain: u16, t: &SegmentTables<T>) {
        self.count = 0;
        let end = (start + BLOCK).min(raw.len());
        if start >= end {
            return;
        }
        let mut groups = [0u16; BLOCK / GROUP];
        let mut count = 0;
        for (k, words) in raw[start..end].chunks_exact(GROUP).enumerate() {
            groups[count] = k as u16;
            count += (words.iter().fold(0u16, |a, &x| a | x) & gain != 0) as usize;
        }
        let mut lines = 0;
        for &k in &groups[..count] {
            let at = start + k as usize * GROUP;
            for (j, words) in raw[at..at + GROUP].chunks_exact(LINE).enumerate() {
                self.lines[lines] = (k as usize * (GROUP / LINE) + j) as u16;
                let set = words.iter().fold(0u16, |a, &x| a | x) & gain != 0;
                lines += (set & t.matters[at / LINE + j]) as usize;
            }
        }
        self.count = lines;
        #[cfg(target_arch = "x86_64")]
        for &k in &self.lines[..lines] {
            let line = &t.set1[start / LINE + k as usize];
            for byte in (0..size_of::<Set1<T>>()).step_by(64) {
                // SAFETY: a prefetch only hints the cache; the address is inside `line`.
                unsafe {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch::<_MM_HINT_T0>((line as *const Set1<T>).cast::<i8>().add(byte));
                }
            }
        }
    }
}

/// One panel with common mode: `arrf = (raw & 0x3fff) − ped`, medians of the selected good
/// pixels (alg 7: modes FH, FM, AHL_H, AML_M) subtracted, then `× factor × mask`.
fn calibrate_panel_common_mode<T: Real>(t: &SegmentTables<T>, cm: &CommonMode, banks: PanelBanks, bit: u32, raw: &[u16], out: &mut [f32]) {
    let set = |x: u16| ((x >> bit) & 1) as usize;
    let mut arrf: Vec<T> = raw.iter().enumerate().map(|(i, &x)| T::from_u16(x & 0x3fff) - t.constants(set(x), i).0).collect();
    let selected: Vec<bool> = raw
        .iter()
        .enumerate()
        .map(|(i, &x)| t.mask[i] != 0 && (cm.alg != 7 || t.high_or_medium[set(x)][i]))
        .collect();
    common_mode::apply(cm, banks, &mut arrf, &selected);
    for (i, &x) in raw.iter().enumerate() {
        out[i] = ((arrf[i] * t.constants(set(x), i).1) * T::from_u8(t.mask[i])).to_f32();
    }
}
