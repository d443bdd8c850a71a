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

use crate::arrays::{Arrays, Row};

type PlExpr = polars::prelude::Expr;

const SCALE: f64 = 18446744073709551616.0; // 2^64

/// `round(v · 2⁶⁴)` (half away from zero) as an integer, from the float's bits: the product
/// is exact in f64 (a power of two), and doing the shift on the mantissa avoids the f64 → i128
/// conversion, which is a slow library call and was half the time of a mean image.
#[inline(always)]
fn to_fixed(v: f64) -> PolarsResult<i128> {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0x7ff {
        polars_bail!(ComputeError: "an element-wise sum met {v}: only finite values can be summed");
    }
    let frac = bits & ((1u64 << 52) - 1);
    // v = m · 2^e, m < 2^53.
    let (m, e) = if biased == 0 { (frac, -1074) } else { (frac | (1u64 << 52), biased - 1075) };
    let shift = e + 64;
    let magnitude: i128 = if shift >= 0 {
        // ±2^126 at most (8.5e37 as before): the sum of 2 of them still fits an i128.
        if shift > 74 || ((m as i128) << shift) >= FIXED_LIMIT {
            polars_bail!(ComputeError: "an element-wise sum met {v}, beyond the ±2^62 its fixed point holds");
        }
        (m as i128) << shift
    } else if shift < -53 {
        0 // below one half of a unit
    } else {
        let s = (-shift) as u32;
        let rest = m & ((1u64 << s) - 1);
        ((m >> s) + (rest >= 1u64 << (s - 1)) as u64) as i128
    };
    Ok(if bits >> 63 == 1 { -magnitude } else { magnitude })
}

/// 8.5·10³⁷ (just under 2^126), exactly as an integer.
const FIXED_LIMIT: i128 = 85_000_000_000_000_000_000_000_000_000_000_000_000;

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

    /// [`SumState::merge`] of an encoded state, read in place.
    fn merge_encoded(&mut self, b: &[u8]) -> PolarsResult<()> {
        let bad = || polars_err!(ComputeError: "an element-wise sum state of {} bytes is not one this version wrote", b.len());
        let len = u32::from_le_bytes(b.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
        let rows = u64::from_le_bytes(b.get(4..12).ok_or_else(bad)?.try_into().unwrap());
        let body = b.get(12..).filter(|body| body.len() == 16 * len).ok_or_else(bad)?;
        let values = body.chunks_exact(16).map(|c| i128::from_le_bytes(c.try_into().unwrap()));
        if rows == 0 {
            return Ok(());
        }
        if self.rows == 0 {
            self.sums = values.collect();
        } else {
            if len != self.sums.len() {
                polars_bail!(ComputeError: "element-wise sum of arrays of {} and {len} values: the arrays differ in length", self.sums.len());
            }
            for (a, v) in self.sums.iter_mut().zip(values) {
                *a = a.checked_add(v).ok_or_else(beyond)?;
            }
        }
        self.rows += rows;
        Ok(())
    }
}

fn blob(name: PlSmallStr, bytes: Vec<u8>) -> Column {
    Column::new(name, [bytes.as_slice()])
}

fn blobs(c: &Column) -> PolarsResult<Vec<&[u8]>> {
    Ok(c.binary()?.iter().flatten().collect())
}

/// Elements summed across all rows before the next: their sums stay in the L2 cache while
/// every row of the batch adds to them.
const SUM_TILE: usize = 8 * 1024;

fn beyond() -> PolarsError {
    polars_err!(ComputeError: "an element-wise sum went beyond ±2^63")
}

fn add_f64s(sums: &mut [i128], v: &[f64]) -> PolarsResult<()> {
    for (acc, &x) in sums.iter_mut().zip(v) {
        *acc = acc.checked_add(to_fixed(x)?).ok_or_else(beyond)?;
    }
    Ok(())
}

/// 1.5 · 2⁵²: adding it to a float of magnitude below 2⁵¹ leaves that float rounded to an
/// integer in the low mantissa bits, readable as an integer from the bits.
const MAGIC: f64 = 6755399441055744.0;
const MAGIC_BITS: i64 = 0x4338_0000_0000_0000;
/// The fast path's range: |v| < 2²⁷ keeps v·2²⁴ below 2⁵¹; |v| ≥ 2⁻⁴¹ keeps v·2⁶⁴ an integer.
const SPLIT_MAX: f64 = 134217728.0;
const SPLIT_MIN: f64 = 4.547473508864641e-13;

/// An f32's fixed point `v·2⁶⁴` as `hi·2⁴⁰ + lo` with both parts in i64 (|hi| < 2⁵¹,
/// |lo| ≤ 2³⁹), from float operations only, so that a loop of them runs in SIMD lanes; and
/// whether `v` is in the range where this is exact (else the parts are 0).
#[inline(always)]
fn split_f32(x: f32) -> (i64, i64, bool) {
    let v = x as f64;
    let a = v.abs();
    let fast = (a < SPLIT_MAX) & ((a >= SPLIT_MIN) | (a == 0.0));
    let scaled = if fast { v } else { 0.0 } * 16777216.0; // · 2^24, exact
    let t = scaled + MAGIC; // hi = round(scaled), in t's low bits
    let hi = t - MAGIC;
    // The rest is exact, |rest| ≤ 1/2, and rest · 2^40 an integer (v's last bit is ≥ 2^-64).
    let lo = (scaled - hi) * 1099511627776.0 + MAGIC;
    ((t.to_bits() as i64).wrapping_sub(MAGIC_BITS), (lo.to_bits() as i64).wrapping_sub(MAGIC_BITS), fast)
}

/// Rows summed into the i64 parts before they are folded into the i128 sums: 2¹² · 2⁵¹ < 2⁶³.
const SPLIT_ROWS: usize = 4096;

/// Adds the rows' values in `start..start + sums.len()` to the sums: the split parts in i64
/// lanes, the few values outside the fast range one by one.
#[inline(always)]
fn add_f32_rows(sums: &mut [i128], rows: &[&[f32]], start: usize, hi: &mut Vec<i64>, lo: &mut Vec<i64>) -> PolarsResult<()> {
    let n = sums.len();
    for chunk in rows.chunks(SPLIT_ROWS) {
        hi.clear();
        hi.resize(n, 0);
        lo.clear();
        lo.resize(n, 0);
        for row in chunk {
            let v = &row[start..start + n];
            let mut slow = 0u8;
            for ((h, l), &x) in hi.iter_mut().zip(lo.iter_mut()).zip(v) {
                let (dh, dl, fast) = split_f32(x);
                *h += dh;
                *l += dl;
                slow |= !fast as u8;
            }
            if slow != 0 {
                for (acc, &x) in sums.iter_mut().zip(v) {
                    if !split_f32(x).2 {
                        *acc = acc.checked_add(to_fixed(x as f64)?).ok_or_else(beyond)?;
                    }
                }
            }
        }
        for ((acc, &h), &l) in sums.iter_mut().zip(hi.iter()).zip(lo.iter()) {
            *acc = acc.checked_add(((h as i128) << 40) + l as i128).ok_or_else(beyond)?;
        }
    }
    Ok(())
}

/// [`add_f32_rows`] compiled for AVX2 (four lanes where SSE2 has two), when the CPU has it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_f32_rows_avx2(sums: &mut [i128], rows: &[&[f32]], start: usize, hi: &mut Vec<i64>, lo: &mut Vec<i64>) -> PolarsResult<()> {
    add_f32_rows(sums, rows, start, hi, lo)
}

fn add_f32_rows_best(sums: &mut [i128], rows: &[&[f32]], start: usize, hi: &mut Vec<i64>, lo: &mut Vec<i64>) -> PolarsResult<()> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { add_f32_rows_avx2(sums, rows, start, hi, lo) };
    }
    add_f32_rows(sums, rows, start, hi, lo)
}

/// The partial state of `x`'s element-wise sum (null rows skipped).
pub fn sum_state(x: PlExpr) -> PlExpr {
    x.agg_with_fmt_str(
        |c: Column| {
            let arrays = Arrays::of("sum", &c)?;
            let rows: Vec<Row> = (0..arrays.len).filter_map(|r| arrays.row(r)).collect();
            let mut state = SumState { sums: vec![0; arrays.width], rows: rows.len() as u64 };
            let f32_rows: Vec<&[f32]> = rows.iter().filter_map(|r| if let Row::F32(v) = r { Some(*v) } else { None }).collect();
            let (mut hi, mut lo) = (Vec::new(), Vec::new());
            for start in (0..arrays.width).step_by(SUM_TILE) {
                let end = (start + SUM_TILE).min(arrays.width);
                let sums = &mut state.sums[start..end];
                if f32_rows.len() == rows.len() {
                    add_f32_rows_best(sums, &f32_rows, start, &mut hi, &mut lo)?;
                    continue;
                }
                for row in &rows {
                    match row {
                        Row::F32(v) => add_f32_rows_best(sums, &[v], start, &mut hi, &mut lo)?,
                        Row::F64(v) => add_f64s(sums, &v[start..end])?,
                    }
                }
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
            // Added straight from the encoded states: no array of sums decoded per state (at
            // 64 workers' mean images, 0.5 GB of fresh memory per merge).
            let mut acc = SumState { sums: Vec::new(), rows: 0 };
            for b in blobs(&c)? {
                acc.merge_encoded(b)?;
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

/// numpy's `maximum`/`minimum`: NaN wins. Of −0 and +0 the max is +0 and the min −0 whatever
/// their order (f64::max may return either), so that extremes do not depend on how events were
/// split among batches and ranks.
fn pick(a: f64, b: f64, max: bool) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == b {
        if a.is_sign_positive() == max { a } else { b }
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

    #[test]
    fn encoded_states_merge_in_place_in_any_order() {
        let a = SumState { sums: vec![1, -2, 3], rows: 2 }.encode();
        let b = SumState { sums: vec![10, 20, 30], rows: 1 }.encode();
        let empty = SumState { sums: vec![0, 0, 0], rows: 0 }.encode();
        for order in [[&a, &b, &empty], [&empty, &b, &a], [&b, &empty, &a]] {
            let mut acc = SumState { sums: Vec::new(), rows: 0 };
            for s in order {
                acc.merge_encoded(s).unwrap();
            }
            assert_eq!((acc.sums.as_slice(), acc.rows), (&[11i128, 18, 33][..], 3));
        }
        let mut acc = SumState { sums: Vec::new(), rows: 0 };
        acc.merge_encoded(&a).unwrap();
        let short = SumState { sums: vec![1, 2], rows: 1 }.encode();
        assert!(acc.merge_encoded(&short).unwrap_err().to_string().contains("differ in length"));
        assert!(acc.merge_encoded(&a[..20]).is_err());
        let big = SumState { sums: vec![i128::MAX, 0, 0], rows: 1 }.encode();
        assert!(acc.merge_encoded(&big).unwrap_err().to_string().contains("beyond"));
    }

    #[test]
    fn extremes_of_signed_zeros_do_not_depend_on_the_order() {
        for (a, b) in [(-0.0, 0.0), (0.0, -0.0)] {
            assert!(pick(a, b, true).is_sign_positive(), "max({a}, {b})");
            assert!(pick(a, b, false).is_sign_negative(), "min({a}, {b})");
        }
        assert!(pick(1.0, f64::NAN, true).is_nan());
        assert_eq!(pick(-1.0, 2.0, false), -1.0);
    }

    #[test]
    fn f32_split_parts_are_the_fixed_point() {
        let mut x = 0x2545F4914F6CDD1Du64;
        let tiny = 2.0f32.powi(-41);
        let mut values: Vec<f32> = vec![0.0, -0.0, 1.0, -1.5, 0.5, 2.5, -2.5, tiny, -tiny, 1.5 * tiny, 2.0f32.powi(27) * 0.99999994, -2.0f32.powi(26)];
        for _ in 0..40_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Every exponent, both signs, random mantissas.
            values.push(f32::from_bits(x as u32));
        }
        let (mut fast, mut slow) = (0, 0);
        for v in values {
            let (hi, lo, ok) = split_f32(v);
            let in_range = v == 0.0 || (v.abs() >= tiny && v.abs() < 2.0f32.powi(27));
            assert_eq!(ok, in_range, "{v:e}");
            if ok {
                assert_eq!(((hi as i128) << 40) + lo as i128, to_fixed(v as f64).unwrap(), "{v:e}");
                assert!(hi.abs() < 1 << 51 && lo.abs() <= 1 << 39, "{v:e}");
                fast += 1;
            } else {
                assert_eq!((hi, lo), (0, 0), "{v:e}");
                slow += 1;
            }
        }
        assert!(fast > 5000 && slow > 5000, "{fast} {slow}");
    }

    #[test]
    fn f32_sums_of_rows_in_lanes_equal_the_i128_sums() {
        let mut x = 0x9E3779B97F4A7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Mostly detector-like values, some tiny, huge, zero: 5000 rows (two i64 folds).
        let rows: Vec<Vec<f32>> = (0..5000)
            .map(|_| {
                (0..37)
                    .map(|_| match next() % 10 {
                        0 => f32::from_bits(next() as u32 & 0x1FFF_FFFF),
                        1 => 1.0e9 * (next() % 1000) as f32,
                        2 => 0.0,
                        _ => ((next() % 200_000) as f32 - 100_000.0) * 0.013,
                    })
                    .collect()
            })
            .collect();
        let views: Vec<&[f32]> = rows.iter().map(|r| r.as_slice()).collect();
        let mut sums = vec![0i128; 30];
        add_f32_rows_best(&mut sums, &views, 7, &mut Vec::new(), &mut Vec::new()).unwrap();
        for (j, s) in sums.iter().enumerate() {
            let want: i128 = rows.iter().map(|r| to_fixed(r[7 + j] as f64).unwrap()).sum();
            assert_eq!(*s, want, "element {j}");
        }
        let bad: Vec<f32> = vec![1.0, f32::NAN];
        assert!(add_f32_rows(&mut [0, 0], &[&bad], 0, &mut Vec::new(), &mut Vec::new()).is_err());
    }

    #[test]
    fn fixed_point_from_the_bits_is_round_of_the_scaled_value() {
        let old = |v: f64| (v * SCALE).round() as i128;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = vec![0.0, -0.0, 0.5 / SCALE, -0.5 / SCALE, 1.5 / SCALE, 2.5 / SCALE, 0.49 / SCALE, f64::MIN_POSITIVE, 5e-324, 1.0, -3.25, 4.0e18, -4.6e18];
        for _ in 0..20000 {
            // xorshift over exponents from tiny to 2^61, both signs.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let e = (x % 160) as i32 - 100;
            let m = 1.0 + (x >> 12) as f64 / (1u64 << 52) as f64;
            let v = m * 2f64.powi(e) * if x & 1 == 1 { -1.0 } else { 1.0 };
            values.push(v);
            values.push(v as f32 as f64);
        }
        for v in values {
            assert_eq!(to_fixed(v).unwrap(), old(v), "{v:e}");
        }
        assert!(to_fixed(8.6e37 / SCALE).is_err() && to_fixed(8.4e37 / SCALE).is_ok());
    }
}
