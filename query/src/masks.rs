//! User masks for `mask(x, 'file.npy')`: read once per file version (a worker calls the function
//! every batch), checked against the array's shape.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use polars::prelude::*;

type Cached = (Option<SystemTime>, Arc<Vec<bool>>, Vec<usize>);

static MASKS: Mutex<BTreeMap<PathBuf, Cached>> = Mutex::new(BTreeMap::new());

/// The mask in `file` (non-zero = good, psana's convention) for an array of `shape`.
pub(crate) fn load(file: &str, shape: &[usize]) -> PolarsResult<Arc<Vec<bool>>> {
    let path = PathBuf::from(file);
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    // A poisoned lock only means another thread panicked mid-insert: the map is still whole.
    let mut cache = MASKS.lock().unwrap_or_else(|p| p.into_inner());
    let (good, mask_shape) = match cache.get(&path) {
        Some((when, good, s)) if *when == modified && modified.is_some() => {
            (good.clone(), s.clone())
        }
        _ => {
            let a = detector::constants::npy::read_npy(&path)
                .map_err(|e| polars_err!(InvalidOperation: "mask(): argument 2: {e}"))?;
            let good: Arc<Vec<bool>> = Arc::new(a.to_f64().into_iter().map(|v| v != 0.0).collect());
            cache.insert(path.clone(), (modified, good.clone(), a.shape.clone()));
            (good, a.shape)
        }
    };
    let same = mask_shape == shape
        || (mask_shape.iter().product::<usize>() == good.len()
            && squeeze(&mask_shape) == squeeze(shape));
    if !same {
        polars_bail!(InvalidOperation: "mask(): argument 2, {file}: the mask has shape {mask_shape:?}, the array {shape:?}");
    }
    Ok(good)
}

/// The shape without axes of length 1 (a `(1, 512, 1024)` mask fits a `(512, 1024)` image).
fn squeeze(shape: &[usize]) -> Vec<usize> {
    shape.iter().copied().filter(|&d| d != 1).collect()
}
