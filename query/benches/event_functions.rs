//! What an event function costs (`cargo bench --workspace --bench event_functions`): the
//! partial step of a live query calling the user's compiled Rust over 16 384-event batches,
//! against the same computation written as SQL (a built-in), alternated in one run; and the
//! compile time of a library, cold and from the cache. Prints Markdown.

use std::sync::Arc;
use std::time::Instant;

use query::polars::prelude::*;
use query::{LiveMode, LiveQuery};

const ROWS: usize = 16_384;

mod common;

fn batch(seed: u64) -> DataFrame {
    let mut next = common::uniform(seed);
    let v: Vec<f64> = (0..ROWS).map(|_| next() * 4.0).collect();
    let w: Vec<f64> = (0..ROWS).map(|_| 0.5 + next()).collect();
    let ts: Vec<u64> = (0..ROWS as u64).map(|i| (seed << 32) + i).collect();
    df!("timestamp" => ts, "v" => v, "w" => w).unwrap()
}

const SOURCE: &str = "fn ratio(a: f64, b: f64) -> f64 {\n    a / b\n}\n\nfn gated(a: f64, b: f64) -> Option<f64> {\n    if b > 1.0 { Some(a * b) } else { None }\n}\n";

fn main() {
    let events: usize = std::env::var("BEAMTIME_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let cache = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let compiled = functions::compile(SOURCE, cache.path()).unwrap();
    let cold = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let again = functions::compile(SOURCE, cache.path()).unwrap();
    let cached = t.elapsed().as_secs_f64();
    assert!(again.cached);
    let size = std::fs::metadata(&compiled.path).unwrap().len();
    functions::registry::install(Arc::new(functions::Library::load(&compiled.path, &compiled.hash).unwrap()));

    let columns: Vec<String> = ["timestamp", "v", "w"].iter().map(|s| s.to_string()).collect();
    let pairs = [
        ("ratio(a, b) = a / b", "SELECT sum(ratio(v, w)) AS s FROM events", "SELECT sum(v / w) AS s FROM events"),
        (
            "gated(a, b): Option (null when b ≤ 1)",
            "SELECT sum(gated(v, w)) AS s, count(gated(v, w)) AS n FROM events",
            "SELECT sum(CASE WHEN w > 1.0 THEN v * w END) AS s, count(CASE WHEN w > 1.0 THEN v * w END) AS n FROM events",
        ),
    ];
    let batches: Vec<DataFrame> = (1..9).map(batch).collect();
    let rounds = events.div_ceil(ROWS);
    println!("### Event functions against built-ins ({} events per measurement, batches of {ROWS})\n", rounds * ROWS);
    println!("| function | event function | built-in SQL | ratio |");
    println!("|---|---|---|---|");
    for (label, udf, builtin) in pairs {
        let a = LiveQuery::plan_mode(udf, &columns, LiveMode::default()).unwrap();
        let b = LiveQuery::plan_mode(builtin, &columns, LiveMode::default()).unwrap();
        // The same result first (exactly rounded sums of the same doubles).
        let (ra, rb) = (a.partial(&batches[0]).unwrap(), b.partial(&batches[0]).unwrap());
        assert_eq!(a.finalize(&ra).unwrap(), b.finalize(&rb).unwrap(), "{label}");
        let (mut best_a, mut best_b) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            for (plan, best) in [(&a, &mut best_a), (&b, &mut best_b)] {
                let t = Instant::now();
                for i in 0..rounds {
                    std::hint::black_box(plan.partial(&batches[i % batches.len()]).unwrap());
                }
                *best = best.min(t.elapsed().as_secs_f64() / (rounds * ROWS) as f64);
            }
        }
        println!("| {label} | {:.1} ns/event | {:.1} ns/event | {:.2}× |", best_a * 1e9, best_b * 1e9, best_a / best_b);
    }
    println!(
        "\nA library of two functions: compiled in {cold:.2} s cold (rustc on the generated file), {:.1} ms from the cache; {:.0} kB to ship to each rank.\n",
        cached * 1e3,
        size as f64 / 1e3
    );
}
