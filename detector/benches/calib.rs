//! Calibration throughput on one core, side by side with a plain memory pass over the same
//! bytes (u16 → f32, the physical limit for this work), in one run. Prints Markdown.
//!
//! `cargo bench -p beamtime-detector --bench calib [-- jungfrau|epix10ka]` (release). Frames
//! rotate through more raw data than the caches hold (`CALIB_BENCH_RAW_MIB`, default 96 MiB per
//! case: 3× a 32 MiB L3), as a worker sees new frames; constants are held once.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use detector::constants::{CalibType, DetectorConstants, DetectorKind, DetectorSpec, Elements, NdArray};
use detector::{Calibrator, Epix10kaConfig};

/// Raw data cycled through per case unless `CALIB_BENCH_RAW_MIB` says otherwise, and the
/// fewest distinct frames.
const RAW_MIB: usize = 96;
const MIN_FRAMES: usize = 24;
const TRIAL: Duration = Duration::from_millis(400);
const TRIALS: usize = 5;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn raw_mib() -> usize {
    std::env::var("CALIB_BENCH_RAW_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(RAW_MIB)
}

/// Distinct frames of `pixels` u16 words to cycle through.
fn frame_count(pixels: usize) -> usize {
    (raw_mib() << 20).div_ceil(2 * pixels).max(MIN_FRAMES)
}

/// Frames per second of `f(frame_index)` over `frames` distinct frames: the best of several
/// trials of `TRIAL` each.
fn rate(frames: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..frames {
        f(i);
    }
    let mut best = 0f64;
    for _ in 0..TRIALS {
        let start = Instant::now();
        let mut n = 0usize;
        while start.elapsed() < TRIAL {
            for _ in 0..8 {
                f(n % frames);
                n += 1;
            }
        }
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn constants(spec: DetectorSpec, ranges: usize, nseg: usize, rng: &mut Rng, status: bool) -> DetectorConstants {
    let (r, c) = spec.panel;
    let shape = vec![ranges, nseg, r, c];
    let n = ranges * nseg * r * c;
    let origin = PathBuf::from("generated");
    let mut set = DetectorConstants::new(spec);
    let f = |rng: &mut Rng, lo, hi| NdArray::new(shape.clone(), Elements::F32((0..n).map(|_| rng.uniform(lo, hi)).collect()));
    set.insert(CalibType::Pedestals, f(rng, 1000.0, 4000.0), origin.clone()).unwrap();
    set.insert(CalibType::PixelGain, f(rng, 0.1, 40.0), origin.clone()).unwrap();
    set.insert(CalibType::PixelOffset, f(rng, -10.0, 10.0), origin.clone()).unwrap();
    if status {
        let st = (0..n).map(|i| if i % 997 == 0 { 1u64 } else { 0 }).collect();
        set.insert(CalibType::PixelStatus, NdArray::new(shape.clone(), Elements::U64(st)), origin).unwrap();
    }
    set
}

/// Jungfrau frames: dark noise around a level in gain 0, and a fraction of bright pixels in
/// clusters (gain 1/2), like scattering on a detector.
fn jungfrau_frames(rng: &mut Rng, pixels: usize, bright_per_mille: u64) -> Vec<Vec<u16>> {
    (0..frame_count(pixels))
        .map(|_| {
            let mut frame: Vec<u16> = (0..pixels).map(|_| 2000 + (rng.next() % 200) as u16).collect();
            let mut i = 0;
            while i < pixels {
                if rng.next() % 1000 < bright_per_mille {
                    // a 4-pixel spot
                    for word in frame.iter_mut().skip(i).take(4) {
                        *word = if rng.next().is_multiple_of(4) { 0xC000 | 3000 } else { 0x4000 | 9000 };
                    }
                }
                i += 4;
            }
            frame
        })
        .collect()
}

fn memory_pass(raw: &[Vec<u16>], out: &mut [f32]) -> f64 {
    rate(raw.len(), |i| {
        for (o, &r) in out.iter_mut().zip(&raw[i]) {
            *o = r as f32;
        }
        black_box(&mut *out);
    })
}

/// The least a dark frame's calibration moves: the raw words and two f32 constants per pixel
/// in, one f32 out (`(raw − a) × b` over arrays of the calibration's size, no gain logic).
fn stream_bound(raw: &[Vec<u16>], out: &mut [f32]) -> f64 {
    let a: Vec<f32> = (0..out.len()).map(|i| (i % 1000) as f32).collect();
    let b: Vec<f32> = (0..out.len()).map(|i| 1.0 / (1 + i % 77) as f32).collect();
    rate(raw.len(), |i| {
        for (((o, &r), &a), &b) in out.iter_mut().zip(&raw[i]).zip(&a).zip(&b) {
            *o = (r as f32 - a) * b;
        }
        black_box(&mut *out);
    })
}

/// [`stream_bound`] plus, per block of 2048 pixels, a read of the 64-byte line of constants of
/// each `per_line` pixels holding a word with a `gain` bit set (from `from` on; the pixels
/// before need no other constants): the bytes such a frame's calibration must move, without the
/// gain logic. Jungfrau: 4 pixels per line (ranges 1 and 2), epix10ka: 8 (data bit 1).
fn stream_and_lines_bound(raw: &[Vec<u16>], out: &mut [f32], per_line: usize, gain: u16, from: usize) -> f64 {
    let n = out.len();
    let a: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 1.0 / (1 + i % 77) as f32).collect();
    let table: Vec<[f32; 16]> = (0..n / per_line).map(|i| [i as f32; 16]).collect();
    let lines: Vec<Vec<u32>> = raw
        .iter()
        .map(|f| {
            (from / per_line..n / per_line)
                .filter(|&l| f[per_line * l..per_line * (l + 1)].iter().any(|&w| w & gain != 0))
                .map(|l| l as u32)
                .collect()
        })
        .collect();
    let mut sum = 0f32;
    let r = rate(raw.len(), |i| {
        let mut next = 0;
        for start in (0..n).step_by(2048) {
            let end = (start + 2048).min(n);
            let (o, r, a, b) = (&mut out[start..end], &raw[i][start..end], &a[start..end], &b[start..end]);
            for j in 0..o.len() {
                o[j] = (r[j] as f32 - a[j]) * b[j];
            }
            while let Some(&l) = lines[i].get(next) {
                if l as usize >= end / per_line {
                    break;
                }
                sum += table[l as usize][0];
                next += 1;
            }
        }
        black_box(&mut *out);
    });
    black_box(sum);
    r
}

fn row(what: &str, frames_per_s: f64, raw_bytes: usize, memory: f64) {
    println!(
        "| {what} | {:.0} | {:.2} | {:.2}× |",
        frames_per_s,
        frames_per_s * raw_bytes as f64 / 1e9,
        frames_per_s / memory
    );
}

fn main() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    println!("### detector: calibration on one core ({cpu})\n");
    println!(
        "{} MiB of distinct raw frames cycled per case (at least {MIN_FRAMES} frames); best of {TRIALS} trials of {} ms; ratio = calib rate / memory-pass rate (u16 → f32 over the same bytes, same run).\n",
        raw_mib(),
        TRIAL.as_millis()
    );
    println!("| work | frames/s | GB/s raw | × memory pass |");
    println!("|---|---|---|---|");

    // `cargo bench … -- jungfrau` (or `epix`): only that detector's rows.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |what: &str| only.as_deref().is_none_or(|o| what.contains(o));
    let mut rng = Rng(0x9E3779B97F4A7C15);
    if wanted("jungfrau") {
        jungfrau(&mut rng);
    }
    if wanted("epix10ka") {
        epix10ka(&mut rng);
    }
    println!("\nBudget (issue 15): ≥ 1000 Jungfrau-module frames/s per core (≥ 1 GB/s raw) and ≥ 0.4× the memory pass.");
}

fn jungfrau(rng: &mut Rng) {
    let module = 512 * 1024;
    let spec = DetectorSpec::new("jungfrau", DetectorKind::Jungfrau).unwrap();
    let cal = Calibrator::new(&constants(spec, 3, 1, rng, true), &[]).unwrap();
    let mut out = vec![0f32; module];
    let dark = jungfrau_frames(rng, module, 0);
    let memory = memory_pass(&dark, &mut out);
    row("memory pass: Jungfrau module u16 → f32", memory, module * 2, memory);
    let bound = stream_bound(&dark, &mut out);
    row("stream bound: u16 + 2 × f32 constants → f32", bound, module * 2, memory);
    for (label, per_mille) in [("dark (all gain 0)", 0), ("0.5 % of pixels switched", 5), ("5 % of pixels switched", 50)] {
        let frames = jungfrau_frames(rng, module, per_mille);
        let r = rate(frames.len(), |i| {
            cal.calibrate(&[0], &frames[i], &mut out).unwrap();
            black_box(&mut out);
        });
        row(&format!("Jungfrau module calib, {label}"), r, module * 2, memory);
        if per_mille > 0 {
            let bound = stream_and_lines_bound(&frames, &mut out, 4, 0xC000, 0);
            row(&format!("stream bound + the switched pixels' lines, {label}"), bound, module * 2, memory);
        }
    }

}

fn epix10ka(rng: &mut Rng) {
    // epix10ka 2M: 16 panels of 352×384. Auto-ranging AHL (trbit 1, pixel config 0): bit 14 on
    // bright pixels (low gain). Mixed: segments 0–7 fixed low (config 8), 8–15 auto-ranging.
    let panel = 352 * 384;
    let pixels = 16 * panel;
    let spec = DetectorSpec::new("epix10ka2m", DetectorKind::Epix10ka).unwrap();
    let set = constants(spec, 7, 16, rng, true);
    let config = |s: u32, pixel_config: u8| (s, Epix10kaConfig::Asics { asic_pixel_config: vec![pixel_config; 4 * 176 * 192], trbit: [1; 4] });
    let auto = Calibrator::new(&set, &(0..16).map(|s| config(s, 0)).collect::<Vec<_>>()).unwrap();
    let mixed = Calibrator::new(&set, &(0..16).map(|s| config(s, if s < 8 { 8 } else { 0 })).collect::<Vec<_>>()).unwrap();
    let segments: Vec<u32> = (0..16).collect();
    // Bright pixels (Jungfrau codes 01, 11) carry the epix10ka's gain bit 14.
    let frames = |rng: &mut Rng, per_mille| -> Vec<Vec<u16>> {
        jungfrau_frames(rng, pixels, per_mille)
            .into_iter()
            .map(|f| f.into_iter().map(|w| if w & 0xC000 != 0 { 0x4000 | (w & 0x3fff) } else { w }).collect())
            .collect()
    };
    let mut out = vec![0f32; pixels];
    let dark = frames(rng, 0);
    let memory = memory_pass(&dark, &mut out);
    row("memory pass: epix10ka 2M u16 → f32", memory, pixels * 2, memory);
    let bound = stream_bound(&dark, &mut out);
    row("stream bound: u16 + 2 × f32 constants → f32", bound, pixels * 2, memory);
    // The last field: the first pixel whose constants depend on bit 14 (fixed low: none).
    let cases: [(&str, &Calibrator, u64, usize); 3] = [
        ("auto-ranging, dark", &auto, 0, 0),
        ("auto-ranging, 0.5 % of pixels in low gain", &auto, 5, 0),
        ("half fixed low, half auto-ranging, 5 % of pixels with bit 14", &mixed, 50, 8 * panel),
    ];
    for (label, cal, per_mille, from) in cases {
        let bright = if per_mille == 0 { Vec::new() } else { frames(rng, per_mille) };
        let frames = if per_mille == 0 { &dark } else { &bright };
        let r = rate(frames.len(), |i| {
            cal.calibrate(&segments, &frames[i], &mut out).unwrap();
            black_box(&mut out);
        });
        row(&format!("epix10ka 2M calib, {label}"), r, pixels * 2, memory);
        if per_mille > 0 {
            let bound = stream_and_lines_bound(frames, &mut out, 8, 0x4000, from);
            row(&format!("stream bound + the lines with bit 14, {label}"), bound, pixels * 2, memory);
        }
    }
}
