//! Image indices, shape, assembly and hole filling (spec §5.4), as psana's `det.raw.image`.

use crate::error::GeometryError;
use crate::geometry::tree::PixelCoords;

/// Each pixel's image (row, col), `(segments, rows, cols)` in C order, and the image shape.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelIndices {
    pub rows: Vec<u32>,
    pub cols: Vec<u32>,
    /// (image rows, image cols), from all segments of the geometry.
    pub shape: (usize, usize),
    pub segments: usize,
    pub segment_rows: usize,
    pub segment_cols: usize,
    /// The image bin size (µm): psana's pixel scale size.
    pub pixel_um: f64,
}

impl PixelIndices {
    /// psana's rule: `row = trunc((X − (min X − p/2)) / p)`, likewise `col` from Y, in f64.
    pub fn from_coords(coords: &PixelCoords) -> Self {
        let p = coords.pixel_scale;
        let half = 0.5 * p;
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let (xmin, ymin) = (min(&coords.x) - half, min(&coords.y) - half);
        // X − xmin ≥ p/2 > 0, so truncation is the cast; the fractions are small enough for u32.
        let rows: Vec<u32> = coords.x.iter().map(|&x| ((x - xmin) / p) as u32).collect();
        let cols: Vec<u32> = coords.y.iter().map(|&y| ((y - ymin) / p) as u32).collect();
        let shape = (
            rows.iter().copied().max().unwrap_or(0) as usize + 1,
            cols.iter().copied().max().unwrap_or(0) as usize + 1,
        );
        PixelIndices {
            rows,
            cols,
            shape,
            segments: coords.segments,
            segment_rows: coords.rows,
            segment_cols: coords.cols,
            pixel_um: p,
        }
    }

    pub fn segment_pixels(&self) -> usize {
        self.segment_rows * self.segment_cols
    }
}

/// How an image is drawn: psana's defaults are `fill_holes: true`, `background: 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageOptions {
    pub fill_holes: bool,
    /// psana's `vbase`: the value of bins no pixel falls in.
    pub background: f32,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions { fill_holes: true, background: 0.0 }
    }
}

const EMPTY: u32 = u32::MAX;

/// Maps a calibrated frame `(daq segments, rows, cols)` to its image with indices computed once:
/// every image bin knows the frame pixel it shows (the last one drawn, as psana overwrites), and
/// every hole its four neighbour bins.
#[derive(Clone, Debug)]
pub struct ImageMapper {
    shape: (usize, usize),
    frame_len: usize,
    /// Per image bin: index into the frame, or `EMPTY`.
    source: Vec<u32>,
    /// The same as runs of bins (C order) whose sources step by +1, −1 or are empty: most of a
    /// panel's row lands on consecutive bins, so drawing is a few thousand slice copies.
    runs: Vec<Run>,
    /// Holes and their (up, down, left, right) bins; psana reads these before filling any.
    holes: Vec<(u32, [u32; 4])>,
    background: f32,
    pixel_um: f64,
}

impl ImageMapper {
    /// `daq_segments`: the segment numbers the frame holds, in frame order (psana draws only these;
    /// the image shape still comes from every segment of the geometry).
    pub fn new(indices: &PixelIndices, daq_segments: &[u32], options: ImageOptions) -> Result<Self, GeometryError> {
        let (nrows, ncols) = indices.shape;
        let bins = nrows * ncols;
        let panel = indices.segment_pixels();
        let frame_len = daq_segments.len() * panel;
        if bins >= EMPTY as usize || frame_len >= EMPTY as usize {
            return Err(GeometryError::Frame { message: format!("image {nrows}×{ncols} or frame of {frame_len} pixels too large") });
        }
        let mut source = vec![EMPTY; bins];
        for (position, &segment) in daq_segments.iter().enumerate() {
            let segment = segment as usize;
            if segment >= indices.segments {
                return Err(GeometryError::Frame {
                    message: format!("segment {segment} is not in the geometry ({} segments, 0–{})", indices.segments, indices.segments.saturating_sub(1)),
                });
            }
            let pixels = segment * panel..(segment + 1) * panel;
            for (offset, (&row, &col)) in indices.rows[pixels.clone()].iter().zip(&indices.cols[pixels]).enumerate() {
                source[row as usize * ncols + col as usize] = (position * panel + offset) as u32;
            }
        }
        let holes = if options.fill_holes { find_holes(&source, nrows, ncols) } else { Vec::new() };
        let runs = runs_of(&source);
        Ok(ImageMapper {
            shape: indices.shape,
            frame_len,
            source,
            runs,
            holes,
            background: options.background,
            pixel_um: indices.pixel_um,
        })
    }

    /// (image rows, image cols).
    pub fn shape(&self) -> (usize, usize) {
        self.shape
    }

    /// The size of an image bin (µm): the geometry's pixel scale.
    pub fn pixel_size_um(&self) -> f64 {
        self.pixel_um
    }

    /// Values a frame must have: daq segments × rows × cols.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Per image bin: true where a pixel is drawn whose `good` (per frame pixel, psana's mask: 1
    /// = good) is set. Gaps and filled holes are false: they belong to no pixel.
    pub fn coverage(&self, good: &[u8]) -> Vec<bool> {
        self.source.iter().map(|&s| s != EMPTY && good.get(s as usize).is_some_and(|&g| g != 0)).collect()
    }

    /// Hole bins (flat image index) that filling will set.
    pub fn hole_bins(&self) -> impl Iterator<Item = usize> + '_ {
        self.holes.iter().map(|(bin, _)| *bin as usize)
    }

    /// Draws `frame` into `image` (rows × cols, C order), then fills the holes.
    pub fn assemble_into(&self, frame: &[f32], image: &mut [f32]) -> Result<(), GeometryError> {
        if frame.len() != self.frame_len {
            return Err(GeometryError::Frame {
                message: format!("frame has {} values, the geometry's daq segments need {}", frame.len(), self.frame_len),
            });
        }
        let bins = self.source.len();
        if image.len() != bins {
            return Err(GeometryError::Frame {
                message: format!("image buffer has {} values, the image is {}×{} = {bins}", image.len(), self.shape.0, self.shape.1),
            });
        }
        for run in &self.runs {
            let dst = &mut image[run.at as usize..(run.at + run.len) as usize];
            let src = run.source as usize;
            match run.step {
                0 => dst.fill(self.background),
                1 => dst.copy_from_slice(&frame[src..src + dst.len()]),
                _ => {
                    // Sources descend: a panel drawn rotated by 180°.
                    let from = &frame[src + 1 - dst.len()..=src];
                    for (d, s) in dst.iter_mut().zip(from.iter().rev()) {
                        *d = *s;
                    }
                }
            }
        }
        if self.holes.is_empty() {
            return Ok(());
        }
        // All holes read the pre-fill image (numpy evaluates the whole right-hand side first).
        let filled: Vec<f32> = self
            .holes
            .iter()
            .map(|(_, [up, down, left, right])| {
                let at = |bin: u32| image[bin as usize];
                numpy_minimum(numpy_minimum(at(*up), at(*down)), numpy_minimum(at(*left), at(*right)))
            })
            .collect();
        for ((bin, _), value) in self.holes.iter().zip(filled) {
            image[*bin as usize] = value;
        }
        Ok(())
    }

    /// A new image of `frame`.
    pub fn assemble(&self, frame: &[f32]) -> Result<Vec<f32>, GeometryError> {
        let mut image = vec![0.0; self.source.len()];
        self.assemble_into(frame, &mut image)?;
        Ok(image)
    }
}

/// Consecutive bins whose sources continue each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    /// First bin.
    at: u32,
    /// The first bin's frame index (step ±1), or `EMPTY` (step 0).
    source: u32,
    len: u32,
    /// +1, −1, or 0 for bins no pixel falls in.
    step: i8,
}

fn runs_of(source: &[u32]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (bin, &s) in source.iter().enumerate() {
        if let Some(last) = runs.last_mut() {
            let next = |step: i8| last.source as i64 + step as i64 * last.len as i64;
            let continues = match (s == EMPTY, last.step) {
                (true, 0) => true,
                (false, 0) => false,
                (false, step) => next(step) == s as i64,
                (true, _) => false,
            };
            if continues {
                last.len += 1;
                continue;
            }
            // A one-bin run learns its direction from its second bin.
            if last.len == 1 && last.step != 0 && s != EMPTY && s as i64 == last.source as i64 - 1 {
                last.step = -1;
                last.len += 1;
                continue;
            }
        }
        let step = if s == EMPTY { 0 } else { 1 };
        runs.push(Run { at: bin as u32, source: s, len: 1, step });
    }
    runs
}

/// psana's holes: empty bins whose neighbours inside the image (up, down, left, right) are all
/// drawn. Filling reads `row−1`/`col−1` with numpy's wrap-around at 0; a missing `row+1`/`col+1`
/// (psana raises IndexError there; no default geometry has such a hole) is left out of the min.
fn find_holes(source: &[u32], nrows: usize, ncols: usize) -> Vec<(u32, [u32; 4])> {
    let drawn = |r: usize, c: usize| source[r * ncols + c] != EMPTY;
    let mut holes = Vec::new();
    for r in 0..nrows {
        for c in 0..ncols {
            if drawn(r, c)
                || (r > 0 && !drawn(r - 1, c))
                || (r + 1 < nrows && !drawn(r + 1, c))
                || (c > 0 && !drawn(r, c - 1))
                || (c + 1 < ncols && !drawn(r, c + 1))
            {
                continue;
            }
            let bin = |r: usize, c: usize| (r * ncols + c) as u32;
            let up = bin((r + nrows - 1) % nrows, c);
            let left = bin(r, (c + ncols - 1) % ncols);
            // A repeated neighbour does not change the min.
            let down = if r + 1 < nrows { bin(r + 1, c) } else { up };
            let right = if c + 1 < ncols { bin(r, c + 1) } else { left };
            holes.push((bin(r, c), [up, down, left, right]));
        }
    }
    holes
}

/// `np.minimum`: NaN if either is NaN (f32::min would drop it).
fn numpy_minimum(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}
