//! Spec §5.5's table for the Jungfrau 0.5M default geometry (data → image row and column), an
//! oracle written from the spec for the geometry tests here and the job's image tests.

/// Spec §5.5's table for the Jungfrau 0.5M default geometry: data row → image row.
pub fn jungfrau05m_row(r: usize) -> usize {
    match r {
        0..=254 => 513 - r,
        255 => 258,
        256 => 256,
        _ => 511 - r,
    }
}

/// Spec §5.5's table: data col → image col (2-bin gaps after each 256-column ASIC).
pub fn jungfrau05m_col(c: usize) -> usize {
    match c {
        0..=254 => c,
        255 => 256,
        256 => 258,
        257..=510 => c + 2,
        511 => 514,
        512 => 516,
        513..=766 => c + 4,
        767 => 772,
        768 => 774,
        _ => c + 6,
    }
}
