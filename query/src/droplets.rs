//! Droplet counting (smalldata_tools' droplet algorithm, counting only): 4-connected groups of
//! pixels above a join threshold that hold at least one pixel above the seed threshold.

/// A reusable flood fill over one `rows × cols` plane (its buffers live across events).
pub(crate) struct Finder {
    rows: usize,
    cols: usize,
    seen: Vec<bool>,
    stack: Vec<usize>,
}

impl Finder {
    pub(crate) fn new(rows: usize, cols: usize) -> Self {
        Finder {
            rows,
            cols,
            seen: vec![false; rows * cols],
            stack: Vec::new(),
        }
    }

    /// Droplets of the plane whose pixel `i` (C order) is `value(i)`.
    pub(crate) fn count(&mut self, value: impl Fn(usize) -> f64, seed: f64, join: f64) -> u64 {
        let (rows, cols) = (self.rows, self.cols);
        self.seen.iter_mut().for_each(|s| *s = false);
        let mut droplets = 0;
        for start in 0..rows * cols {
            // Each droplet is entered at its first seed pixel; the fill marks all of it.
            if self.seen[start] || !(value(start) > seed) {
                continue;
            }
            droplets += 1;
            self.seen[start] = true;
            self.stack.push(start);
            while let Some(i) = self.stack.pop() {
                let (r, c) = (i / cols, i % cols);
                let mut visit = |j: usize| {
                    if !self.seen[j] && value(j) > join {
                        self.seen[j] = true;
                        self.stack.push(j);
                    }
                };
                if r > 0 {
                    visit(i - cols);
                }
                if r + 1 < rows {
                    visit(i + cols);
                }
                if c > 0 {
                    visit(i - 1);
                }
                if c + 1 < cols {
                    visit(i + 1);
                }
            }
        }
        droplets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_connected_groups_with_a_seed() {
        // 0 1 2 3 4
        // 9 . . 9 .    two seeds at (1,0) and (1,3); (0,1)–(0,3) join them through the row above
        // . . . . 5    (2,4) joins nothing above 4 alone: a droplet only if it is a seed
        #[rustfmt::skip]
        let plane = [
            0.0, 5.0, 5.0, 5.0, 0.0,
            9.0, 0.0, 0.0, 9.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 5.0,
        ];
        let mut f = Finder::new(3, 5);
        // Joined at 4: (1,0) is not 4-connected to (0,1) (diagonal) → 2 droplets; (2,4) has no seed.
        assert_eq!(f.count(|i| plane[i], 8.0, 4.0), 2);
        // Seeds only: two single pixels.
        assert_eq!(f.count(|i| plane[i], 8.0, 8.0), 2);
        // Everything above 4 a seed: (1,0), the row-0 run with (1,3), and (2,4).
        assert_eq!(f.count(|i| plane[i], 4.0, 4.0), 3);
        // NaN is never above a threshold.
        assert_eq!(f.count(|_| f64::NAN, 0.0, 0.0), 0);
    }
}
