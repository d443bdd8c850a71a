//! Element-wise aggregates of array columns (the mean image of a run, the mean radial profile
//! per delay bin): `sum`, `avg`, `min`, `max` of an array are arrays of the same length.
//!
//! Sums accumulate in fixed point, `i128` units of 2⁻⁶⁴ per element: integer additions are
//! associative, so the result is the same bits however the events were split into batches and
//! ranks. Integers and f32 values of magnitude ≥ 2⁻⁴¹ (4.5·10⁻¹³) are held exactly; smaller
//! fractions are rounded to 2⁻⁶⁴, the same way every time. A sum beyond ±2⁶³ is an error, not a
//! wrap. Extremes are exact in f64 (NaN propagates, as numpy's `max`). The states are Binary
//! blobs (length, then the elements), one per group, so polars carries them like any value.

use polars::prelude::*;

use crate::arrays::Arrays;

type PlExpr = polars::prelude::Expr;

const SCALE: f64 = 18446744073709551616.0; // 2^64

fn to_fixed(v: f64) -> PolarsResult<i128> {
    if !v.is_finite() {
        polars_bail!(ComputeError: "an element-wise sum met {v}: only finite values can be summed");
    }
    let q = (v * SCALE).round();
    // ±2^126: the sum of 2 of them still fits an i128.
    if q.abs() >= 8.5e37 {
        polars_bail!(ComputeError: "an element-wise sum met {v}, beyond the ±2^62 its fixed point holds");
    }
    Ok(q as i128)
}

/// A group's element-wise sum: per element the fixed-point sum; and the rows summed.
struct SumState {
    sums: Vec<i128>,
    rows: u64,
}

impl SumState {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 16 * self.sums.len());
        out.extend_from_slice(&(self.sums.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.rows.to_le_bytes());
        for s in &self.sums {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    fn decode(b: &[u8]) -> PolarsResult<Self> {
        let bad = || polars_err!(ComputeError: "an element-wise sum state of {} bytes is not one this version wrote", b.len());
        let len = u32::from_le_bytes(b.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
        let rows = u64::from_le_bytes(b.get(4..12).ok_or_else(bad)?.try_into().unwrap());
        let body = b.get(12..).filter(|body| body.len() == 16 * len).ok_or_else(bad)?;
        let sums = body.chunks_exact(16).map(|c| i128::from_le_bytes(c.try_into().unwrap())).collect();
        Ok(SumState { sums, rows })
    }

    fn merge(&mut self, other: &SumState) -> PolarsResult<()> {
        if self.rows == 0 {
            self.sums = other.sums.clone();
        } else if other.rows > 0 {
            if other.sums.len() != self.sums.len() {
                polars_bail!(ComputeError: "element-wise sum of arrays of {} and {} values: the arrays differ in length", self.sums.len(), other.sums.len());
            }
            for (a, b) in self.sums.iter_mut().zip(&other.sums) {
                *a = a.checked_add(*b).ok_or_else(|| polars_err!(ComputeError: "an element-wise sum went beyond ±2^63"))?;
            }
        }
        self.rows += other.rows;
        Ok(())
    }
}

fn blob(name: PlSmallStr, bytes: Vec<u8>) -> Column {
    Column::new(name, [bytes.as_slice()])
}

fn blobs(c: &Column) -> PolarsResult<Vec<&[u8]>> {
    Ok(c.binary()?.iter().flatten().collect())
}

/// The partial state of `x`'s element-wise sum (null rows skipped).
pub fn sum_state(x: PlExpr) -> PlExpr {
    x.agg_with_fmt_str(
        |c: Column| {
            let arrays = Arrays::of("sum", &c)?;
            let mut state = SumState { sums: vec![0; arrays.width], rows: 0 };
            for row in 0..arrays.len {
                let Some(v) = arrays.row(row) else { continue };
                for (i, acc) in state.sums.iter_mut().enumerate() {
                    *acc = acc.checked_add(to_fixed(v.get(i))?).ok_or_else(|| polars_err!(ComputeError: "an element-wise sum went beyond ±2^63"))?;
                }
                state.rows += 1;
            }
            Ok(blob(c.name().clone(), state.encode()))
        },
        |_, f| Ok(Field::new(f.name().clone(), DataType::Binary)),
        "array_sum",
    )
}

/// Merges a group's element-wise sum states.
pub fn merge_sum_states(states: PlExpr) -> PlExpr {
    states.agg_with_fmt_str(
        |c: Column| {
            let mut acc = SumState { sums: Vec::new(), rows: 0 };
            for b in blobs(&c)? {
                acc.merge(&SumState::decode(b)?)?;
            }
            Ok(blob(c.name().clone(), acc.encode()))
        },
        |_, f| Ok(Field::new(f.name().clone(), DataType::Binary)),
        "merge_array_sum",
    )
}

/// The sum (or, with `mean`, the mean) arrays of a state column; null where no row was summed.
pub fn sum_value(states: PlExpr, mean: bool) -> PlExpr {
    states.map(
        move |c: Column| {
            let rows: Vec<Option<Series>> = c
                .binary()?
                .iter()
                .map(|b| -> PolarsResult<Option<Series>> {
                    let Some(b) = b else { return Ok(None) };
                    let s = SumState::decode(b)?;
                    if s.rows == 0 {
                        return Ok(None);
                    }
                    let n = if mean { s.rows as f64 } else { 1.0 };
                    // i128 → f64 rounds to nearest; the scale is a power of two (exact).
                    let values: Vec<f64> = s.sums.iter().map(|&q| (q as f64) / SCALE / n).collect();
                    Ok(Some(Series::new(PlSmallStr::EMPTY, values)))
                })
                .collect::<PolarsResult<_>>()?;
            Ok(ListChunked::from_iter(rows).with_name(c.name().clone()).into_column())
        },
        |_, f| Ok(Field::new(f.name().clone(), DataType::List(Box::new(DataType::Float64)))),
    )
}

/// numpy's `maximum`/`minimum`: NaN wins.
fn pick(a: f64, b: f64, max: bool) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if max {
        a.max(b)
    } else {
        a.min(b)
    }
}

fn encode_f64s(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode_f64s(b: &[u8]) -> PolarsResult<Vec<f64>> {
    if b.len() % 8 != 0 {
        polars_bail!(ComputeError: "an element-wise extreme state of {} bytes is not one this version wrote", b.len());
    }
    Ok(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect())
}

fn fold_extremes(acc: &mut Option<Vec<f64>>, next: &[f64], max: bool) -> PolarsResult<()> {
    match acc {
        None => *acc = Some(next.to_vec()),
        Some(a) => {
            if a.len() != next.len() {
                polars_bail!(ComputeError: "element-wise {} of arrays of {} and {} values: the arrays differ in length", if max { "max" } else { "min" }, a.len(), next.len());
            }
            for (x, y) in a.iter_mut().zip(next) {
                *x = pick(*x, *y, max);
            }
        }
    }
    Ok(())
}

/// The partial state of `x`'s element-wise max (or min); an empty group gives an empty blob.
pub fn extreme_state(x: PlExpr, max: bool) -> PlExpr {
    x.agg_with_fmt_str(
        move |c: Column| {
            let arrays = Arrays::of(if max { "max" } else { "min" }, &c)?;
            let mut acc: Option<Vec<f64>> = None;
            let mut row_values = vec![0f64; arrays.width];
            for row in 0..arrays.len {
                let Some(v) = arrays.row(row) else { continue };
                for (i, x) in row_values.iter_mut().enumerate() {
                    *x = v.get(i);
                }
                fold_extremes(&mut acc, &row_values, max)?;
            }
            Ok(blob(c.name().clone(), acc.map(|a| encode_f64s(&a)).unwrap_or_default()))
        },
        |_, f| Ok(Field::new(f.name().clone(), DataType::Binary)),
        if max { "array_max" } else { "array_min" },
    )
}

/// Merges a group's extreme states.
pub fn merge_extreme_states(states: PlExpr, max: bool) -> PlExpr {
    states.agg_with_fmt_str(
        move |c: Column| {
            let mut acc: Option<Vec<f64>> = None;
            for b in blobs(&c)?.into_iter().filter(|b| !b.is_empty()) {
                fold_extremes(&mut acc, &decode_f64s(b)?, max)?;
            }
            Ok(blob(c.name().clone(), acc.map(|a| encode_f64s(&a)).unwrap_or_default()))
        },
        |_, f| Ok(Field::new(f.name().clone(), DataType::Binary)),
        if max { "merge_array_max" } else { "merge_array_min" },
    )
}

/// The extreme arrays of a state column; null for a group without rows.
pub fn extreme_value(states: PlExpr) -> PlExpr {
    states.map(
        |c: Column| {
            let rows: Vec<Option<Series>> = c
                .binary()?
                .iter()
                .map(|b| -> PolarsResult<Option<Series>> {
                    match b {
                        Some(b) if !b.is_empty() => Ok(Some(Series::new(PlSmallStr::EMPTY, decode_f64s(b)?))),
                        _ => Ok(None),
                    }
                })
                .collect::<PolarsResult<_>>()?;
            Ok(ListChunked::from_iter(rows).with_name(c.name().clone()).into_column())
        },
        |_, f| Ok(Field::new(f.name().clone(), DataType::List(Box::new(DataType::Float64)))),
    )
}

/// An aggregate of an array that is not element-wise: the query's error, with `why`.
pub fn refused(x: PlExpr, why: &'static str) -> PlExpr {
    x.agg_with_fmt_str(move |_: Column| -> PolarsResult<Column> { polars_bail!(InvalidOperation: "{why}") }, |_, f| Ok(f.clone()), "refused")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_sums_are_exact_for_f32_and_associative() {
        // f32 values of very different magnitudes: f64 addition would depend on the order.
        let values = [1.0e6f32, 3.0e-7, -1.0e6, 2.5e-3, 7.0, 1.0e-12];
        let fixed: Vec<i128> = values.iter().map(|&v| to_fixed(v as f64).unwrap()).collect();
        let forward: i128 = fixed.iter().sum();
        let backward: i128 = fixed.iter().rev().sum();
        assert_eq!(forward, backward);
        // Exact: each value above 2^-41 is a whole number of 2^-64 units.
        for &v in &values[..5] {
            assert_eq!(to_fixed(v as f64).unwrap() as f64 / SCALE, v as f64);
        }
        let s = SumState { sums: vec![forward, -5], rows: 3 };
        let back = SumState::decode(&s.encode()).unwrap();
        assert_eq!((back.sums, back.rows), (vec![forward, -5], 3));
        assert!(to_fixed(f64::NAN).unwrap_err().to_string().contains("finite"));
        assert!(to_fixed(1e30).unwrap_err().to_string().contains("fixed point"));
    }
}
