//! What exact float sums cost (`cargo bench --workspace --bench aggregate`): the partial step
//! of live queries over 16 384-event batches of float32 columns, against polars adding the
//! same columns itself (in f32, not reproducible), side by side in one run. Prints Markdown.

use std::time::Instant;

use query::polars::prelude::*;
use query::polars::sql::SQLContext;
use query::LiveQuery;

const ROWS: usize = 16_384;
const ROUNDS: usize = 200;

mod common;

fn batch(seed: u64) -> DataFrame {
    let mut uniform = common::uniform(seed);
    let mut next = move || uniform() as f32;
    let a: Vec<f32> = (0..ROWS).map(|_| next() * 4.0).collect();
    let b: Vec<f32> = (0..ROWS).map(|_| next() * 1e3).collect();
    let k: Vec<f64> = (0..ROWS).map(|_| (next() * 40.0).floor() as f64).collect();
    let ts: Vec<u64> = (0..ROWS as u64).collect();
    df!("timestamp" => ts, "a" => a, "b" => b, "k" => k).unwrap()
}

/// Seconds per batch, best of a few repetitions of `ROUNDS` batches.
fn time(mut f: impl FnMut(&DataFrame)) -> f64 {
    let batches: Vec<DataFrame> = (0..8).map(batch).collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for i in 0..ROUNDS {
            f(&batches[i % batches.len()]);
        }
        best = best.min(t.elapsed().as_secs_f64() / ROUNDS as f64);
    }
    best
}

fn main() {
    let columns: Vec<String> = ["timestamp", "a", "b", "k"].map(String::from).to_vec();
    let cases = [
        ("sum + avg, no key", "SELECT sum(a) AS s, avg(b) AS m FROM events"),
        ("sum + avg by 40 keys", "SELECT k, sum(a) AS s, avg(b) AS m FROM events GROUP BY k"),
        ("stddev by 40 keys", "SELECT k, stddev(a) AS sd FROM events GROUP BY k"),
        ("count by 40 keys (no float sum)", "SELECT k, count(*) AS n FROM events GROUP BY k"),
    ];
    println!("| partial step, {ROWS} events | exact (ns/event) | polars' own f32 aggregate (ns/event) | ratio |");
    println!("|---|---|---|---|");
    for (what, sql) in cases {
        let q = LiveQuery::plan(sql, &columns).unwrap();
        let exact = time(|b| {
            q.partial(b).unwrap();
        });
        let native = time(|b| {
            let mut ctx = SQLContext::new();
            ctx.register("events", b.clone().lazy());
            ctx.execute(sql).unwrap().collect().unwrap();
        });
        let ns = |s: f64| s * 1e9 / ROWS as f64;
        println!("| {what} | {:.1} | {:.1} | {:.2} |", ns(exact), ns(native), exact / native);
    }
}
