//! What the query benches share: reproducible uniform numbers (xorshift64, no dependency).

/// Uniform numbers in [0, 1) from `seed`, the same sequence for the same seed.
pub fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}
