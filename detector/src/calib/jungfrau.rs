//! Jungfrau (spec §3.1, psana's default cversion 3): per pixel, gain code `raw >> 14` picks
//! range 0 (`00`), 1 (`01`) or 2 (`11`); `10` is a bad switch and gives +0.
//! `out = f32(f32(adu − po[g]) × gm[g])` with `po = ped + offset`, `gm = (1/gain) × mask`.

use super::common_mode::{self, CommonMode, PanelBanks};
use super::real::all_f32;
use super::{Fallback, SegmentIndex};
use crate::calib::mask::calib_mask;
use crate::constants::{CalibType, DetectorConstants, DetectorKind, FloatValues};
use crate::error::{CalibError, ConstantError};

/// Pixels per gain-bit check: the fast pass computes a group with range 0's constants; only a
/// group holding a switched pixel is looked at again.
const GROUP: usize = 16;

/// Ranges 1 and 2 of 4 neighbouring pixels, `[po1 × 4, gm1 × 4, po2 × 4, gm2 × 4]`: one cache
/// line, all a switched pixel needs besides the streams.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Line([f32; 16]);

/// Pixels per [`Line`].
const LINE: usize = 4;

/// The constants laid out for streaming, `(nseg, 512, 1024)` pixels: range 0's `po` and `gm` as
/// two streams (all a dark pixel reads), ranges 1 and 2 as one [`Line`] per 4 pixels.
struct Tables {
    po0: Vec<f32>,
    gm0: Vec<f32>,
    switched: Vec<Line>,
}

impl Tables {
    fn new(po: [Vec<f32>; 3], gm: [Vec<f32>; 3]) -> Tables {
        let [po0, po1, po2] = po;
        let [gm0, gm1, gm2] = gm;
        let switched = (0..po0.len().div_ceil(LINE))
            .map(|k| {
                let mut line = [0.0; 16];
                for (j, table) in [&po1, &gm1, &po2, &gm2].into_iter().enumerate() {
                    for i in 0..LINE {
                        line[j * LINE + i] = table.get(k * LINE + i).copied().unwrap_or(0.0);
                    }
                }
                Line(line)
            })
            .collect();
        Tables { po0, gm0, switched }
    }

    /// `(po, gm)` of range `g` for pixel `i`.
    fn range(&self, g: usize, i: usize) -> (f32, f32) {
        match g {
            0 => (self.po0[i], self.gm0[i]),
            _ => {
                let line = &self.switched[i / LINE].0;
                let at = 2 * (g - 1) * LINE + i % LINE;
                (line[at], line[at + LINE])
            }
        }
    }
}

/// One panel's slices of the [`Tables`] (the panel a whole number of groups).
#[derive(Clone, Copy)]
pub struct PanelTables<'a> {
    pub po0: &'a [f32],
    pub gm0: &'a [f32],
    /// Ranges 1 and 2, one [`Line`] per 4 pixels.
    pub switched: &'a [Line],
}

pub struct JungfrauCalibrator {
    detector: String,
    segments: SegmentIndex,
    /// None: no pedestals, psana returns raw unchanged.
    tables: Option<Tables>,
    mask: Option<Vec<u8>>,
    fallbacks: Vec<Fallback>,
    common_mode: Option<CommonMode>,
}

/// Jungfrau common mode: two row halves of 256, 16 banks of 64 columns.
const BANKS: PanelBanks = PanelBanks { rows: 512, cols: 1024, banks: 16 };

impl JungfrauCalibrator {
    pub fn new(constants: &DetectorConstants) -> Result<Self, ConstantError> {
        let spec = &constants.spec;
        if spec.kind != DetectorKind::Jungfrau {
            return Err(ConstantError::Other {
                detector: spec.name.clone(),
                message: format!("a {} is not a Jungfrau", spec.kind),
            });
        }
        let panel = spec.panel_pixels();
        if panel % GROUP != 0 {
            return Err(ConstantError::Other {
                detector: spec.name.clone(),
                message: format!("a Jungfrau panel of {panel} pixels is not a multiple of {GROUP}"),
            });
        }
        let segments = SegmentIndex { detector: spec.name.clone(), nseg: constants.nseg(), panel };
        let mask = calib_mask(constants)?;
        let mut fallbacks = Vec::new();
        if mask.is_none() {
            fallbacks.push(Fallback::MaskAllGood);
        }
        let Some(peds) = constants.get(CalibType::Pedestals) else {
            fallbacks.insert(0, Fallback::RawUnchanged);
            return Ok(JungfrauCalibrator { detector: spec.name.clone(), segments, tables: None, mask, fallbacks, common_mode: None });
        };
        let peds = peds.array.to_float();
        let offset = constants.get(CalibType::PixelOffset).map(|c| c.array.to_float());
        let gain = constants.get(CalibType::PixelGain).map(|c| c.array.to_float());
        if offset.is_none() {
            fallbacks.push(Fallback::OffsetZero);
        }
        if gain.is_none() {
            fallbacks.push(Fallback::GainOne);
        }
        let per_range = peds.len() / 3;
        let po = combined_offsets(&peds, offset.as_ref(), per_range);
        let gm = combined_factors(gain.as_ref(), mask.as_deref(), per_range);
        Ok(JungfrauCalibrator {
            detector: spec.name.clone(),
            segments,
            tables: Some(Tables::new(po, gm)),
            mask,
            fallbacks,
            common_mode: None,
        })
    }

    /// psana's cversion-0 common mode (`cmpars`, never from the constants for Jungfrau): medians
    /// of gain-0 good pixels, subtracted from them before the gain. `None` or mode 0: off.
    pub fn set_common_mode(&mut self, cm: Option<CommonMode>) {
        self.common_mode = cm.filter(|c| c.mode != 0);
    }

    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// Calibrates a frame of the daq `segments` (segment numbers, raw in that order).
    pub fn calibrate(&self, segments: &[u32], raw: &[u16], out: &mut [f32]) -> Result<(), CalibError> {
        for (segment, raw, out) in super::panels(&self.detector, self.segments.panel, segments, raw, out)? {
            let range = self.segments.range(segment)?;
            match &self.tables {
                None => raw.iter().zip(out).for_each(|(&r, o)| *o = r as f32),
                Some(t) => match &self.common_mode {
                    Some(cm) => {
                        let mask = self.mask.as_ref().map(|m| &m[range.clone()]);
                        calibrate_panel_common_mode(raw, t, range.start, mask, cm, out);
                    }
                    None => {
                        let panel = PanelTables {
                            po0: &t.po0[range.clone()],
                            gm0: &t.gm0[range.clone()],
                            switched: &t.switched[range.start / LINE..range.end / LINE],
                        };
                        calibrate_panel(raw, panel, out);
                    }
                },
            }
        }
        Ok(())
    }

    /// The default mask of the daq `segments` (1 good), all ones without status constants.
    pub fn mask(&self, segments: &[u32], out: &mut [u8]) -> Result<(), CalibError> {
        super::daq_mask(&self.segments, self.mask.as_deref(), segments, out)
    }
}

/// `po[g] = f32(ped[g] + offset[g])`, in f32 when both are f32, else in f64 then rounded.
fn combined_offsets(peds: &FloatValues, offset: Option<&FloatValues>, per_range: usize) -> [Vec<f32>; 3] {
    let f32_path = all_f32(&[Some(peds), offset]);
    std::array::from_fn(|g| {
        let at = g * per_range;
        (at..at + per_range)
            .map(|i| match (peds, offset) {
                (FloatValues::F32(p), Some(FloatValues::F32(o))) if f32_path => p[i] + o[i],
                (FloatValues::F32(p), None) => p[i],
                (p, Some(o)) => (p.get_f64(i) + o.get_f64(i)) as f32,
                (p, None) => p.get_f64(i) as f32,
            })
            .collect()
    })
}

/// `gm[g] = f32((1/gain[g]) × mask)` with the protected inverse; gain 1 when absent.
fn combined_factors(gain: Option<&FloatValues>, mask: Option<&[u8]>, per_range: usize) -> [Vec<f32>; 3] {
    std::array::from_fn(|g| {
        let at = g * per_range;
        (0..per_range)
            .map(|i| {
                let m = mask.map_or(1u8, |m| m[i]);
                match gain {
                    None => m as f32,
                    Some(FloatValues::F32(v)) => {
                        let x = v[at + i];
                        (if x != 0.0 { 1.0 / x } else { 0.0 }) * m as f32
                    }
                    Some(FloatValues::F64(v)) => {
                        let x = v[at + i];
                        ((if x != 0.0 { 1.0 / x } else { 0.0 }) * m as f64) as f32
                    }
                }
            })
            .collect()
    })
}

/// One panel: `raw`, its constants, `out`. Pure, allocation-free.
///
/// Block by block, the block's pixels are computed with range 0's constants in one vectorised
/// stream (AVX2 when the CPU has it: the same IEEE operations, so the same bits); then its
/// groups holding a switched pixel are recomputed branch-free from their ranges 1 and 2, whose
/// constants were prefetched while the block before streamed.
pub fn calibrate_panel(raw: &[u16], t: PanelTables, out: &mut [f32]) {
    let n = raw.len();
    assert!(
        out.len() == n && t.po0.len() == n && t.gm0.len() == n && t.switched.len() * LINE == n && n % GROUP == 0,
        "panel slices differ in length"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        unsafe { calibrate_panel_avx2(raw, t, out) };
        return;
    }
    calibrate_panel_body(raw, t, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn calibrate_panel_avx2(raw: &[u16], t: PanelTables, out: &mut [f32]) {
    calibrate_panel_body(raw, t, out);
}

/// Pixels streamed between two looks for switched pixels.
const BLOCK: usize = 2048;

#[inline(always)]
fn calibrate_panel_body(raw: &[u16], t: PanelTables, out: &mut [f32]) {
    let n = raw.len();
    // The block's switched lines and the next block's, alternately (not swapped: 1 KiB each).
    let mut found = [Switched::default(), Switched::default()];
    found[0].find(raw, 0, t.switched);
    let mut start = 0;
    while start < n {
        let end = (start + BLOCK).min(n);
        let (a, b) = found.split_at_mut(1);
        let (this, next) = if (start / BLOCK) % 2 == 0 { (&a[0], &mut b[0]) } else { (&b[0], &mut a[0]) };
        next.find(raw, end, t.switched);
        for at in (start..end).step_by(GROUP) {
            let r: &[u16; GROUP] = raw[at..at + GROUP].try_into().unwrap();
            let p: &[f32; GROUP] = t.po0[at..at + GROUP].try_into().unwrap();
            let g: &[f32; GROUP] = t.gm0[at..at + GROUP].try_into().unwrap();
            let o: &mut [f32; GROUP] = (&mut out[at..at + GROUP]).try_into().unwrap();
            for i in 0..GROUP {
                // Range 0: the gain bits are 00, the word is the adu.
                o[i] = (r[i] as f32 - p[i]) * g[i];
            }
        }
        for &k in &this.lines[..this.count] {
            let at = start + k as usize * LINE;
            let r: &[u16; LINE] = raw[at..at + LINE].try_into().unwrap();
            let o: &mut [f32; LINE] = (&mut out[at..at + LINE]).try_into().unwrap();
            switched_line(r, &t.switched[at / LINE], o);
        }
        start = end;
    }
}

/// The lines of a block holding a switched pixel (a [`Line`]: 4 pixels).
struct Switched {
    lines: [u16; BLOCK / LINE],
    count: usize,
}

impl Default for Switched {
    fn default() -> Self {
        Switched { lines: [0; BLOCK / LINE], count: 0 }
    }
}

impl Switched {
    /// Finds the lines of the block starting at `start` with a gain code other than 00, and
    /// prefetches their ranges 1 and 2. Without branches on the data: where pixels switch is
    /// unpredictable, and a mispredicted branch costs as much as a line from memory.
    #[inline(always)]
    fn find(&mut self, raw: &[u16], start: usize, switched: &[Line]) {
        self.count = 0;
        let end = (start + BLOCK).min(raw.len());
        if start >= end {
            return;
        }
        // Groups first (a dark group costs one test), then the lines of switched groups; an
        // index is always written, counted only when switched.
        let mut groups = [0u16; BLOCK / GROUP];
        let mut count = 0;
        for (k, words) in raw[start..end].chunks_exact(GROUP).enumerate() {
            groups[count] = k as u16;
            count += (words.iter().fold(0u16, |a, &x| a | x) >= 0x4000) as usize;
        }
        let mut lines = 0;
        for &k in &groups[..count] {
            let at = start + k as usize * GROUP;
            for (j, words) in raw[at..at + GROUP].chunks_exact(LINE).enumerate() {
                self.lines[lines] = (k as usize * (GROUP / LINE) + j) as u16;
                lines += (words.iter().fold(0u16, |a, &x| a | x) >= 0x4000) as usize;
            }
        }
        self.count = lines;
        #[cfg(target_arch = "x86_64")]
        for &k in &self.lines[..self.count] {
            // SAFETY: a prefetch only hints the cache; the address is in bounds.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>((&switched[start / LINE + k as usize] as *const Line).cast());
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = switched;
    }
}

/// Recomputes the pixels of a line whose gain code is not 00, branch-free: code 01 → range 1,
/// 11 → range 2, 10 (bad switch) → psana's `(adu − 0) × 0` = +0.
#[inline(always)]
fn switched_line(r: &[u16; LINE], s: &Line, o: &mut [f32; LINE]) {
    let s = &s.0;
    for i in 0..LINE {
        let x = r[i];
        let code = x >> 14;
        let high = ((code == 3) as u32).wrapping_neg();
        let p = (s[2 * LINE + i].to_bits() & high) | (s[i].to_bits() & !high);
        let g = (s[3 * LINE + i].to_bits() & high) | (s[LINE + i].to_bits() & !high);
        let v = ((x & 0x3fff) as f32 - f32::from_bits(p)) * f32::from_bits(g);
        let zero = ((code == 2) as u32).wrapping_neg();
        let v = v.to_bits() & !zero;
        let keep = ((code == 0) as u32).wrapping_neg();
        o[i] = f32::from_bits((o[i].to_bits() & keep) | (v & !keep));
    }
}

/// One panel with common mode: `adu − po[g]`, medians of gain-0 good pixels subtracted from
/// them, then `× gm[g]`; bad switches stay +0. `at`: the panel's first pixel in `t`.
fn calibrate_panel_common_mode(raw: &[u16], t: &Tables, at: usize, mask: Option<&[u8]>, cm: &CommonMode, out: &mut [f32]) {
    let range_of = |x: u16| match x >> 14 {
        0 => Some(0),
        1 => Some(1),
        3 => Some(2),
        _ => None,
    };
    let mut selected = vec![false; raw.len()];
    for (i, &x) in raw.iter().enumerate() {
        let adu = (x & 0x3fff) as f32;
        out[i] = match range_of(x) {
            Some(g) => adu - t.range(g, at + i).0,
            None => adu,
        };
        selected[i] = x >> 14 == 0 && mask.is_none_or(|m| m[i] != 0);
    }
    common_mode::apply(cm, BANKS, out, &selected);
    for (i, &x) in raw.iter().enumerate() {
        out[i] = match range_of(x) {
            Some(g) => out[i] * t.range(g, at + i).1,
            None => 0.0,
        };
    }
}
