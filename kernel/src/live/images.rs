//! Array results for the widgets: images binned down to what a browser paints at the display
//! rate (a 4M detector's mean image is 16 MB of f32; the widget gets at most ~1 megapixel per
//! image), and the schema metadata that tells the widget how to draw each array column
//! (`beamtime:shapes`, `beamtime:binning`, `beamtime:axes`; widgets/src/index.ts).

use std::collections::BTreeMap;

use polars::prelude::*;
use query::layout::{Axis, Layout};

/// Pixels of one image the widget gets at most (`BEAMTIME_WIDGET_IMAGE_PIXELS`).
pub fn max_image_pixels() -> usize {
    std::env::var("BEAMTIME_WIDGET_IMAGE_PIXELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n >= 64)
        .unwrap_or(1 << 20)
}

/// Pixels of all images of one snapshot at most (a mean image per delay bin shares this).
const MAX_SNAPSHOT_PIXELS: usize = 4 << 20;
/// Image rows a snapshot keeps at most (a row query streaming frames: the newest).
const MAX_IMAGE_ROWS: usize = 64;

/// How a result's array columns are drawn: their shapes (from the job or the catalog) and
/// the x axes of profiles.
#[derive(Clone, Debug, Default)]
pub struct ArrayLook {
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub axes: BTreeMap<String, Axis>,
}

impl ArrayLook {
    pub fn new(shapes: &BTreeMap<String, Vec<usize>>, layout: &Layout) -> Self {
        let mut shapes = shapes.clone();
        for (k, v) in &layout.shapes {
            shapes.entry(k.clone()).or_insert_with(|| v.clone());
        }
        ArrayLook {
            shapes,
            axes: layout.axes.clone(),
        }
    }

    pub fn has_images(&self) -> bool {
        !self.shapes.is_empty()
    }
}

/// The frame the widget is sent and its schema metadata: image columns binned by an integer
/// factor (block means; NaN pixels left out of their block) so that each image has at most
/// [`max_image_pixels`] and the snapshot at most 4 megapixels, as f32.
pub fn for_widget(df: &DataFrame, look: &ArrayLook) -> (DataFrame, Vec<(String, String)>) {
    for_widget_within(df, look, max_image_pixels())
}

fn for_widget_within(
    df: &DataFrame,
    look: &ArrayLook,
    max_image: usize,
) -> (DataFrame, Vec<(String, String)>) {
    let shaped: Vec<(&String, &Vec<usize>)> = look
        .shapes
        .iter()
        .filter(|(n, s)| {
            s.len() >= 2
                && df
                    .column(n.as_str())
                    .is_ok_and(|c| matches!(c.dtype(), DataType::List(_) | DataType::Array(..)))
        })
        .collect();
    let mut out = df.clone();
    let mut shapes = serde_json::Map::new();
    let mut binning = serde_json::Map::new();
    if !shaped.is_empty() && out.height() > MAX_IMAGE_ROWS {
        out = out.tail(Some(MAX_IMAGE_ROWS));
    }
    let rows = out.height().max(1);
    let per_image = max_image.min(MAX_SNAPSHOT_PIXELS / (rows * shaped.len().max(1)));
    for (name, shape) in shaped {
        // Segments stack vertically into one image.
        let (r, c) = (
            shape[..shape.len() - 1].iter().product::<usize>(),
            shape[shape.len() - 1],
        );
        let f = factor(r, c, per_image.max(1));
        let col = out.column(name).expect("checked above").clone();
        match bin_column(&col, r, c, f) {
            Ok(binned) => {
                let _ = out.replace(name, binned);
                let dims = if f == 1 {
                    shape.clone()
                } else {
                    vec![r.div_ceil(f), c.div_ceil(f)]
                };
                shapes.insert(name.clone(), serde_json::json!(dims));
                if f > 1 {
                    binning.insert(name.clone(), serde_json::json!([f, f]));
                }
            }
            Err(e) => eprintln!("beamtime kernel: `{name}` not drawn as an image: {e}"),
        }
    }
    let mut meta = Vec::new();
    if !shapes.is_empty() {
        meta.push((
            "beamtime:shapes".to_string(),
            serde_json::Value::Object(shapes).to_string(),
        ));
    }
    if !binning.is_empty() {
        meta.push((
            "beamtime:binning".to_string(),
            serde_json::Value::Object(binning).to_string(),
        ));
    }
    let axes: serde_json::Map<String, serde_json::Value> = look
        .axes
        .iter()
        .filter(|(n, _)| df.column(n.as_str()).is_ok())
        .map(|(n, a)| (n.clone(), serde_json::json!(a)))
        .collect();
    if !axes.is_empty() {
        meta.push((
            "beamtime:axes".to_string(),
            serde_json::Value::Object(axes).to_string(),
        ));
    }
    (out, meta)
}

/// The smallest square binning that brings an `r × c` image to at most `max` pixels.
fn factor(r: usize, c: usize, max: usize) -> usize {
    let mut f = 1;
    while r.div_ceil(f) * c.div_ceil(f) > max {
        f += 1;
    }
    f
}

/// Each row's `r × c` image as f32, binned `f × f` (block means over the finite pixels; a block
/// without one is NaN). A row of another length or null stays null.
fn bin_column(col: &Column, r: usize, c: usize, f: usize) -> PolarsResult<Column> {
    let list = col
        .as_materialized_series()
        .cast(&DataType::List(Box::new(DataType::Float32)))?;
    let ca = list.list()?;
    let (br, bc) = (r.div_ceil(f), c.div_ceil(f));
    let mut sum = vec![0f32; br * bc];
    let mut count = vec![0u32; br * bc];
    let rows: Vec<Option<Series>> = (0..ca.len())
        .map(|i| {
            let s = ca.get_as_series(i)?;
            let v = s.f32().ok()?.rechunk();
            let v = v.cont_slice().ok()?;
            if v.len() != r * c {
                return None;
            }
            if f == 1 {
                return Some(Series::new(PlSmallStr::EMPTY, v));
            }
            sum.iter_mut().for_each(|x| *x = 0.0);
            count.iter_mut().for_each(|x| *x = 0);
            for row in 0..r {
                let base = (row / f) * bc;
                for (col, &x) in v[row * c..(row + 1) * c].iter().enumerate() {
                    if x.is_finite() {
                        sum[base + col / f] += x;
                        count[base + col / f] += 1;
                    }
                }
            }
            let out: Vec<f32> = sum
                .iter()
                .zip(&count)
                .map(|(&s, &n)| if n == 0 { f32::NAN } else { s / n as f32 })
                .collect();
            Some(Series::new(PlSmallStr::EMPTY, out))
        })
        .collect();
    Ok(ListChunked::from_iter(rows)
        .with_name(col.name().clone())
        .into_column())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Series {
        Series::new(
            PlSmallStr::EMPTY,
            (0..rows * cols)
                .map(|i| f(i / cols, i % cols))
                .collect::<Vec<f64>>(),
        )
    }

    #[test]
    fn large_images_are_binned_to_block_means_and_said_so() {
        // 25 × 31 = 775 pixels → factor 3: 9 × 11 = 99 pixels.
        let img = image(25, 31, |r, c| (r * 100 + c) as f64);
        let mut nan = img.f64().unwrap().to_vec();
        nan[0] = None;
        let df = df!("k" => [1i64, 2], "img" => [img, Series::new(PlSmallStr::EMPTY, nan.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect::<Vec<f64>>())]).unwrap();
        let look = ArrayLook {
            shapes: BTreeMap::from([("img".into(), vec![25, 31])]),
            axes: BTreeMap::new(),
        };
        let (out, meta) = for_widget_within(&df, &look, 100);
        let meta: BTreeMap<String, String> = meta.into_iter().collect();
        assert_eq!(meta["beamtime:shapes"], r#"{"img":[9,11]}"#);
        assert_eq!(meta["beamtime:binning"], r#"{"img":[3,3]}"#);
        let rows = out.column("img").unwrap().list().unwrap().clone();
        let first: Vec<f32> = rows
            .get_as_series(0)
            .unwrap()
            .f32()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(first.len(), 99);
        // Block (0,0): rows 0–2, cols 0–2 → mean of r·100 + c = 100 + 1.
        assert_eq!(first[0], 101.0);
        // Block (8,10): rows 24 only, cols 30 only (the ragged corner) → 2430.
        assert_eq!(first[98], 2430.0);
        // The NaN pixel is left out of its block: (1·100+0 + … ) over the 8 others.
        let second: Vec<f32> = rows
            .get_as_series(1)
            .unwrap()
            .f32()
            .unwrap()
            .into_no_null_iter()
            .collect();
        let want = [1.0, 2.0, 100.0, 101.0, 102.0, 200.0, 201.0, 202.0]
            .iter()
            .sum::<f32>()
            / 8.0;
        assert_eq!(second[0], want);
    }
}
