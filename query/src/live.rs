//! Live queries: SQL over the `events` table split into a per-batch **partial** step and an
//! exact **merge** step (the pattern of DataFusion's Partial/Final aggregates), so that workers
//! aggregate their batches and a collector merges states in any order.
//!
//! [`LiveQuery::plan`] reads one `SELECT … FROM events [WHERE …] [GROUP BY …] [ORDER BY …]
//! [LIMIT …]` once; job and kernel share the plan:
//! - **row-level SQL** per batch evaluates the group keys and aggregate arguments
//!   (`__k0…`, `__a0…`) after WHERE, through polars SQL;
//! - **states**: each aggregate is a unit of [`crate::aggregate`] (its partial states, merge
//!   and result); float sums are exact, so results are the same bits at any batch split;
//! - **finalize** computes the outputs, then ORDER BY/LIMIT run on the merged result.
//!
//! `bin(x, w)` is `floor(x / w) * w`; `hist(x, lo, hi, n)` is the lower edge of x's bin of n
//! between lo and hi (rows outside are left out), usable as a group key. Row queries (no
//! aggregate) stream rows: partial = the query per batch, merge = concatenation.
//!
//! The same plan runs `%%sql` aggregates over a whole table ([`LiveQuery::plan_table`]), so
//! a live result and the same SQL afterwards are the same numbers by construction.

use std::sync::Arc;

use polars::prelude::*;
use polars::sql::SQLContext;
use sqlparser::ast::{Expr, FunctionArgExpr, FunctionArguments, GroupByExpr, LimitClause, SelectItem, SetExpr, Statement, TableFactor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::aggregate::{self, Aggregate, Call, Slot};
use crate::error::{QueryError, Result};
pub use crate::mode::{parse_duration, LiveMode, EVENT_INDEX};
use crate::arrays::{ArrayFunctions, Coverage, Shapes};
use crate::rewrite::{function_args, hist_range, is_hist, live_functions, quote_dotted_names, quote_ident};

/// What every saved row carries, as psana's smalldata rows carry the event's timestamp.
const SAVED_KEYS: [&str; 3] = ["timestamp", "run", "step"];

#[derive(Clone, Debug)]
enum Output {
    Key(usize),
    Agg(usize),
}

/// The column first/last order events by in the `events` table.
const EVENT_ORDER: &str = "timestamp";
/// The row index a table without timestamps is ordered by (added by [`LiveQuery::partial`]).
const ROW_ORDER: &str = "__row";

/// A planned live query.
#[derive(Clone, Debug)]
pub struct LiveQuery {
    /// The SQL as written.
    pub sql: String,
    /// The table the query reads (`events` for live queries).
    table: String,
    row_sql: String,
    /// The column that orders events for first/last.
    order: &'static str,
    keys: usize,
    aggs: Vec<Arc<dyn Aggregate>>,
    outputs: Vec<(Output, String)>,
    /// ORDER BY / LIMIT over the merged result (`__live`).
    post_sql: Option<String>,
    /// A row query: no aggregates, the rows themselves stream.
    rows: bool,
    /// A row query's output names (`*` for a wildcard).
    row_names: Vec<String>,
    /// What the result covers (hidden keys `__m0`, `__m1` carry run/step/window bin).
    mode: LiveMode,
    /// The shapes of the table's array columns, for the array functions ([`crate::arrays`]).
    shapes: Arc<Shapes>,
    /// Which image bins hold good pixels (`radial`).
    coverage: Arc<Coverage>,
}

fn not_live(msg: impl Into<String>) -> QueryError {
    QueryError::NotLive(msg.into())
}

impl LiveQuery {
    /// Plans `sql` over an `events` table with these columns.
    pub fn plan(sql: &str, columns: &[String]) -> Result<LiveQuery> {
        Self::plan_mode(sql, columns, LiveMode::Total)
    }

    /// Checks a live query before any data: its mode (`""` = since start), its SQL, and what
    /// can be planned without the table's columns. What remains — that the columns exist — is
    /// found by [`plan_mode`](Self::plan_mode) at the first batch. The kernel and the job's
    /// collector both check with this.
    pub fn check(sql: &str, mode: &str) -> Result<LiveMode> {
        let mode = if mode.trim().is_empty() { LiveMode::Total } else { LiveMode::parse(mode)? };
        let names = Self::referenced_names(sql)?;
        Self::plan_mode(sql, &names, mode)?;
        Ok(mode)
    }

    /// Plans `sql` with a result that covers the events `mode` says.
    pub fn plan_mode(sql: &str, columns: &[String], mode: LiveMode) -> Result<LiveQuery> {
        Self::plan_over("events", sql, columns, mode)
    }

    /// Plans an aggregating `sql` over one table of `%%sql` (the whole table is one batch).
    /// Queries that group nothing and aggregate nothing are left to polars (None), as are
    /// those a live query cannot express (joins, HAVING, …: their error says why).
    pub fn plan_table(sql: &str, table: &str, columns: &[String]) -> Result<Option<LiveQuery>> {
        let q = Self::plan_over(table, sql, columns, LiveMode::Total)?;
        Ok((!q.rows).then_some(q))
    }

    fn plan_over(table: &str, sql: &str, columns: &[String], mode: LiveMode) -> Result<LiveQuery> {
        let order = if table == "events" || columns.iter().any(|c| c == EVENT_ORDER) { EVENT_ORDER } else { ROW_ORDER };
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
            [t] if t.joins.is_empty() && matches!(&t.relation, TableFactor::Table { name, .. } if name.to_string().trim_matches('"') == table) => {}
            _ => return Err(not_live(format!("a live query reads the {table} table alone (FROM {table}); join its result with other tables in %%sql"))),
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

        let mut aggs: Vec<Arc<dyn Aggregate>> = Vec::new();
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
            if let Some((unit, arg)) = aggregate_of(expr)? {
                aggs.push(unit);
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
            let row_names = outputs.iter().map(|(_, n)| n.clone()).chain(wildcard.then(|| "*".to_string())).collect();
            let list = with_hidden(select.projection.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "));
            let row_sql = format!("SELECT {list} FROM {}{where_sql}", quote_ident(table));
            return Ok(LiveQuery {
                sql: sql.into(),
                table: table.into(),
                row_sql: live_functions(&row_sql),
                order,
                keys: 0,
                aggs,
                outputs: Vec::new(),
                post_sql,
                rows: true,
                row_names,
                mode,
                shapes: Arc::default(),
                coverage: Arc::default(),
            });
        }
        if wildcard {
            return Err(not_live("`*` cannot be mixed with aggregates"));
        }
        if let Some((_, name)) = outputs.iter().find(|(o, _)| matches!(o, Output::Key(usize::MAX))) {
            return Err(not_live(format!("{name} is neither grouped nor aggregated: add it to GROUP BY, or aggregate it (first(x), avg(x), …)")));
        }
        let mut cols: Vec<String> = keys.iter().enumerate().map(|(i, (_, e))| format!("{e} AS __k{i}")).collect();
        for (j, a) in agg_args.iter().enumerate() {
            if let Some(a) = a {
                cols.push(format!("{a} AS __a{j}"));
            }
        }
        if aggs.iter().any(|a| a.ordered()) || cols.is_empty() {
            cols.push(format!("{} AS __ts", quote_ident(order)));
        }
        let mut row_sql = format!("SELECT {} FROM {}{where_sql}", with_hidden(cols.join(", ")), quote_ident(table));
        let hist_filters: Vec<String> = keys.iter().filter_map(|(_, e)| hist_range(e)).collect();
        if !hist_filters.is_empty() {
            let joiner = if where_sql.is_empty() { " WHERE " } else { " AND " };
            row_sql.push_str(&format!("{joiner}{}", hist_filters.join(" AND ")));
        }
        Ok(LiveQuery {
            sql: sql.into(),
            table: table.into(),
            row_sql: live_functions(&row_sql),
            order,
            keys: keys.len(),
            aggs,
            outputs,
            post_sql,
            rows: false,
            row_names: Vec::new(),
            mode,
            shapes: Arc::default(),
            coverage: Arc::default(),
        })
    }

    /// True when `sql` is a row query (no aggregate, no group): known before any column is.
    pub fn is_row_query(sql: &str) -> Result<bool> {
        Ok(Self::plan_over("events", sql, &[], LiveMode::Total)?.rows)
    }

    /// The plan for a query whose rows are saved (`--save`): a row query's rows lead with the
    /// event's `timestamp`, `run` and `step` (unless it selects them, or `*`), and keep no
    /// ORDER BY or LIMIT (each worker writes its events as they come). Aggregates unchanged.
    pub fn saving(mut self) -> Result<LiveQuery> {
        if !self.rows {
            return Ok(self);
        }
        if self.post_sql.is_some() {
            return Err(not_live("ORDER BY and LIMIT do not apply to saved rows: each worker writes its events as they come (sort by timestamp when reading)"));
        }
        let missing: Vec<String> = SAVED_KEYS
            .iter()
            .filter(|k| !self.row_names.iter().any(|n| n == *k || n == "*"))
            .map(|k| quote_ident(k))
            .collect();
        if !missing.is_empty() {
            self.row_sql = self.row_sql.replacen("SELECT ", &format!("SELECT {}, ", missing.join(", ")), 1);
            let mut names: Vec<String> = SAVED_KEYS.iter().filter(|k| !self.row_names.iter().any(|n| n == *k)).map(|k| k.to_string()).collect();
            names.append(&mut self.row_names);
            self.row_names = names;
        }
        Ok(self)
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
        let Some(keep) = self.mode.keep().filter(|_| rows.height() > 0) else { return Ok((rows.clone(), Some(0))) };
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

    /// Gives the array functions the shapes of the table's array columns.
    pub fn set_shapes(&mut self, shapes: Arc<Shapes>) {
        self.shapes = shapes;
    }

    /// Gives `radial` the good bins of the table's image columns.
    pub fn set_coverage(&mut self, coverage: Arc<Coverage>) {
        self.coverage = coverage;
    }

    /// The partial step over one batch of the events table: a state table.
    pub fn partial(&self, batch: &DataFrame) -> Result<DataFrame> {
        let mut ctx = SQLContext::new()
            .with_function_registry(Arc::new(ArrayFunctions::new(self.shapes.clone()).with_coverage(self.coverage.clone())));
        let mut lf = batch.clone().lazy();
        if self.order == ROW_ORDER && !self.rows {
            lf = lf.with_row_index(ROW_ORDER, None);
        }
        ctx.register(&self.table, lf);
        // Polars 0.55's common-subexpression elimination breaks on literal subexpressions of
        // filtered projections (`hist`'s bin width: a 1-row column beside n rows, a panic).
        let mut rows = ctx.execute(&self.row_sql).map_err(|e| QueryError::Sql(e.to_string()))?;
        let flags = rows.get_current_optimizations();
        rows = rows.with_optimizations(flags - OptFlags::COMM_SUBEXPR_ELIM);
        if let Some(bin) = self.mode.window_bin() {
            rows = rows.with_column(col("__m0").cast(DataType::Int64).floor_div(lit(bin)).alias("__m0"));
        }
        if self.rows {
            return Ok(rows.collect()?);
        }
        let schema = rows.collect_schema()?;
        let mut keys = self.mode.keys();
        keys.extend((0..self.keys).map(|i| col(format!("__k{i}"))));
        let mut states: Vec<PlExpr> = vec![len().cast(DataType::UInt64).alias("__included")];
        for (j, a) in self.aggs.iter().enumerate() {
            states.extend(a.partial(&Slot { j, schema: &schema }));
        }
        Ok(self.aggregate(rows, keys, states)?.collect()?)
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
        let schema = states[0].schema().clone();
        let mut keys = if hidden { self.mode.keys() } else { Vec::new() };
        keys.extend((0..self.keys).map(|i| col(format!("__k{i}"))));
        let mut merged: Vec<PlExpr> = vec![col("__included").sum().alias("__included")];
        for (j, a) in self.aggs.iter().enumerate() {
            merged.extend(a.merge(&Slot { j, schema: &schema }));
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
        if self.aggs.iter().any(|a| a.list_state()) {
            return Ok(lf.with_column(lit(true).alias("__one")).group_by([col("__one")]).agg(states).drop(cols(["__one"])));
        }
        Ok(lf.select(states))
    }

    /// Drops the parts of a state the mode no longer covers (older runs, steps, window bins).
    /// Exact: whatever is newest here is at most the newest anywhere.
    pub fn prune(&self, state: &DataFrame) -> Result<DataFrame> {
        match self.mode.keep().filter(|_| state.height() > 0) {
            None => Ok(state.clone()),
            Some(keep) => Ok(state.clone().lazy().filter(keep).collect()?),
        }
    }

    /// The mode this query was planned with.
    pub fn mode(&self) -> LiveMode {
        self.mode
    }

    /// The query's result from a merged state (or the concatenated rows of a row query).
    pub fn finalize(&self, state: &DataFrame) -> Result<DataFrame> {
        let mut state = self.prune(state)?;
        if self.mode.is_window() && !self.rows && state.height() > 0 {
            state = self.merge_with(&[state], false)?;
        }
        let result = if self.rows {
            let hidden: Vec<String> = (0..self.mode.hidden().len()).map(|i| format!("__m{i}")).collect();
            state.drop_many(hidden)
        } else {
            let schema = state.schema().clone();
            let exprs: Vec<PlExpr> = self
                .outputs
                .iter()
                .map(|(o, name)| {
                    let e = match *o {
                        Output::Key(k) => col(format!("__k{k}")),
                        Output::Agg(j) => self.aggs[j].finish(&Slot { j, schema: &schema }),
                    };
                    e.alias(name.as_str())
                })
                .collect();
            state.lazy().select(exprs).collect()?
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

pub(crate) fn output_name(e: &Expr) -> String {
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

/// `Some((unit, argument SQL))` when `e` is an aggregate call.
fn aggregate_of(e: &Expr) -> Result<Option<(Arc<dyn Aggregate>, Option<String>)>> {
    let Expr::Function(f) = e else {
        if contains_aggregate(e) {
            return Err(not_live(format!("`{e}`: an expression around an aggregate is not supported live yet; select the aggregates and combine them with %%sql")));
        }
        return Ok(None);
    };
    let name = f.name.to_string();
    let args = function_args(f);
    let distinct = matches!(&f.args, FunctionArguments::List(l) if matches!(l.duplicate_treatment, Some(sqlparser::ast::DuplicateTreatment::Distinct)));
    let star = matches!(args.as_slice(), [FunctionArgExpr::Wildcard]);
    let Some(unit) = aggregate::lookup(&Call { name: &name, distinct, star }) else {
        if contains_aggregate(e) {
            return Err(not_live(format!("`{e}`: an aggregate inside a function is not supported live yet")));
        }
        return Ok(None);
    };
    let unit: Arc<dyn Aggregate> = unit?.into();
    let name = name.to_ascii_lowercase();
    if f.over.is_some() || f.filter.is_some() {
        return Err(not_live(format!("{name}() with OVER/FILTER is not supported live; use WHERE")));
    }
    let arg = match args.as_slice() {
        [FunctionArgExpr::Wildcard] if unit.star() => None,
        [FunctionArgExpr::Expr(x)] => {
            if contains_aggregate(x) {
                return Err(not_live(format!("nested aggregate in `{e}`")));
            }
            Some(x.to_string())
        }
        _ => return Err(not_live(format!("{name}() takes one argument"))),
    };
    Ok(Some((unit, arg)))
}

fn contains_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(e, |x: &Expr| {
        if let Expr::Function(f) = x {
            found |= aggregate::is_aggregate(&f.name.to_string());
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
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
