//! Reproducible float sums: every finite f64 added exactly into a fixed-point
//! superaccumulator, so that a sum — and so `sum`, `avg`, `var`, `stddev` of float columns —
//! is the exactly rounded value of the true sum, bit for bit the same however the events were
//! split into batches, workers and merges (Neal's "small superaccumulator").
//!
//! The accumulator holds the sum as an integer in units of 2⁻¹⁰⁷⁴ (the smallest subnormal),
//! in 32-bit chunks kept in i64 limbs so that 2³⁰ additions need no carry. Its partial state
//! travels as a few bytes (only the non-zero chunks) in a Binary column.

use polars::prelude::*;

/// Limbs of 32 bits: an f64's bits span chunks 0..=65; the rest is headroom for carries. The
/// top limb carries the sign (two's complement across limbs after [`ExactSum::normalize`]).
const LIMBS: usize = 68;
/// Additions (of values < 2³² per limb) before the limbs must be normalised.
const ADDS_BEFORE_CARRY: u32 = 1 << 30;

const NAN: u8 = 1;
const POS_INF: u8 = 2;
const NEG_INF: u8 = 4;

/// An exact sum of f64 values.
#[derive(Clone, Debug)]
pub struct ExactSum {
    limbs: [i64; LIMBS],
    adds: u32,
    /// NaN, +inf, −inf seen (they do not enter the limbs).
    special: u8,
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum { limbs: [0; LIMBS], adds: 0, special: 0 }
    }
}

impl ExactSum {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `x` exactly.
    #[inline]
    pub fn add(&mut self, x: f64) {
        let bits = x.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as usize;
        let frac = bits & ((1u64 << 52) - 1);
        if exp == 0x7ff {
            self.special |= if frac != 0 {
                NAN
            } else if x > 0.0 {
                POS_INF
            } else {
                NEG_INF
            };
            return;
        }
        if exp == 0 && frac == 0 {
            return;
        }
        // x = m · 2^(p − 1074): subnormals have p = 0 and no hidden bit.
        let (m, p) = if exp == 0 { (frac, 0) } else { (frac | (1u64 << 52), exp - 1) };
        let v = (m as u128) << (p % 32);
        let i = p / 32;
        let parts = [(v & 0xffff_ffff) as i64, ((v >> 32) & 0xffff_ffff) as i64, (v >> 64) as i64];
        if bits >> 63 == 0 {
            for (k, part) in parts.into_iter().enumerate() {
                self.limbs[i + k] += part;
            }
        } else {
            for (k, part) in parts.into_iter().enumerate() {
                self.limbs[i + k] -= part;
            }
        }
        self.count_add();
    }

    #[inline]
    fn count_add(&mut self) {
        self.adds += 1;
        if self.adds >= ADDS_BEFORE_CARRY {
            self.normalize();
        }
    }

    /// Adds another exact sum.
    pub fn merge(&mut self, other: &ExactSum) {
        let mut other = other.clone();
        other.normalize();
        for (a, b) in self.limbs.iter_mut().zip(other.limbs) {
            *a += b;
        }
        self.special |= other.special;
        self.count_add();
    }

    /// Carries so that every limb but the top one is in [0, 2³²).
    fn normalize(&mut self) {
        normalize(&mut self.limbs);
        self.adds = 0;
    }

    /// The exactly rounded f64 of the sum (round half to even); NaN when a NaN or both
    /// infinities were added, ±inf when one infinity was or the sum overflows.
    pub fn value(&self) -> f64 {
        match self.special {
            0 => {}
            POS_INF => return f64::INFINITY,
            NEG_INF => return f64::NEG_INFINITY,
            _ => return f64::NAN,
        }
        let mut l = self.limbs;
        normalize(&mut l);
        let negative = l[LIMBS - 1] < 0;
        if negative {
            for x in l.iter_mut() {
                *x = -*x;
            }
            normalize(&mut l);
        }
        let magnitude = round_units(&l);
        if negative { -magnitude } else { magnitude }
    }

    /// The sum as an unevaluated pair (hi, lo): hi = the rounded sum, lo = the rounded rest.
    fn double_double(&self) -> (f64, f64) {
        let hi = self.value();
        if !hi.is_finite() {
            return (hi, 0.0);
        }
        let mut rest = self.clone();
        rest.add(-hi);
        (hi, rest.value())
    }

    /// The state as bytes: a flags byte, then the index of the lowest non-zero limb and the
    /// limbs up to the highest non-zero one (i64 LE each).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut l = self.limbs;
        normalize(&mut l);
        let mut out = vec![self.special];
        let Some(lo) = l.iter().position(|&x| x != 0) else { return out };
        let hi = l.iter().rposition(|&x| x != 0).unwrap();
        out.push(lo as u8);
        for x in &l[lo..=hi] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// Reads [`to_bytes`](Self::to_bytes); None for bytes it did not write.
    pub fn from_bytes(b: &[u8]) -> Option<ExactSum> {
        let (&special, rest) = b.split_first()?;
        let mut s = ExactSum { special, ..Default::default() };
        let Some((&lo, limbs)) = rest.split_first() else { return Some(s) };
        let lo = lo as usize;
        if limbs.len() % 8 != 0 || lo + limbs.len() / 8 > LIMBS {
            return None;
        }
        for (k, chunk) in limbs.chunks_exact(8).enumerate() {
            s.limbs[lo + k] = i64::from_le_bytes(chunk.try_into().unwrap());
        }
        Some(s)
    }
}

fn normalize(l: &mut [i64; LIMBS]) {
    for i in 0..LIMBS - 1 {
        let carry = l[i] >> 32;
        l[i] -= carry << 32;
        l[i + 1] += carry;
    }
}

/// The f64 nearest to Σ l[i]·2^(32i) units of 2⁻¹⁰⁷⁴ (limbs normalised, non-negative).
fn round_units(l: &[i64; LIMBS]) -> f64 {
    let Some(top) = l.iter().rposition(|&x| x != 0) else { return 0.0 };
    let lo = top.saturating_sub(2);
    let mut w: u128 = 0;
    for i in (lo..=top).rev() {
        w = (w << 32) | l[i] as u128;
    }
    let sticky = l[..lo].iter().any(|&x| x != 0);
    let bits = 128 - w.leading_zeros() as usize + 32 * lo;
    if bits <= 53 {
        // Below 2⁵³ units the integer is the f64's bit pattern (subnormal, or exponent 1).
        return f64::from_bits(w as u64);
    }
    let shift_total = bits - 53;
    let shift = shift_total - 32 * lo;
    let mut m = (w >> shift) as u64;
    let rem = w & ((1u128 << shift) - 1);
    let half = 1u128 << (shift - 1);
    if rem > half || (rem == half && (sticky || m & 1 == 1)) {
        m += 1;
    }
    let mut exp = shift_total as u64 + 1;
    if m == 1 << 53 {
        m >>= 1;
        exp += 1;
    }
    if exp >= 0x7ff {
        return f64::INFINITY;
    }
    f64::from_bits((exp << 52) | (m & ((1u64 << 52) - 1)))
}

/// Σx and Σx² of a column, exactly (x² split into its rounded value and the exact error).
#[derive(Clone, Debug, Default)]
pub struct ExactMoments {
    pub sum: ExactSum,
    pub squares: ExactSum,
}

impl ExactMoments {
    pub fn add(&mut self, x: f64) {
        self.sum.add(x);
        let p = x * x;
        self.squares.add(p);
        if p.is_finite() {
            self.squares.add(x.mul_add(x, -p));
        }
    }

    /// Σ(x − mean)² from n, Σx and Σx², in double-double arithmetic on the exact sums: the same
    /// inputs give the same bits, and cancellation costs nothing visible in f64.
    pub fn m2(sum: &ExactSum, squares: &ExactSum, n: u64) -> f64 {
        if n == 0 {
            return f64::NAN;
        }
        let s1 = sum.double_double();
        let s2 = squares.double_double();
        if !(s1.0.is_finite() && s2.0.is_finite()) {
            return f64::NAN;
        }
        // mean = s1 / n, m2 = s2 − mean·s1.
        let mean = dd_div(s1, n as f64);
        let prod = dd_mul(mean, s1);
        let m2 = dd_add(s2, (-prod.0, -prod.1));
        (m2.0 + m2.1).max(0.0)
    }
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

fn fast_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

fn dd_add(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let (s, e) = two_sum(a.0, b.0);
    let (t, f) = two_sum(a.1, b.1);
    let (s, e) = fast_two_sum(s, e + t);
    fast_two_sum(s, e + f)
}

fn dd_mul(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
    let p = a.0 * b.0;
    let e = a.0.mul_add(b.0, -p);
    fast_two_sum(p, e + (a.0 * b.1 + a.1 * b.0))
}

fn dd_div(a: (f64, f64), d: f64) -> (f64, f64) {
    let q1 = a.0 / d;
    let p = q1 * d;
    let e = q1.mul_add(d, -p);
    let q2 = ((a.0 - p) - e + a.1) / d;
    fast_two_sum(q1, q2)
}

// ---- as polars expressions (a Binary column holds one state per group) ----

/// Calls `f` with each non-null value of a numeric column, as f64.
fn for_each_value(c: &Column, mut f: impl FnMut(f64)) -> PolarsResult<()> {
    let s = c.as_materialized_series().cast(&DataType::Float64)?;
    let ca = s.f64()?;
    if ca.null_count() == 0 {
        ca.downcast_iter().for_each(|arr| arr.values().iter().for_each(|&v| f(v)));
    } else {
        ca.iter().flatten().for_each(f);
    }
    Ok(())
}

fn binary_scalar(name: PlSmallStr, bytes: Vec<u8>) -> Column {
    Column::new(name, [bytes.as_slice()])
}

fn states_of(c: &Column) -> PolarsResult<impl Iterator<Item = PolarsResult<ExactSum>> + '_> {
    let b = c.binary()?;
    Ok(b.iter().flatten().map(|bytes| {
        ExactSum::from_bytes(bytes).ok_or_else(|| polars_err!(ComputeError: "a partial sum state of {} bytes is not one this version wrote", bytes.len()))
    }))
}

/// The partial state of `x` (any numeric column, nulls skipped): its exact sum.
pub fn sum_state(x: PlExpr) -> PlExpr {
    x.agg_with_fmt_str(
        |c: Column| {
            let mut s = ExactSum::new();
            for_each_value(&c, |v| s.add(v))?;
            Ok(binary_scalar(c.name().clone(), s.to_bytes()))
        },
        |_, f| Ok(Field::new(f.name().clone(), DataType::Binary)),
        "exact_sum",
    )
}

/// The partial state of Σx² (nulls skipped).
pub fn squares_state(x: PlExpr) -> PlExpr {
    x.agg_with_fmt_str(
        |c: Column| {
            let mut m = ExactMoments::default();
            for_each_value(&c, |v| m.add(v))?;
            Ok(binary_scalar(c.name().clone(), m.squares.to_bytes()))
        },
        |_, f| Ok(Field::new(f.name().clone(), DataType::Binary)),
        "exact_squares",
    )
}

/// Merges a group's states (a Binary column) into one.
pub fn merge_states(states: PlExpr) -> PlExpr {
    states.agg_with_fmt_str(
        |c: Column| {
            let mut s = ExactSum::new();
            for part in states_of(&c)? {
                s.merge(&part?);
            }
            Ok(binary_scalar(c.name().clone(), s.to_bytes()))
        },
        |_, f| Ok(Field::new(f.name().clone(), DataType::Binary)),
        "merge_exact_sum",
    )
}

/// The rounded sums of a state column (null states stay null).
pub fn state_value(states: PlExpr) -> PlExpr {
    states.map(
        |c: Column| {
            let b = c.binary()?;
            let mut out: Vec<Option<f64>> = Vec::with_capacity(b.len());
            for v in b.iter() {
                out.push(match v {
                    None => None,
                    Some(bytes) => Some(ExactSum::from_bytes(bytes).ok_or_else(|| polars_err!(ComputeError: "bad partial sum state"))?.value()),
                });
            }
            Ok(Float64Chunked::from_iter_options(c.name().clone(), out.into_iter()).into_column())
        },
        |_, f| Ok(Field::new(f.name().clone(), DataType::Float64)),
    )
}

/// Σ(x − mean)² per row from the count and the two exact-sum state columns.
pub fn state_m2(n: PlExpr, sum: PlExpr, squares: PlExpr) -> PlExpr {
    n.map_many(
        |cols: &mut [Column]| {
            let n = cols[0].as_materialized_series().cast(&DataType::UInt64)?;
            let n = n.u64()?;
            let (s1, s2) = (cols[1].binary()?, cols[2].binary()?);
            let bad = || polars_err!(ComputeError: "bad partial sum state");
            let mut out: Vec<Option<f64>> = Vec::with_capacity(n.len());
            for ((n, a), b) in n.iter().zip(s1.iter()).zip(s2.iter()) {
                out.push(match (n, a, b) {
                    (Some(n), Some(a), Some(b)) if n > 0 => {
                        let (a, b) = (ExactSum::from_bytes(a).ok_or_else(bad)?, ExactSum::from_bytes(b).ok_or_else(bad)?);
                        Some(ExactMoments::m2(&a, &b, n))
                    }
                    _ => None,
                });
            }
            Ok(Float64Chunked::from_iter_options(cols[0].name().clone(), out.into_iter()).into_column())
        },
        &[sum, squares],
        |_, f| Ok(Field::new(f[0].name().clone(), DataType::Float64)),
    )
}

type PlExpr = polars::prelude::Expr;

#[cfg(test)]
mod tests {
    use super::*;

    /// Shewchuk's exact partials (the algorithm behind Python's math.fsum): an independent
    /// oracle for the rounded sum.
    fn fsum(xs: &[f64]) -> f64 {
        let mut partials: Vec<f64> = Vec::new();
        for &x0 in xs {
            let mut x = x0;
            let mut i = 0;
            for k in 0..partials.len() {
                let mut y = partials[k];
                if x.abs() < y.abs() {
                    std::mem::swap(&mut x, &mut y);
                }
                let hi = x + y;
                let lo = y - (hi - x);
                if lo != 0.0 {
                    partials[i] = lo;
                    i += 1;
                }
                x = hi;
            }
            partials.truncate(i);
            partials.push(x);
        }
        // Round the partials' sum correctly (half-even across the last two), as fsum does.
        let mut n = partials.len();
        let mut hi = 0.0;
        if n > 0 {
            n -= 1;
            hi = partials[n];
            let mut lo = 0.0;
            while n > 0 {
                let x = hi;
                n -= 1;
                let y = partials[n];
                hi = x + y;
                let yr = hi - x;
                lo = y - yr;
                if lo != 0.0 {
                    break;
                }
            }
            if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
                let y = lo * 2.0;
                let x = hi + y;
                let yr = x - hi;
                if y == yr {
                    hi = x;
                }
            }
        }
        hi
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 11
        }
        fn float(&mut self) -> f64 {
            // Random sign, mantissa and a wide exponent range (−60..60), sometimes tiny.
            let m = (self.next() % (1 << 53)) as f64 / (1u64 << 53) as f64;
            let e = (self.next() % 120) as i32 - 60;
            let s = if self.next() % 2 == 0 { 1.0 } else { -1.0 };
            s * m * 2f64.powi(e)
        }
    }

    fn exact(xs: &[f64]) -> f64 {
        let mut s = ExactSum::new();
        xs.iter().for_each(|&x| s.add(x));
        s.value()
    }

    #[test]
    fn equals_the_correctly_rounded_sum() {
        let mut r = Lcg(7);
        for len in [0, 1, 2, 3, 10, 1000, 20000] {
            let xs: Vec<f64> = (0..len).map(|_| r.float()).collect();
            assert_eq!(exact(&xs).to_bits(), fsum(&xs).to_bits(), "len {len}");
        }
        // Cancellation that naive summation gets wrong.
        let xs = [1e100, 1.0, -1e100, 1e-30];
        assert_eq!(exact(&xs), 1.0 + 1e-30);
        assert_eq!(fsum(&xs), exact(&xs));
        let xs = [0.1; 10];
        assert_eq!(exact(&xs), 1.0);
        // Subnormals, the largest finite values, overflow, ties.
        let tiny = f64::from_bits(1);
        assert_eq!(exact(&[tiny, tiny, tiny]), f64::from_bits(3));
        assert_eq!(exact(&[f64::MAX, -f64::MAX, f64::MIN_POSITIVE]), f64::MIN_POSITIVE);
        assert_eq!(exact(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(exact(&[-f64::MAX, -f64::MAX]), f64::NEG_INFINITY);
        assert_eq!(exact(&[1.0, 2f64.powi(-53)]), 1.0); // tie → even
        assert_eq!(exact(&[1.0, 2f64.powi(-53), 2f64.powi(-100)]), 1.0 + 2f64.powi(-52)); // above the tie
        assert_eq!(exact(&[1.0 + 2f64.powi(-52), 2f64.powi(-53)]), 1.0 + 2f64.powi(-51)); // tie → even, up
        assert_eq!(exact(&[-3.5, 1.25]), -2.25);
        assert!(exact(&[1.0, f64::NAN]).is_nan());
        assert!(exact(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
        assert_eq!(exact(&[f64::INFINITY, 1.0]), f64::INFINITY);
    }

    #[test]
    fn any_split_and_order_gives_the_same_bits() {
        let mut r = Lcg(11);
        let xs: Vec<f64> = (0..5000).map(|_| r.float() as f32 as f64).collect();
        let whole = exact(&xs);
        for parts in [2, 3, 7, 64] {
            let mut states: Vec<ExactSum> = (0..parts).map(|_| ExactSum::new()).collect();
            for (i, &x) in xs.iter().enumerate() {
                states[(i * 31 + parts) % parts].add(x);
            }
            // Through bytes, merged in reverse.
            let mut total = ExactSum::new();
            for s in states.iter().rev() {
                total.merge(&ExactSum::from_bytes(&s.to_bytes()).unwrap());
            }
            assert_eq!(total.value().to_bits(), whole.to_bits(), "{parts} parts");
        }
        assert!(ExactSum::from_bytes(&[0, 70, 1, 2, 3, 4, 5, 6, 7, 8]).is_none());
    }

    #[test]
    fn second_moment_is_accurate_under_cancellation() {
        // Values 1e6 + small: naive Σx² − (Σx)²/n loses everything in f64.
        let xs: Vec<f64> = (0..1000).map(|i| 1e6 + (i % 7) as f64 * 0.125).collect();
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let want: f64 = xs.iter().map(|x| (x - mean) * (x - mean)).sum();
        let mut m = ExactMoments::default();
        xs.iter().for_each(|&x| m.add(x));
        let got = ExactMoments::m2(&m.sum, &m.squares, xs.len() as u64);
        assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    }
}
