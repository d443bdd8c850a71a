//! Aggregates of live queries, one unit each (DataFusion's `Accumulator`, as polars
//! expressions): the partial states of a batch, how states of the same group merge, and the
//! result from a merged state — or why it cannot be merged exactly. Adding an aggregate is one
//! entry in [`FUNCTIONS`] plus its unit.
//!
//! State columns are named `__s{j}_{part}` for the j-th aggregate of a query ([`Slot`]); the
//! argument is `__a{j}`, the event order `__ts`. Float sums are exact ([`crate::exact`]) so
//! that results are the same bits however events were split.

use std::fmt::Debug;

use polars::prelude::*;

use crate::error::{QueryError, Result};
use crate::array_agg;
use crate::exact;

type PlExpr = polars::prelude::Expr;

/// Where the j-th aggregate keeps its state, and what the state looks like.
pub(crate) struct Slot<'a> {
    pub j: usize,
    /// The schema of the rows (partial) or states (merge, finish) being read.
    pub schema: &'a Schema,
}

impl Slot<'_> {
    pub fn name(&self, part: &str) -> String {
        format!("__s{}_{part}", self.j)
    }
    pub fn col(&self, part: &str) -> PlExpr {
        col(self.name(part))
    }
    /// The aggregate's argument column (partial step).
    pub fn arg(&self) -> PlExpr {
        col(format!("__a{}", self.j))
    }
    fn arg_type(&self) -> Option<&DataType> {
        self.schema.get(&format!("__a{}", self.j))
    }
    /// The argument is an array (an image, a profile): the aggregate is element-wise.
    fn arg_is_array(&self) -> bool {
        matches!(self.arg_type(), Some(DataType::Array(..) | DataType::List(..)))
    }
    fn has(&self, part: &str) -> bool {
        self.schema.contains(&self.name(part))
    }
}

/// One aggregate function of a live query.
pub(crate) trait Aggregate: Debug + Send + Sync {
    /// The states of one batch (per group).
    fn partial(&self, s: &Slot) -> Vec<PlExpr>;
    /// The states of many states of one group (associative and commutative: exact).
    fn merge(&self, s: &Slot) -> Vec<PlExpr>;
    /// The result from a merged state.
    fn finish(&self, s: &Slot) -> PlExpr;
    /// Reads the event order column `__ts`.
    fn ordered(&self) -> bool {
        false
    }
    /// Its state is a list that must stay one row when there is no group key.
    fn list_state(&self) -> bool {
        false
    }
    /// Takes no argument (`count(*)`).
    fn star(&self) -> bool {
        false
    }
}

/// How an aggregate was called.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call<'a> {
    pub name: &'a str,
    pub distinct: bool,
    pub star: bool,
}

enum Entry {
    Unit(fn(&Call) -> Result<Box<dyn Aggregate>>),
    /// No exact merge from partial states: why, and what to do instead.
    Refused(&'static str),
}

/// Every aggregate live queries know, by SQL name.
static FUNCTIONS: &[(&[&str], Entry)] = &[
    (&["count"], Entry::Unit(count)),
    (&["sum"], Entry::Unit(|_| Ok(Box::new(Sum)))),
    (&["avg", "mean"], Entry::Unit(|_| Ok(Box::new(Avg)))),
    (&["min"], Entry::Unit(|_| Ok(Box::new(Extreme { max: false })))),
    (&["max"], Entry::Unit(|_| Ok(Box::new(Extreme { max: true })))),
    (&["var", "variance", "var_samp"], Entry::Unit(|_| Ok(Box::new(Spread { ddof: 1, sqrt: false })))),
    (&["stddev", "stdev", "stddev_samp", "std"], Entry::Unit(|_| Ok(Box::new(Spread { ddof: 1, sqrt: true })))),
    (&["var_pop"], Entry::Unit(|_| Ok(Box::new(Spread { ddof: 0, sqrt: false })))),
    (&["stddev_pop", "std_pop"], Entry::Unit(|_| Ok(Box::new(Spread { ddof: 0, sqrt: true })))),
    (&["first"], Entry::Unit(|_| Ok(Box::new(Ends { last: false })))),
    (&["last"], Entry::Unit(|_| Ok(Box::new(Ends { last: true })))),
    (&["median"], Entry::Refused("a median needs every value; use hist(x, lo, hi, n) and read the median off the histogram, or run it with %%sql after the run")),
    (&["quantile_cont", "quantile_disc"], Entry::Refused("quantiles need every value; use hist(x, lo, hi, n), or %%sql after the run")),
    (&["array_agg"], Entry::Refused("collecting every value grows without bound; use a row query (no aggregate) instead")),
    (&["corr"], Entry::Refused("not merged yet; compute sums (sum(x), sum(y), sum(x*y), sum(x*x), sum(y*y), count(*)) and combine them")),
];

fn entry(name: &str) -> Option<&'static Entry> {
    FUNCTIONS.iter().find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(name))).map(|(_, e)| e)
}

/// True when `name` is an aggregate (mergeable or not).
pub(crate) fn is_aggregate(name: &str) -> bool {
    entry(name).is_some()
}

/// The unit for a call of `name`: None when it is no aggregate, an error when it cannot run live.
pub(crate) fn lookup(call: &Call) -> Option<Result<Box<dyn Aggregate>>> {
    let name = call.name.to_ascii_lowercase();
    Some(match entry(&name)? {
        Entry::Refused(why) => Err(not_live(format!("{name}() cannot be merged exactly from partial results: {why}"))),
        Entry::Unit(make) => {
            if call.distinct && name != "count" {
                return Some(Err(not_live(format!("{name}(DISTINCT …) is not supported live; count(DISTINCT x) is, or group by x"))));
            }
            if call.star && name != "count" {
                return Some(Err(not_live(format!("{name}() takes one argument"))));
            }
            make(call)
        }
    })
}

fn not_live(msg: String) -> QueryError {
    QueryError::NotLive(msg)
}

fn u64_count(e: PlExpr) -> PlExpr {
    e.cast(DataType::UInt64)
}

fn count(call: &Call) -> Result<Box<dyn Aggregate>> {
    Ok(match (call.star, call.distinct) {
        (true, _) => Box::new(Count { star: true }),
        (false, false) => Box::new(Count { star: false }),
        (false, true) => Box::new(CountDistinct),
    })
}

/// `count(*)`, `count(x)` (non-null values).
#[derive(Debug)]
struct Count {
    star: bool,
}

impl Aggregate for Count {
    fn partial(&self, s: &Slot) -> Vec<PlExpr> {
        let n = if self.star { len() } else { s.arg().count() };
        vec![u64_count(n).alias(s.name("n"))]
    }
    fn merge(&self, s: &Slot) -> Vec<PlExpr> {
        vec![s.col("n").sum().alias(s.name("n"))]
    }
    fn finish(&self, s: &Slot) -> PlExpr {
        s.col("n")
    }
    fn star(&self) -> bool {
        self.star
    }
}

/// `count(DISTINCT x)`: the state is the set of distinct values (exact; memory grows with
/// the number of distinct values).
#[derive(Debug)]
struct CountDistinct;

impl Aggregate for CountDistinct {
    fn partial(&self, s: &Slot) -> Vec<PlExpr> {
        vec![s.arg().drop_nulls().unique().alias(s.name("set"))]
    }
    fn merge(&self, s: &Slot) -> Vec<PlExpr> {
        vec![s.col("set").explode(ExplodeOptions { empty_as_null: false, keep_nulls: false }).unique().alias(s.name("set"))]
    }
    fn finish(&self, s: &Slot) -> PlExpr {
        s.col("set").list().len().cast(DataType::UInt64)
    }
    fn list_state(&self) -> bool {
        true
    }
}

/// `sum(x)`: integers add as integers; floats (and decimals) exactly, returned as f64.
#[derive(Debug)]
struct Sum;

impl Aggregate for Sum {
    fn partial(&self, s: &Slot) -> Vec<PlExpr> {
        if s.arg_is_array() {
            return vec![array_agg::sum_state(s.arg()).alias(s.name("asum"))];
        }
        let exact_ints = s.arg_type().is_some_and(|t| t.is_integer() || t.is_bool());
        let sum = if exact_ints { s.arg().sum().alias(s.name("sum")) } else { exact::sum_state(s.arg()).alias(s.name("xsum")) };
        vec![sum, u64_count(s.arg().count()).alias(s.name("n"))]
    }
    fn merge(&self, s: &Slot) -> Vec<PlExpr> {
        if s.has("asum") {
            return vec![array_agg::merge_sum_states(s.col("asum")).alias(s.name("asum"))];
        }
        let sum = if s.has("xsum") { exact::merge_states(s.col("xsum")).alias(s.name("xsum")) } else { s.col("sum").sum().alias(s.name("sum")) };
        vec![sum, s.col("n").sum().alias(s.name("n"))]
    }
    fn finish(&self, s: &Slot) -> PlExpr {
        if s.has("asum") {
            return array_agg::sum_value(s.col("asum"), false);
        }
        let v = if s.has("xsum") { exact::state_value(s.col("xsum")) } else { s.col("sum") };
        when(s.col("n").gt(lit(0u64))).then(v).otherwise(lit(NULL))
    }
}

/// `avg(x)`: the exact sum over the count, in f64.
#[derive(Debug)]
struct Avg;

impl Aggregate for Avg {
    fn partial(&self, s: &Slot) -> Vec<PlExpr> {
        if s.arg_is_array() {
            return vec![array_agg::sum_state(s.arg()).alias(s.name("asum"))];
        }
        vec![exact::sum_state(s.arg()).alias(s.name("xsum")), u64_count(s.arg().count()).alias(s.name("n"))]
    }
    fn merge(&self, s: &Slot) -> Vec<PlExpr> {
        if s.has("asum") {
            return vec![array_agg::merge_sum_states(s.col("asum")).alias(s.name("asum"))];
        }
        vec![exact::merge_states(s.col("xsum")).alias(s.name("xsum")), s.col("n").sum().alias(s.name("n"))]
    }
    fn finish(&self, s: &Slot) -> PlExpr {
        if s.has("asum") {
            return array_agg::sum_value(s.col("asum"), true);
        }
        let mean = exact::state_value(s.col("xsum")) / s.col("n").cast(DataType::Float64);
        when(s.col("n").gt(lit(0u64))).then(mean).otherwise(lit(NULL))
    }
}

/// `min(x)`, `max(x)`: in the argument's type.
#[derive(Debug)]
struct Extreme {
    max: bool,
}

impl Aggregate for Extreme {
    fn partial(&self, s: &Slot) -> Vec<PlExpr> {
        if s.arg_is_array() {
            return vec![array_agg::extreme_state(s.arg(), self.max).alias(s.name("aext"))];
        }
        vec![if self.max { s.arg().max() } else { s.arg().min() }.alias(s.name("v"))]
    }
    fn merge(&self, s: &Slot) -> Vec<PlExpr> {
        if s.has("aext") {
            return vec![array_agg::merge_extreme_states(s.col("aext"), self.max).alias(s.name("aext"))];
        }
        vec![if self.max { s.col("v").max() } else { s.col("v").min() }.alias(s.name("v"))]
    }
    fn finish(&self, s: &Slot) -> PlExpr {
        if s.has("aext") {
            return array_agg::extreme_value(s.col("aext"));
        }
        s.col("v")
    }
}

/// Variance and standard deviation (sample: `ddof` 1; population: 0), from n and the exact
/// Σx and Σx².
#[derive(Debug)]
struct Spread {
    ddof: u64,
    sqrt: bool,
}

impl Aggregate for Spread {
    fn partial(&self, s: &Slot) -> Vec<PlExpr> {
        if s.arg_is_array() {
            return vec![array_agg::refused(s.arg(), "var/stddev of an array column are not element-wise yet: use avg(x) and, for a spread, hist or %%sql after the run").alias(s.name("n"))];
        }
        vec![
            u64_count(s.arg().count()).alias(s.name("n")),
            exact::sum_state(s.arg()).alias(s.name("xsum")),
            exact::squares_state(s.arg()).alias(s.name("xsq")),
        ]
    }
    fn merge(&self, s: &Slot) -> Vec<PlExpr> {
        vec![
            s.col("n").sum().alias(s.name("n")),
            exact::merge_states(s.col("xsum")).alias(s.name("xsum")),
            exact::merge_states(s.col("xsq")).alias(s.name("xsq")),
        ]
    }
    fn finish(&self, s: &Slot) -> PlExpr {
        let m2 = exact::state_m2(s.col("n"), s.col("xsum"), s.col("xsq"));
        let v = m2 / (s.col("n").cast(DataType::Float64) - lit(self.ddof as f64));
        let v = if self.sqrt { v.sqrt() } else { v };
        when(s.col("n").gt(lit(self.ddof))).then(v).otherwise(lit(NULL))
    }
}

/// `first(x)`, `last(x)`: the non-null x with the smallest / largest event order.
#[derive(Debug)]
struct Ends {
    last: bool,
}

impl Aggregate for Ends {
    fn partial(&self, s: &Slot) -> Vec<PlExpr> {
        let valid = s.arg().is_not_null();
        let ts = col("__ts").filter(valid.clone());
        let sorted = s.arg().filter(valid).sort_by([ts.clone()], SortMultipleOptions::default());
        let (v, t) = if self.last { (sorted.last(), ts.max()) } else { (sorted.first(), ts.min()) };
        vec![v.alias(s.name("v")), t.alias(s.name("t"))]
    }
    fn merge(&self, s: &Slot) -> Vec<PlExpr> {
        let valid = s.col("t").is_not_null();
        let sorted = s.col("v").filter(valid.clone()).sort_by([s.col("t").filter(valid)], SortMultipleOptions::default());
        let (v, t) = if self.last { (sorted.last(), s.col("t").max()) } else { (sorted.first(), s.col("t").min()) };
        vec![v.alias(s.name("v")), t.alias(s.name("t"))]
    }
    fn finish(&self, s: &Slot) -> PlExpr {
        s.col("v")
    }
    fn ordered(&self) -> bool {
        true
    }
}
