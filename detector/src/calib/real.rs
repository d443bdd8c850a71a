//! The float type a formula computes in: f32 for f32 constants (psana's numpy float32), f64 when
//! a constant is stored as f64 (numpy promotes; beamtime rounds the f64 result to f32 once).

use std::ops::{Add, Div, Mul, Sub};

use crate::constants::FloatValues;

pub trait Real: Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> + Send + Sync + 'static {
    const ZERO: Self;
    const ONE: Self;
    fn from_u16(x: u16) -> Self;
    fn from_u8(x: u8) -> Self;
    fn to_f32(self) -> f32;
    fn to_f64(self) -> f64;
    /// A Python float scalar in this precision (numpy casts it to the array's float32).
    fn from_f64(x: f64) -> Self;
    /// Values of a constant in this precision (f32 → f64 exact; f64 → f32 rounds, only used
    /// when the caller chose f32 because the constant is f32).
    fn from_values(v: &FloatValues) -> Vec<Self>;
    /// `if pick_a { a } else { b }` with bit masks, so a loop of it vectorises.
    fn select(pick_a: bool, a: Self, b: Self) -> Self;
    /// psana's protected inverse: `1/x`, 0 where x is 0.
    #[inline]
    fn inverse_protected(self) -> Self {
        if self == Self::ZERO { Self::ZERO } else { Self::ONE / self }
    }
}

impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    #[inline]
    fn from_u16(x: u16) -> f32 {
        x as f32
    }
    #[inline]
    fn from_u8(x: u8) -> f32 {
        x as f32
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    #[inline]
    fn select(pick_a: bool, a: f32, b: f32) -> f32 {
        let keep_a = (pick_a as u32).wrapping_neg();
        f32::from_bits((a.to_bits() & keep_a) | (b.to_bits() & !keep_a))
    }
    fn from_values(v: &FloatValues) -> Vec<f32> {
        match v {
            FloatValues::F32(v) => v.clone(),
            FloatValues::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
}

impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    #[inline]
    fn from_u16(x: u16) -> f64 {
        x as f64
    }
    #[inline]
    fn from_u8(x: u8) -> f64 {
        x as f64
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn from_f64(x: f64) -> f64 {
        x
    }
    #[inline]
    fn select(pick_a: bool, a: f64, b: f64) -> f64 {
        let keep_a = (pick_a as u64).wrapping_neg();
        f64::from_bits((a.to_bits() & keep_a) | (b.to_bits() & !keep_a))
    }
    fn from_values(v: &FloatValues) -> Vec<f64> {
        match v {
            FloatValues::F32(v) => v.iter().map(|&x| x as f64).collect(),
            FloatValues::F64(v) => v.clone(),
        }
    }
}

/// Whether every one of these constants is stored as f32 (absent ones do not count).
pub fn all_f32(values: &[Option<&FloatValues>]) -> bool {
    values.iter().flatten().all(|v| v.is_f32())
}
