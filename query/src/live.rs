//! Live queries: SQL over the `events` table split into a per-batch **partial** step and an
//! exact **merge** step (the pattern of DataFusion's Partial/Final aggregates), so that workers
//! aggregate their batches and a collector merges states in any order.
//!
//! `plan` reads one `SELECT … FROM events [WHERE …] [GROUP BY …] [ORDER BY …] [LIMIT …]`:
//! - **row-level SQL** per batch evaluates the group keys and aggregate arguments
//!   (`__k0…`, `__a0…`) after WHERE, through polars SQL;
//! - **states**: count → count; sum → (sum, count); min, max; avg → (sum, count);
//!   variance/stddev → (n, mean, M2) merged with the parallel formula
//!   `M2 = Σ M2ᵢ + Σ nᵢ (meanᵢ − mean)²`; first/last → (value, timestamp);
//! - **finalize** computes the outputs, then ORDER BY/LIMIT run on the merged result.
//!
//! `bin(x, w)` is `floor(x / w) * w`; `hist(x, lo, hi, n)` is the lower edge of x's bin of n
//! between lo and hi (rows outside are dropped), usable as a group key. Row queries (no
//! aggregate) stream rows: partial = the query per batch, merge = concatenation.

use polars::prelude::*;
use polars::sql::SQLContext;
use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, LimitClause, SelectItem, SetExpr, Statement,
    TableFactor,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::error::{QueryError, Result};
use crate::rewrite::{quote_dotted_names, quote_ident};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AggKind {
    CountStar,
    /// count(DISTINCT x): the state is the set of distinct values (exact; memory grows with
    /// the number of distinct values).
    CountDistinct,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    Var,
    Std,
    VarPop,
    StdPop,
    First,
    Last,
}

#[derive(Clone, Debug)]
struct Agg {
    kind: AggKind,
}

#[derive(Clone, Debug)]
enum Output {
    Key(usize),
    Agg(usize),
}

/// A planned live query.
#[derive(Clone, Debug)]
pub struct LiveQuery {
    /// The SQL as written.
    pub sql: String,
    row_sql: String,
    keys: usize,
    aggs: Vec<Agg>,
    outputs: Vec<(Output, String)>,
    /// ORDER BY / LIMIT over the merged result (`__live`).
    post_sql: Option<String>,
    /// A row query: no aggregates, the rows themselves stream.
    rows: bool,
    /// What the result covers (hidden keys `__m0`, `__m1` carry run/step/window bin).
    mode: LiveMode,
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
const WINDOW_BINS: i64 = 16;

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

    fn hidden(&self) -> &'static [&'static str] {
        match self {
            LiveMode::Total => &[],
            LiveMode::Run => &["run AS __m0"],
            LiveMode::Step => &["run AS __m0", "step AS __m1"],
            LiveMode::Window(_) => &["time AS __m0"],
            LiveMode::Events(_) => &["__event AS __m0"],
        }
    }

    fn keys(&self) -> Vec<PlExpr> {
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

fn not_live(msg: impl Into<String>) -> QueryError {
    QueryError::NotLive(msg.into())
}

fn agg_kind(name: &str) -> Option<AggKind> {
    Some(match name.to_ascii_lowercase().as_str() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" | "mean" => AggKind::Avg,
        "var" | "variance" | "var_samp" => AggKind::Var,
        "stddev" | "stdev" | "stddev_samp" | "std" => AggKind::Std,
        "var_pop" => AggKind::VarPop,
        "stddev_pop" | "std_pop" => AggKind::StdPop,
        "first" => AggKind::First,
        "last" => AggKind::Last,
        _ => return None,
    })
}

/// Aggregates with no exact merge from partial states.
const UNMERGEABLE: &[(&str, &str)] = &[
    ("median", "a median needs every value; use hist(x, lo, hi, n) and read the median off the histogram, or run it with %%sql after the run"),
    ("quantile_cont", "quantiles need every value; use hist(x, lo, hi, n), or %%sql after the run"),
    ("quantile_disc", "quantiles need every value; use hist(x, lo, hi, n), or %%sql after the run"),
    ("array_agg", "collecting every value grows without bound; use a row query (no aggregate) instead"),
    ("corr", "not merged yet; compute sums (sum(x), sum(y), sum(x*y), sum(x*x), sum(y*y), count(*)) and combine them"),
];

impl LiveQuery {
    /// Plans `sql` over an `events` table with these columns.
    pub fn plan(sql: &str, columns: &[String]) -> Result<LiveQuery> {
        Self::plan_mode(sql, columns, LiveMode::Total)
    }

    /// Plans `sql` with a result that covers the events `mode` says.
    pub fn plan_mode(sql: &str, columns: &[String], mode: LiveMode) -> Result<LiveQuery> {
        let hidden = mode.hidden().join(", ");
        let with_hidden = |list: String| if hidden.is_empty() { list } else { format!("{list}, {hidden}") };
        let quoted = quote_dotted_names(sql, &|c| columns.iter().any(|k| k == c)).sql;
        let mut stmts = Parser::parse_sql(&GenericDialect {}, &quoted).map_err(|e| QueryError::Syntax(e.to_string()))?;
        if stmts.len() != 1 {
            return Err(not_live("a live query is one SELECT statement"));
        }
        let Statement::Query(query) = stmts.remove(0) else {
            return Err(not_live("a live query is a SELECT over events"));
        };
        if query.with.is_some() {
            return Err(not_live("WITH is not supported in live queries; run the live query, then %%sql over its result"));
        }
        let SetExpr::Select(select) = *query.body else {
            return Err(not_live("UNION/INTERSECT/VALUES are not live queries; run each SELECT live and combine them with %%sql"));
        };
        match select.from.as_slice() {
            [t] if t.joins.is_empty() && matches!(&t.relation, TableFactor::Table { name, .. } if name.to_string().trim_matches('"') == "events") => {}
            _ => return Err(not_live("a live query reads the events table alone (FROM events); join its result with other tables in %%sql")),
        }
        if select.having.is_some() {
            return Err(not_live("HAVING is not supported live; keep the aggregate and filter the result with %%sql"));
        }
        if select.distinct.is_some() {
            return Err(not_live("SELECT DISTINCT is not live; use GROUP BY over the same columns"));
        }
        let where_sql = select.selection.as_ref().map(|w| format!(" WHERE {w}")).unwrap_or_default();

        // Group keys.
        let mut keys: Vec<(String, Expr)> = Vec::new();
        match &select.group_by {
            GroupByExpr::Expressions(exprs, mods) if mods.is_empty() => {
                for e in exprs {
                    // `GROUP BY b` may name a select item's alias: group by its expression.
                    let aliased = select.projection.iter().find_map(|p| match (p, e) {
                        (SelectItem::ExprWithAlias { expr, alias }, Expr::Identifier(id)) if alias.value == id.value => Some(expr),
                        _ => None,
                    });
                    match aliased {
                        Some(x) => keys.push((e.to_string(), x.clone())),
                        None => keys.push((e.to_string(), e.clone())),
                    }
                }
            }
            GroupByExpr::Expressions(..) => return Err(not_live("GROUP BY modifiers (ROLLUP, CUBE, …) are not supported live")),
            GroupByExpr::All(_) => return Err(not_live("GROUP BY ALL is not supported live; name the keys")),
        }

        let mut aggs: Vec<Agg> = Vec::new();
        let mut agg_args: Vec<Option<String>> = Vec::new();
        let mut outputs: Vec<(Output, String)> = Vec::new();
        let mut wildcard = false;
        for item in &select.projection {
            let (expr, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
                _ => {
                    wildcard = true;
                    continue;
                }
            };
            let name = alias.clone().unwrap_or_else(|| output_name(expr));
            if let Some((kind, arg)) = aggregate_of(expr)? {
                aggs.push(Agg { kind });
                agg_args.push(arg);
                outputs.push((Output::Agg(aggs.len() - 1), name));
            } else if let Some(k) = keys.iter().position(|(t, _)| *t == expr.to_string() || alias.as_ref().is_some_and(|a| *t == *a)) {
                outputs.push((Output::Key(k), name));
            } else if is_hist(expr) {
                // hist(...) in the select list groups by itself.
                keys.push((expr.to_string(), expr.clone()));
                outputs.push((Output::Key(keys.len() - 1), name));
            } else {
                outputs.push((Output::Key(usize::MAX), name));
            }
        }
        let rows = aggs.is_empty() && keys.is_empty();
        let sources: Vec<String> = select
            .projection
            .iter()
            .filter_map(|p| match p {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e.to_string()),
                _ => None,
            })
            .collect();
        let post_sql = post_clauses(&query.order_by, &query.limit_clause, &outputs, &sources, rows)?;
        if rows {
            let list = with_hidden(select.projection.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "));
            let row_sql = format!("SELECT {list} FROM events{where_sql}");
            return Ok(LiveQuery { sql: sql.into(), row_sql: rewrite_fns(&row_sql), keys: 0, aggs, outputs: Vec::new(), post_sql, rows: true, mode });
        }
        if wildcard {
            return Err(not_live("`*` cannot be mixed with aggregates"));
        }
        if let Some((_, name)) = outputs.iter().find(|(o, _)| matches!(o, Output::Key(usize::MAX))) {
            return Err(not_live(format!("{name} is neither grouped nor aggregated: add it to GROUP BY, or aggregate it (first(x), avg(x), …)")));
        }
        let mut cols: Vec<String> = keys.iter().enumerate().map(|(i, (_, e))| format!("{} AS __k{i}", key_sql(e))).collect();
        for (j, a) in agg_args.iter().enumerate() {
            if let Some(a) = a {
                cols.push(format!("{a} AS __a{j}"));
            }
        }
        if aggs.iter().any(|a| matches!(a.kind, AggKind::First | AggKind::Last)) {
            cols.push("timestamp AS __ts".into());
        }
        if cols.is_empty() {
            cols.push("timestamp AS __ts".into());
        }
        let mut row_sql = format!("SELECT {} FROM events{where_sql}", with_hidden(cols.join(", ")));
        let hist_filters: Vec<String> = keys.iter().filter_map(|(_, e)| hist_range(e)).collect();
        if !hist_filters.is_empty() {
            let joiner = if where_sql.is_empty() { " WHERE " } else { " AND " };
            row_sql.push_str(&format!("{joiner}{}", hist_filters.join(" AND ")));
        }
        Ok(LiveQuery { sql: sql.into(), row_sql: rewrite_fns(&row_sql), keys: keys.len(), aggs, outputs, post_sql, rows: false, mode })
    }

    /// The column names `sql` mentions (dotted paths as one name): what a reader must decode.
    /// Names that are not columns (aliases, functions' keywords) are harmless extras; `*`
    /// is listed when the query selects every column.
    pub fn referenced_names(sql: &str) -> Result<Vec<String>> {
        let quoted = quote_dotted_names(sql, &|c| c.contains('.')).sql;
        let stmts = Parser::parse_sql(&GenericDialect {}, &quoted).map_err(|e| QueryError::Syntax(e.to_string()))?;
        let mut names: Vec<String> = Vec::new();
        for st in &stmts {
            if let Statement::Query(q) = st {
                if let SetExpr::Select(sel) = q.body.as_ref() {
                    if sel.projection.iter().any(|p| matches!(p, SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..))) {
                        names.push("*".into());
                    }
                }
            }
        }
        let _ = sqlparser::ast::visit_expressions(&stmts, |e: &Expr| {
            let name = match e {
                Expr::Identifier(i) => Some(i.value.clone()),
                Expr::CompoundIdentifier(parts) => Some(parts.iter().map(|p| p.value.as_str()).collect::<Vec<_>>().join(".")),
                _ => None,
            };
            if let Some(n) = name.filter(|n| !names.contains(n)) {
                names.push(n);
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        Ok(names)
    }

    /// Events that passed WHERE (and a histogram's range) in a partial or merged state.
    pub fn included(&self, state: &DataFrame) -> u64 {
        if self.rows {
            return state.height() as u64;
        }
        state.column("__included").ok().and_then(|c| c.as_materialized_series().sum::<u64>().ok()).unwrap_or(0)
    }

    /// True for a row query (no aggregate): partial results are rows, merged by concatenation.
    pub fn is_rows(&self) -> bool {
        self.rows
    }

    /// True when the result is the rows themselves in arrival order (a row query without
    /// ORDER BY/LIMIT): a new result is the old one minus its oldest rows plus new ones, so a
    /// display can be sent only the change.
    pub fn streams_rows(&self) -> bool {
        self.rows && self.post_sql.is_none()
    }

    /// [`prune`](Self::prune) for the rows of a row query whose first `old` rows were shown
    /// before: also says how many of those the prune removed when they are exactly the oldest
    /// ones (a prefix; None when rows in between went, e.g. a slow rank's late rows of an
    /// older window bin were kept while newer ones left).
    pub fn prune_rows(&self, rows: &DataFrame, old: usize) -> Result<(DataFrame, Option<usize>)> {
        let Some(keep) = self.keep().filter(|_| rows.height() > 0) else { return Ok((rows.clone(), Some(0))) };
        let mask = rows.clone().lazy().select([keep.alias("__keep")]).collect()?;
        let mask = mask.column("__keep")?.bool()?.clone();
        let old = old.min(rows.height());
        let shown_mask = mask.slice(0, old);
        let mut shown = shown_mask.downcast_iter().flat_map(|a| a.iter().map(|k| k == Some(true)));
        let removed = shown.by_ref().take_while(|k| !k).count();
        // take_while consumed the first kept row (if any): the rest must all be kept.
        let prefix = shown.all(|k| k);
        Ok((rows.filter(&mask)?, prefix.then_some(removed)))
    }

    /// The partial step over one batch of the events table: a state table.
    pub fn partial(&self, batch: &DataFrame) -> Result<DataFrame> {
        let mut ctx = SQLContext::new();
        ctx.register("events", batch.clone().lazy());
        let mut rows = ctx.execute(&self.row_sql).map_err(|e| QueryError::Sql(e.to_string()))?;
        let bin = match self.mode {
            LiveMode::Window(w) => Some((w.as_nanos() as i64 / WINDOW_BINS).max(1)),
            LiveMode::Events(n) => Some((n as i64 / WINDOW_BINS).max(1)),
            _ => None,
        };
        if let Some(bin) = bin {
            rows = rows.with_column(col("__m0").cast(DataType::Int64).floor_div(lit(bin)).alias("__m0"));
        }
        if self.rows {
            return Ok(rows.collect()?);
        }
        let mut keys = self.mode.keys();
        keys.extend((0..self.keys).map(|i| col(format!("__k{i}"))));
        let mut states: Vec<PlExpr> = vec![len().cast(DataType::UInt64).alias("__included")];
        for (j, a) in self.aggs.iter().enumerate() {
            let x = col(format!("__a{j}"));
            let n = |s: &str| format!("__s{j}_{s}");
            match a.kind {
                AggKind::CountStar => states.push(len().cast(DataType::UInt64).alias(n("n"))),
                AggKind::CountDistinct => states.push(x.drop_nulls().unique().alias(n("set"))),
                AggKind::Count => states.push(x.count().cast(DataType::UInt64).alias(n("n"))),
                AggKind::Sum | AggKind::Avg => {
                    states.push(x.clone().sum().alias(n("sum")));
                    states.push(x.count().cast(DataType::UInt64).alias(n("n")));
                }
                AggKind::Min => states.push(x.min().alias(n("v"))),
                AggKind::Max => states.push(x.max().alias(n("v"))),
                AggKind::Var | AggKind::Std | AggKind::VarPop | AggKind::StdPop => {
                    let xf = x.cast(DataType::Float64);
                    let cnt = xf.clone().count().cast(DataType::Float64);
                    states.push(xf.clone().count().cast(DataType::UInt64).alias(n("n")));
                    states.push(xf.clone().mean().alias(n("mean")));
                    states.push((xf.var(0).fill_null(lit(0.0)) * cnt).alias(n("m2")));
                }
                AggKind::First | AggKind::Last => {
                    let ts = col("__ts");
                    let valid = x.clone().is_not_null();
                    let xs = x.filter(valid.clone());
                    let tss = ts.filter(valid);
                    let (v, t) = if a.kind == AggKind::First {
                        (xs.sort_by([tss.clone()], SortMultipleOptions::default()).first(), tss.min())
                    } else {
                        (xs.sort_by([tss.clone()], SortMultipleOptions::default()).last(), tss.max())
                    };
                    states.push(v.alias(n("v")));
                    states.push(t.alias(n("t")));
                }
            }
        }
        let lf = rows;
        Ok(self.aggregate(lf, keys, states)?.collect()?)
    }

    /// Merges partial states (from any batches, in any order) into one state table.
    pub fn merge(&self, states: &[DataFrame]) -> Result<DataFrame> {
        self.merge_with(states, true)
    }

    /// `merge`, grouping by the hidden mode keys too (`hidden`) or not (a window's bins
    /// folded into one result).
    fn merge_with(&self, states: &[DataFrame], hidden: bool) -> Result<DataFrame> {
        let frames: Vec<LazyFrame> = states.iter().map(|d| d.clone().lazy()).collect();
        if frames.is_empty() {
            return Err(QueryError::Sql("nothing to merge".into()));
        }
        let all = concat(frames, UnionArgs::default())?;
        if self.rows {
            return self.prune(&all.collect()?);
        }
        let mut keys = if hidden { self.mode.keys() } else { Vec::new() };
        keys.extend((0..self.keys).map(|i| col(format!("__k{i}"))));
        let mut merged: Vec<PlExpr> = vec![col("__included").sum().alias("__included")];
        for (j, a) in self.aggs.iter().enumerate() {
            let c = |s: &str| col(format!("__s{j}_{s}"));
            let n = |s: &str| format!("__s{j}_{s}");
            match a.kind {
                AggKind::CountStar | AggKind::Count => merged.push(c("n").sum().alias(n("n"))),
                AggKind::CountDistinct => merged.push(c("set").explode(ExplodeOptions { empty_as_null: false, keep_nulls: false }).unique().alias(n("set"))),
                AggKind::Sum | AggKind::Avg => {
                    merged.push(c("sum").sum().alias(n("sum")));
                    merged.push(c("n").sum().alias(n("n")));
                }
                AggKind::Min => merged.push(c("v").min().alias(n("v"))),
                AggKind::Max => merged.push(c("v").max().alias(n("v"))),
                AggKind::Var | AggKind::Std | AggKind::VarPop | AggKind::StdPop => {
                    let nf = c("n").cast(DataType::Float64);
                    let total = nf.clone().sum();
                    // Parts with n = 0 have a null mean: they add nothing.
                    let mean = (nf.clone() * c("mean").fill_null(lit(0.0))).sum() / total.clone();
                    let spread = (nf * (c("mean").fill_null(lit(0.0)) - mean.clone()).pow(2)).sum();
                    merged.push(c("n").sum().alias(n("n")));
                    merged.push(mean.alias(n("mean")));
                    merged.push((c("m2").sum() + spread).alias(n("m2")));
                }
                AggKind::First | AggKind::Last => {
                    let valid = c("t").is_not_null();
                    let vs = c("v").filter(valid.clone()).sort_by([c("t").filter(valid.clone())], SortMultipleOptions::default());
                    if a.kind == AggKind::First {
                        merged.push(vs.first().alias(n("v")));
                        merged.push(c("t").min().alias(n("t")));
                    } else {
                        merged.push(vs.last().alias(n("v")));
                        merged.push(c("t").max().alias(n("t")));
                    }
                }
            }
        }
        let out = self.aggregate(all, keys, merged)?.collect()?;
        if hidden { self.prune(&out) } else { Ok(out) }
    }

    /// `states` per group of `keys`; without keys one row — grouped by a constant when a
    /// distinct set must come out as one list.
    fn aggregate(&self, lf: LazyFrame, keys: Vec<PlExpr>, states: Vec<PlExpr>) -> Result<LazyFrame> {
        if !keys.is_empty() {
            return Ok(lf.group_by(keys).agg(states));
        }
        if self.aggs.iter().any(|a| a.kind == AggKind::CountDistinct) {
            return Ok(lf.with_column(lit(true).alias("__one")).group_by([col("__one")]).agg(states).drop(cols(["__one"])));
        }
        Ok(lf.select(states))
    }

    /// Drops the parts of a state the mode no longer covers (older runs, steps, window bins).
    /// Exact: whatever is newest here is at most the newest anywhere.
    pub fn prune(&self, state: &DataFrame) -> Result<DataFrame> {
        match self.keep().filter(|_| state.height() > 0) {
            None => Ok(state.clone()),
            Some(keep) => Ok(state.clone().lazy().filter(keep).collect()?),
        }
    }

    /// What the mode keeps of a state (None: everything): the newest run, the newest step of
    /// it, or the newest window bins.
    fn keep(&self) -> Option<PlExpr> {
        Some(match self.mode {
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

    /// The mode this query was planned with.
    pub fn mode(&self) -> LiveMode {
        self.mode
    }

    /// The query's result from a merged state (or the concatenated rows of a row query).
    pub fn finalize(&self, state: &DataFrame) -> Result<DataFrame> {
        let mut state = self.prune(state)?;
        if matches!(self.mode, LiveMode::Window(_) | LiveMode::Events(_)) && !self.rows && state.height() > 0 {
            state = self.merge_with(&[state], false)?;
        }
        let state = &state;
        let result = if self.rows {
            let hidden: Vec<String> = (0..self.mode.hidden().len()).map(|i| format!("__m{i}")).collect();
            state.drop_many(hidden)
        } else {
            let mut exprs: Vec<PlExpr> = Vec::new();
            for (o, name) in &self.outputs {
                let e = match *o {
                    Output::Key(k) => col(format!("__k{k}")),
                    Output::Agg(j) => {
                        let c = |s: &str| col(format!("__s{j}_{s}"));
                        let some = c("n").gt(lit(0u64));
                        match self.aggs[j].kind {
                            AggKind::CountStar | AggKind::Count => c("n"),
                            AggKind::CountDistinct => c("set").list().len().cast(DataType::UInt64),
                            AggKind::Sum => when(some).then(c("sum")).otherwise(lit(NULL)),
                            AggKind::Avg => when(some).then(c("sum").cast(DataType::Float64) / c("n").cast(DataType::Float64)).otherwise(lit(NULL)),
                            AggKind::Min | AggKind::Max | AggKind::First | AggKind::Last => c("v"),
                            AggKind::Var | AggKind::Std => {
                                let v = c("m2") / (c("n").cast(DataType::Float64) - lit(1.0));
                                let v = if self.aggs[j].kind == AggKind::Std { v.sqrt() } else { v };
                                when(c("n").gt(lit(1u64))).then(v).otherwise(lit(NULL))
                            }
                            AggKind::VarPop | AggKind::StdPop => {
                                let v = c("m2") / c("n").cast(DataType::Float64);
                                let v = if self.aggs[j].kind == AggKind::StdPop { v.sqrt() } else { v };
                                when(some).then(v).otherwise(lit(NULL))
                            }
                        }
                    }
                };
                exprs.push(e.alias(name.as_str()));
            }
            state.clone().lazy().select(exprs).collect()?
        };
        match &self.post_sql {
            None => Ok(result),
            Some(post) => {
                let mut ctx = SQLContext::new();
                ctx.register("__live", result.lazy());
                Ok(ctx.execute(post).map_err(|e| QueryError::Sql(e.to_string()))?.collect()?)
            }
        }
    }

    /// Partial, merge and finalize over a whole table in one go (tests, offline use).
    pub fn run_batches(&self, batches: &[DataFrame]) -> Result<DataFrame> {
        let parts: Vec<DataFrame> = batches.iter().map(|b| self.partial(b)).collect::<Result<_>>()?;
        let merged = self.merge(&parts)?;
        self.finalize(&merged)
    }
}

type PlExpr = polars::prelude::Expr;

fn output_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.clone()).unwrap_or_default(),
        Expr::Function(f) => {
            // polars names `avg(x)` after its input column.
            let args = function_args(f);
            match args.as_slice() {
                [FunctionArgExpr::Expr(inner)] => output_name(inner),
                _ => f.name.to_string(),
            }
        }
        other => other.to_string(),
    }
}

fn function_args(f: &sqlparser::ast::Function) -> Vec<FunctionArgExpr> {
    match &f.args {
        FunctionArguments::List(l) => l
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(x) => x.clone(),
                FunctionArg::Named { arg, .. } | FunctionArg::ExprNamed { arg, .. } => arg.clone(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `Some((kind, argument SQL))` when `e` is an aggregate call.
fn aggregate_of(e: &Expr) -> Result<Option<(AggKind, Option<String>)>> {
    let Expr::Function(f) = e else {
        if contains_aggregate(e) {
            return Err(not_live(format!("`{e}`: an expression around an aggregate is not supported live yet; select the aggregates and combine them with %%sql")));
        }
        return Ok(None);
    };
    let name = f.name.to_string().to_ascii_lowercase();
    if let Some((_, why)) = UNMERGEABLE.iter().find(|(n, _)| *n == name) {
        return Err(not_live(format!("{name}() cannot be merged exactly from partial results: {why}")));
    }
    let Some(mut kind) = agg_kind(&name) else {
        if contains_aggregate(e) {
            return Err(not_live(format!("`{e}`: an aggregate inside a function is not supported live yet")));
        }
        return Ok(None);
    };
    if let FunctionArguments::List(l) = &f.args {
        if matches!(l.duplicate_treatment, Some(sqlparser::ast::DuplicateTreatment::Distinct)) {
            if kind != AggKind::Count {
                return Err(not_live(format!("{name}(DISTINCT …) is not supported live; count(DISTINCT x) is, or group by x")));
            }
            kind = AggKind::CountDistinct;
        }
    }
    if f.over.is_some() || f.filter.is_some() {
        return Err(not_live(format!("{name}() with OVER/FILTER is not supported live; use WHERE")));
    }
    let args = function_args(f);
    let arg = match args.as_slice() {
        [FunctionArgExpr::Wildcard] if kind == AggKind::Count => {
            kind = AggKind::CountStar;
            None
        }
        [FunctionArgExpr::Expr(x)] => {
            if contains_aggregate(x) {
                return Err(not_live(format!("nested aggregate in `{e}`")));
            }
            Some(x.to_string())
        }
        _ => return Err(not_live(format!("{name}() takes one argument"))),
    };
    Ok(Some((kind, arg)))
}

fn contains_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(e, |x: &Expr| {
        if let Expr::Function(f) = x {
            let n = f.name.to_string().to_ascii_lowercase();
            if agg_kind(&n).is_some() || UNMERGEABLE.iter().any(|(u, _)| *u == n) {
                found = true;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}

fn is_hist(e: &Expr) -> bool {
    matches!(e, Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("hist"))
}

/// Row-level SQL of a key: `hist`/`bin` become arithmetic polars understands.
fn key_sql(e: &Expr) -> String {
    e.to_string()
}

/// The WHERE condition that keeps `hist(x, lo, hi, n)` rows inside [lo, hi).
fn hist_range(e: &Expr) -> Option<String> {
    let Expr::Function(f) = e else { return None };
    if !f.name.to_string().eq_ignore_ascii_case("hist") {
        return None;
    }
    let args = function_args(f);
    let [FunctionArgExpr::Expr(x), FunctionArgExpr::Expr(lo), FunctionArgExpr::Expr(hi), FunctionArgExpr::Expr(_)] = args.as_slice() else {
        return None;
    };
    Some(format!("({x}) >= ({lo}) AND ({x}) < ({hi})"))
}

/// Rewrites `bin(x, w)` and `hist(x, lo, hi, n)` calls into arithmetic, in SQL text.
fn rewrite_fns(sql: &str) -> String {
    rewrite_calls(sql, false)
}

/// The functions live queries know, for `%%sql` over whole tables: `bin`, `hist` (out-of-range
/// values in a NULL bin, where a live query leaves them out), `var_pop`, `stddev_pop`. The same
/// SQL then gives the same numbers live and afterwards.
pub fn rewrite_for_tables(sql: &str) -> String {
    let lower = sql.to_ascii_lowercase();
    if !["bin(", "hist(", "var_pop(", "stddev_pop("].iter().any(|f| lower.contains(f)) {
        return sql.to_string();
    }
    rewrite_calls(sql, true)
}

fn rewrite_calls(sql: &str, tables: bool) -> String {
    let Ok(mut stmts) = Parser::parse_sql(&GenericDialect {}, sql) else { return sql.to_string() };
    let _ = sqlparser::ast::visit_expressions_mut(&mut stmts, |e: &mut Expr| {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_ascii_lowercase();
            let args: Vec<String> = function_args(f)
                .iter()
                .map(|a| match a {
                    FunctionArgExpr::Expr(x) => x.to_string(),
                    other => other.to_string(),
                })
                .collect();
            let text = match (name.as_str(), args.as_slice()) {
                ("bin", [x, w]) => Some(format!("(floor(({x}) / ({w})) * ({w}))")),
                ("hist", [x, lo, hi, n]) if tables => Some(format!(
                    "(CASE WHEN ({x}) >= ({lo}) AND ({x}) < ({hi}) THEN \
                     ({lo}) + floor((({x}) - ({lo})) / ((({hi}) - ({lo})) / ({n}))) * ((({hi}) - ({lo})) / ({n})) END)"
                )),
                ("hist", [x, lo, hi, n]) => Some(format!(
                    "(({lo}) + floor((({x}) - ({lo})) / ((({hi}) - ({lo})) / ({n}))) * ((({hi}) - ({lo})) / ({n})))"
                )),
                ("var_pop", [x]) if tables => Some(format!("(var({x}) * (count({x}) - 1) / count({x}))")),
                ("stddev_pop", [x]) if tables => Some(format!("sqrt(var({x}) * (count({x}) - 1) / count({x}))")),
                _ => None,
            };
            if let Some(t) = text {
                if let Ok(parsed) = Parser::new(&GenericDialect {}).try_with_sql(&t).and_then(|mut p| p.parse_expr()) {
                    *e = parsed;
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    stmts.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("; ")
}

/// ORDER BY / LIMIT over the merged result, naming the result's columns.
fn post_clauses(
    order: &Option<sqlparser::ast::OrderBy>,
    limit: &Option<LimitClause>,
    outputs: &[(Output, String)],
    sources: &[String],
    rows: bool,
) -> Result<Option<String>> {
    if order.is_none() && limit.is_none() {
        return Ok(None);
    }
    let mut sql = String::from("SELECT * FROM __live");
    if let Some(o) = order {
        let sqlparser::ast::OrderByKind::Expressions(items) = &o.kind else {
            return Err(not_live("ORDER BY ALL is not supported live; name the columns"));
        };
        let mut parts = Vec::new();
        for item in items {
            let text = item.expr.to_string();
            let name = if rows {
                // Row queries keep their column names: order by them as written.
                Some(text.clone())
            } else {
                outputs
                    .iter()
                    .zip(sources)
                    .find(|((_, name), src)| **src == text || quote_ident(name) == text || *name == text)
                    .map(|((_, name), _)| quote_ident(name))
            };
            let Some(name) = name else {
                let names: Vec<&str> = outputs.iter().map(|(_, n)| n.as_str()).collect();
                return Err(not_live(format!("ORDER BY {text}: order by a column of the result ({})", names.join(", "))));
            };
            let mut part = name;
            match item.options.asc {
                Some(false) => part.push_str(" DESC"),
                Some(true) => part.push_str(" ASC"),
                None => {}
            }
            if let Some(nf) = item.options.nulls_first {
                part.push_str(if nf { " NULLS FIRST" } else { " NULLS LAST" });
            }
            parts.push(part);
        }
        sql.push_str(&format!(" ORDER BY {}", parts.join(", ")));
    }
    if let Some(l) = limit {
        sql.push_str(&format!(" {l}"));
    }
    Ok(Some(sql))
}
