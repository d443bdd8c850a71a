//! psana's default mask: status only (spec §4). A pixel is good (1) when no bit of
//! `pixel_status` nor of `status_extra` is set in any of the first `min(ranges, 5)` gain ranges.
//! A user mask (psana's `umask`) is ANDed in.

use crate::constants::{CalibType, DetectorConstants};
use crate::error::ConstantError;

/// The default mask over every segment the constants cover, `(nseg, rows, cols)` flattened;
/// `None` when there is no status constant (psana: mask None, treated as all good).
pub fn default_status_mask(constants: &DetectorConstants) -> Result<Option<Vec<u8>>, ConstantError> {
    let status = constants.get(CalibType::PixelStatus);
    let extra = constants.get(CalibType::StatusExtra);
    let (shape, good) = match (status, extra) {
        (None, None) => return Ok(None),
        (Some(s), None) | (None, Some(s)) => (&s.array.shape, s.array.to_u64().iter().map(|&v| v == 0).collect::<Vec<_>>()),
        (Some(s), Some(e)) => {
            if s.array.len() != e.array.len() {
                return Err(ConstantError::StatusExtraSize {
                    detector: constants.spec.name.clone(),
                    path: e.path.clone(),
                    found: e.array.len(),
                    expected: s.array.len(),
                });
            }
            let (s, e) = (s.array.to_u64(), e.array.to_u64());
            (&constants.get(CalibType::PixelStatus).unwrap().array.shape, s.iter().zip(&e).map(|(&a, &b)| a | b == 0).collect())
        }
    };
    // (ranges, nseg, R, C): AND over the first min(ranges, 5) ranges (epix10ka ignores AHL_L, AML_L).
    if shape.len() == 4 {
        let per_range = shape[1] * shape[2] * shape[3];
        let ranges = shape[0].min(5);
        let mut mask = vec![1u8; per_range];
        for range in good.chunks_exact(per_range).take(ranges) {
            for (m, &g) in mask.iter_mut().zip(range) {
                *m &= g as u8;
            }
        }
        Ok(Some(mask))
    } else {
        Ok(Some(good.into_iter().map(u8::from).collect()))
    }
}

/// The mask calibration multiplies by: the default status mask AND the user mask (nonzero good),
/// `(nseg, rows, cols)` flattened; `None` when neither exists (all good).
pub fn calib_mask(constants: &DetectorConstants) -> Result<Option<Vec<u8>>, ConstantError> {
    let status = default_status_mask(constants)?;
    let Some(user) = constants.user_mask() else { return Ok(status) };
    let user: Vec<u8> = user.array.to_f64().iter().map(|&v| u8::from(v != 0.0)).collect();
    Ok(Some(match status {
        None => user,
        Some(mut m) => {
            if m.len() != user.len() {
                return Err(ConstantError::Other {
                    detector: constants.spec.name.clone(),
                    message: format!("user mask has {} pixels, the status mask {}", user.len(), m.len()),
                });
            }
            m.iter_mut().zip(&user).for_each(|(a, &b)| *a &= b);
            m
        }
    }))
}
