//! What a live result covers: since start, the newest run or step, or a sliding window of
//! event time or of events. Modes are hidden group keys (`__m0`, `__m1`) that a state carries
//! and that pruning drops as the run advances.

use polars::prelude::*;

use crate::error::{QueryError, Result};

fn not_live(msg: impl Into<String>) -> QueryError {
    QueryError::NotLive(msg.into())
}

/// What a live result covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LiveMode {
    /// Every event since the query started (or was reset).
    #[default]
    Total,
    /// The newest run only (a new run starts the result afresh).
    Run,
    /// The newest step of the newest run (a scan's current point).
    Step,
    /// The events of the last `window` of event time, advancing in sixteenths of it.
    Window(std::time::Duration),
    /// The newest N events (by the reader's event order, column [`EVENT_INDEX`]), advancing
    /// in sixteenths of N.
    Events(u64),
}

/// The column a live reader adds to each batch: the event's index in the run (0, 1, …), for
/// windows counted in events.
pub const EVENT_INDEX: &str = "__event";

/// A sliding window is kept as this many bins of event time.
pub(crate) const WINDOW_BINS: i64 = 16;

impl LiveMode {
    /// `total`, `run`, `step`, or a window length such as `10s`, `500ms`, `2min`.
    pub fn parse(s: &str) -> Result<LiveMode> {
        let s = s.trim();
        let s = s.strip_prefix("window").map(str::trim).unwrap_or(s);
        Ok(match s.to_ascii_lowercase().as_str() {
            "total" | "start" | "since-start" | "all" => LiveMode::Total,
            "run" => LiveMode::Run,
            "step" => LiveMode::Step,
            other if !other.is_empty() && other.bytes().all(|b| b.is_ascii_digit() || b == b'_') => {
                let n: u64 = other.replace('_', "").parse().map_err(|_| not_live(format!("mode `{s}`: too many events")))?;
                if n < WINDOW_BINS as u64 {
                    return Err(not_live(format!("a window of {n} events is too small: at least {WINDOW_BINS}")));
                }
                LiveMode::Events(n)
            }
            other => LiveMode::Window(parse_duration(other).ok_or_else(|| {
                not_live(format!("mode `{s}`: write total, run, step, a window of event time such as 10s, 500ms, 2min, or of events such as 100000"))
            })?),
        })
    }

    pub(crate) fn hidden(&self) -> &'static [&'static str] {
        match self {
            LiveMode::Total => &[],
            LiveMode::Run => &["run AS __m0"],
            LiveMode::Step => &["run AS __m0", "step AS __m1"],
            LiveMode::Window(_) => &["time AS __m0"],
            LiveMode::Events(_) => &["__event AS __m0"],
        }
    }

    pub(crate) fn keys(&self) -> Vec<Expr> {
        (0..self.hidden().len()).map(|i| col(format!("__m{i}"))).collect()
    }
}

impl std::fmt::Display for LiveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiveMode::Total => f.write_str("total"),
            LiveMode::Run => f.write_str("run"),
            LiveMode::Step => f.write_str("step"),
            // Parseable back by `LiveMode::parse`.
            LiveMode::Window(d) if d.subsec_nanos() == 0 => write!(f, "{}s", d.as_secs()),
            LiveMode::Window(d) => write!(f, "{}us", d.as_micros()),
            LiveMode::Events(n) => write!(f, "{n}"),
        }
    }
}

/// `10s`, `500ms`, `2min`, `1h`, `1.5s`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ns" => v * 1e-9,
        "us" | "µs" => v * 1e-6,
        "ms" => v * 1e-3,
        "s" | "sec" => v,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return None,
    };
    (secs > 0.0 && secs.is_finite()).then(|| std::time::Duration::from_secs_f64(secs))
}

impl LiveMode {
    /// What the mode keeps of a state (None: everything): the newest run, the newest step of
    /// it, or the newest window bins. Exact: whatever is newest here is at most the newest
    /// anywhere.
    pub(crate) fn keep(&self) -> Option<Expr> {
        Some(match self {
            LiveMode::Total => return None,
            LiveMode::Run => col("__m0").eq(col("__m0").max()),
            LiveMode::Step => {
                let newest_run = col("__m0").eq(col("__m0").max());
                let step_in_newest = col("__m1").filter(newest_run.clone()).max();
                newest_run.and(col("__m1").eq(step_in_newest))
            }
            LiveMode::Window(_) | LiveMode::Events(_) => col("__m0").gt(col("__m0").max() - lit(WINDOW_BINS)),
        })
    }

    /// The width of a window bin in the hidden key's unit (ns of event time, or events).
    pub(crate) fn window_bin(&self) -> Option<i64> {
        match self {
            LiveMode::Window(w) => Some((w.as_nanos() as i64 / WINDOW_BINS).max(1)),
            LiveMode::Events(n) => Some((*n as i64 / WINDOW_BINS).max(1)),
            _ => None,
        }
    }

    pub(crate) fn is_window(&self) -> bool {
        self.window_bin().is_some()
    }
}
