//! Images for viewers without widgets (nbconvert, GitHub, a notebook opened without the
//! kernel): an array result drawn as a PNG in viridis, with the query's ROIs and rings, shown
//! inline as `<img src="data:image/png;base64,…">` beside the table.
//! The PNG framing is a few chunks; the compression is flate2's (already in the dependency tree).

use std::io::Write;

use base64::Engine;
use flate2::write::ZlibEncoder;
use flate2::{Compression, Crc};
use query::layout::Overlay;

/// Width/height of the drawn image at most (larger images are binned by block means).
const MAX_SIDE: usize = 512;

/// viridis at 9 stops (the widget's colour map).
const STOPS: [[f32; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 122.0],
    [59.0, 81.0, 139.0],
    [44.0, 113.0, 142.0],
    [33.0, 144.0, 141.0],
    [39.0, 173.0, 129.0],
    [92.0, 200.0, 99.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

fn viridis(t: f32) -> [u8; 3] {
    let f = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let k = (f.floor() as usize).min(STOPS.len() - 2);
    let u = f - k as f32;
    let c = |i: usize| (STOPS[k][i] + (STOPS[k + 1][i] - STOPS[k][i]) * u).round() as u8;
    [c(0), c(1), c(2)]
}

/// The colour range: the 1st and 99.5th percentiles of the finite values (the widget's autorange).
pub fn auto_range(values: &[f32]) -> Option<(f32, f32)> {
    let step = (values.len() / 65536).max(1);
    let mut v: Vec<f32> = values
        .iter()
        .step_by(step)
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let (lo, hi) = (at(0.01), at(0.995));
    Some(if hi > lo { (lo, hi) } else { (lo, lo + 1.0) })
}

/// An `rows × cols` image (C order) as PNG bytes: binned to at most 512 pixels a side, coloured
/// over `range`, NaN grey, overlays (in the image's pixels) drawn white.
pub fn image_png(
    values: &[f32],
    rows: usize,
    cols: usize,
    range: (f32, f32),
    overlays: &[Overlay],
) -> Vec<u8> {
    let f = rows.max(cols).div_ceil(MAX_SIDE).max(1);
    let (h, w) = (rows.div_ceil(f), cols.div_ceil(f));
    let (mut sum, mut n) = (vec![0f32; h * w], vec![0u32; h * w]);
    for r in 0..rows {
        for c in 0..cols {
            let x = values[r * cols + c];
            if x.is_finite() {
                sum[(r / f) * w + c / f] += x;
                n[(r / f) * w + c / f] += 1;
            }
        }
    }
    let (lo, hi) = range;
    let mut rgb: Vec<[u8; 3]> = sum
        .iter()
        .zip(&n)
        .map(|(&s, &k)| {
            if k == 0 {
                [128, 128, 128]
            } else {
                viridis((s / k as f32 - lo) / (hi - lo))
            }
        })
        .collect();
    let mut plot = |r: f64, c: f64| {
        let (y, x) = ((r / f as f64).floor(), (c / f as f64).floor());
        if y >= 0.0 && x >= 0.0 && (y as usize) < h && (x as usize) < w {
            rgb[y as usize * w + x as usize] = [255, 255, 255];
        }
    };
    for o in overlays {
        match *o {
            Overlay::Rect { r0, r1, c0, c1, .. } => {
                let (r1, c1) = (r1 - 1.0, c1 - 1.0);
                let mut c = c0;
                while c <= c1 {
                    plot(r0, c);
                    plot(r1, c);
                    c += f as f64;
                }
                let mut r = r0;
                while r <= r1 {
                    plot(r, c0);
                    plot(r, c1);
                    r += f as f64;
                }
            }
            Overlay::Ring { cx, cy, r, .. } => {
                let steps = ((r * std::f64::consts::TAU / f as f64).ceil() as usize).max(16);
                for k in 0..steps {
                    let a = k as f64 / steps as f64 * std::f64::consts::TAU;
                    plot(cy + r * a.sin(), cx + r * a.cos());
                }
            }
        }
    }
    encode_rgb(&rgb, w, h)
}

/// RGB pixels as a PNG (8-bit truecolour, filter 0 per line).
fn encode_rgb(rgb: &[[u8; 3]], w: usize, h: usize) -> Vec<u8> {
    let mut raw = Vec::with_capacity(h * (1 + 3 * w));
    for line in rgb.chunks(w) {
        raw.push(0);
        raw.extend(line.iter().flatten());
    }
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(&raw).expect("writing to memory");
    let idat = z.finish().expect("writing to memory");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend((w as u32).to_be_bytes());
    ihdr.extend((h as u32).to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", &ihdr[..]),
        (b"IDAT", &idat[..]),
        (b"IEND", &[][..]),
    ] {
        png.extend((data.len() as u32).to_be_bytes());
        let mut crc = Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend(kind);
        png.extend(data);
        png.extend(crc.sum().to_be_bytes());
    }
    png
}

/// `<img>` with the PNG inline.
pub fn img_tag(png: &[u8], title: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    format!(
        "<img class=\"beamtime-image\" alt=\"{title}\" title=\"{title}\" style=\"image-rendering: pixelated; max-width: 100%\" src=\"data:image/png;base64,{b64}\"/>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_png_readers_accept_with_the_pixels_and_overlays_drawn() {
        // 4 × 6 ramp, a rect over rows 0..4, cols 1..5: its outline is rows 0 and 3, cols 1 and 4.
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let rect = Overlay::Rect { r0: 0.0, r1: 4.0, c0: 1.0, c1: 5.0, label: String::new() };
        let png = image_png(&v, 4, 6, (0.0, 23.0), &[rect]);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 6, "width");
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 4, "height");
        // Inflate IDAT back: outside the rect, the ramp's ends are viridis' ends; its outline
        // is white, its inside is not.
        let len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&png[41..41 + len]), &mut raw).unwrap();
        let px = |r: usize, c: usize| &raw[r * 19 + 1 + 3 * c..r * 19 + 4 + 3 * c];
        assert_eq!(px(0, 0), [68, 1, 84]);
        assert_eq!(px(3, 5), [253, 231, 37]);
        for (r, c) in [(0, 1), (0, 4), (3, 1), (3, 4), (1, 1), (2, 4)] {
            assert_eq!(px(r, c), [255, 255, 255], "outline at ({r}, {c})");
        }
        for (r, c) in [(1, 2), (2, 3)] {
            assert_ne!(px(r, c), [255, 255, 255], "inside at ({r}, {c})");
        }
        // The CRC of IEND is the well-known constant.
        assert_eq!(&png[png.len() - 4..], [0xAE, 0x42, 0x60, 0x82]);
    }

    #[test]
    fn auto_range_takes_percentiles_of_the_finite_values() {
        let mut v: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        v.push(f32::NAN);
        assert_eq!(auto_range(&v), Some((10.0, 994.0)));
        assert_eq!(auto_range(&[f32::NAN]), None);
    }
}
