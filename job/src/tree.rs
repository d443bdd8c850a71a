//! The merge tree's shape: which rank each worker's states go to.
//!
//! Merging every worker's cumulative state is the collector's cost per frame, linear in the
//! workers (a 0.5-megapixel mean image from 64 workers takes longer than a frame). With more
//! workers than the fan-in, workers are grouped: the first of each `fan_in` consecutive
//! workers combines the states of the others with its own and sends one state up; the
//! combiners are grouped the same way, level after level, until at most `fan_in` nodes report
//! to the collector. Each merge is the query's own (associative, exact), so the result is the
//! flat one bit for bit.

/// The tree over a job's worker ranks (in their order).
#[derive(Clone, Debug)]
pub struct MergeTree {
    workers: Vec<i32>,
    fan_in: usize,
    collector: i32,
}

impl MergeTree {
    /// `fan_in` < 2, or no more workers than `fan_in`: flat (every worker reports to the
    /// collector in its updates, as without a tree).
    pub fn new(workers: &[i32], fan_in: usize, collector: i32) -> Self {
        MergeTree { workers: workers.to_vec(), fan_in, collector }
    }

    /// States travel up a tree (else in the workers' updates).
    pub fn routed(&self) -> bool {
        self.fan_in >= 2 && self.workers.len() > self.fan_in
    }

    /// The rank a worker's states go to: a combiner, or the collector.
    pub fn parent(&self, rank: i32) -> i32 {
        let Some(i) = self.workers.iter().position(|&w| w == rank) else { return self.collector };
        match self.parent_index(i) {
            Some(p) => self.workers[p],
            None => self.collector,
        }
    }

    /// The workers whose states come to `rank` (empty for a leaf).
    pub fn children(&self, rank: i32) -> Vec<i32> {
        (0..self.workers.len())
            .filter(|&i| self.workers[i] != rank && self.parent_index(i).is_some_and(|p| self.workers[p] == rank))
            .map(|i| self.workers[i])
            .collect()
    }

    /// Level ℓ holds the workers whose index is a multiple of fan_in^ℓ; one that is not a
    /// multiple of fan_in^(ℓ+1) reports to the one that is, at the start of its group. A
    /// level of at most fan_in nodes reports to the collector.
    fn parent_index(&self, i: usize) -> Option<usize> {
        if !self.routed() {
            return None;
        }
        let n = self.workers.len();
        let mut span = 1usize; // fan_in^ℓ
        loop {
            if n.div_ceil(span) <= self.fan_in {
                return None;
            }
            let group = span.saturating_mul(self.fan_in);
            if i % group != 0 {
                return Some(i - i % group);
            }
            span = group;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every worker reaches the collector through a chain of parents, a combiner merges at
    /// most `fan_in - 1` children per level below the top, the collector at most `fan_in`.
    fn check(n: usize, fan_in: usize) {
        let workers: Vec<i32> = (2..2 + n as i32).collect();
        let t = MergeTree::new(&workers, fan_in, 0);
        let mut levels = 0;
        while t.routed() && n.div_ceil(fan_in.pow(levels)) > fan_in {
            levels += 1;
        }
        let mut at_collector = 0;
        for &w in &workers {
            let mut hops = 0;
            let mut r = w;
            while r != 0 {
                r = t.parent(r);
                hops += 1;
                assert!(hops <= 64, "{n} workers, fan-in {fan_in}: a cycle from {w}");
            }
            if t.parent(w) == 0 {
                at_collector += 1;
            }
            let children = t.children(w);
            assert!(children.len() <= fan_in.saturating_sub(1) * levels as usize, "{n}/{fan_in}: {w} has {children:?}");
            for c in children {
                assert_eq!(t.parent(c), w);
            }
        }
        if t.routed() {
            assert!(at_collector <= fan_in, "{n}/{fan_in}: {at_collector} report to the collector");
        } else {
            assert_eq!(at_collector, n);
        }
    }

    #[test]
    fn every_worker_reaches_the_collector_with_bounded_fan_in() {
        for n in 1..=70 {
            for fan_in in [0, 1, 2, 3, 4, 8, 16] {
                check(n, fan_in);
            }
        }
    }

    #[test]
    fn sixty_four_workers_at_fan_in_eight_are_eight_groups_of_eight() {
        let workers: Vec<i32> = (2..66).collect();
        let t = MergeTree::new(&workers, 8, 0);
        assert!(t.routed());
        assert_eq!(t.parent(2), 0);
        assert_eq!(t.children(2), (3..10).collect::<Vec<_>>());
        assert_eq!(t.parent(9), 2);
        assert_eq!(t.parent(10), 0);
        assert_eq!(t.parent(65), 58);
        // Nine workers at fan-in two: four levels, worker 0 combining three children.
        let t = MergeTree::new(&(0..9).map(|i| i + 2).collect::<Vec<_>>(), 2, 0);
        assert_eq!(t.children(2), vec![3, 4, 6]);
        assert_eq!(t.children(6), vec![7, 8]);
        assert_eq!(t.parent(10), 0);
        assert_eq!(t.parent(2), 0);
        // Eight workers at fan-in eight: flat.
        assert!(!MergeTree::new(&(2..10).collect::<Vec<_>>(), 8, 0).routed());
    }
}
