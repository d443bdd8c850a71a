//! SQL over the catalog: polars' `SQLContext` with every table registered, dotted column names
//! quoted first ([`crate::rewrite`]), and polars' errors turned into ones that say what to fix.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use polars::prelude::*;
use polars::sql::SQLContext;

use std::sync::Arc;

use crate::arrays::ArrayFunctions;
use crate::catalog::Catalog;
use crate::error::{QueryError, Result};
use crate::files::polars_msg;
use crate::live::LiveQuery;
use crate::rewrite::{live_functions_for_tables, quote_dotted_names, table_function_paths};

/// How many close column names an unknown-column error lists.
const MAX_SUGGESTIONS: usize = 5;

/// A query ready to run, and what is needed to explain a failure.
struct Planned {
    run: Run,
    hints: Hints,
}

enum Run {
    /// Polars SQL.
    Polars(LazyFrame),
    /// An aggregate over one table through the live planner (the numbers `%%live` gives);
    /// polars' plan of the same SQL, should the live one fail, explains the failure.
    Live { query: LiveQuery, table: DataFrame, fallback: Result<LazyFrame> },
}

impl Run {
    fn execute(self, hints: &Hints) -> Result<DataFrame> {
        let collect = |lf: LazyFrame| match catch_unwind(AssertUnwindSafe(|| lf.collect())) {
            Ok(r) => r.map_err(|e| explain(e, hints)),
            Err(p) => Err(panicked(p)),
        };
        match self {
            Run::Polars(lf) => collect(lf),
            Run::Live { query, table, fallback } => match catch_unwind(AssertUnwindSafe(|| query.run_batches(&[table]))) {
                Ok(Ok(df)) => Ok(df),
                _ => collect(fallback?),
            },
        }
    }
}

/// The columns a failing query could have meant.
struct Hints {
    /// Columns of the tables (and files) the query reads, in table order, deduplicated.
    columns: Vec<String>,
    /// Dotted chains in the query that matched no column.
    unmatched: Vec<String>,
    tables: Vec<String>,
}

impl Catalog {
    /// Runs one SQL statement over the catalog's tables.
    ///
    /// Tables are referred to by name; files through polars' table functions
    /// (`read_parquet('f.parquet')`, `read_csv('f.csv')`, `read_ipc('f.arrow')`). Column names
    /// with dots may be written unquoted (`avg(ipm2.raw.sum)`, `e.ipm2.raw.sum`); names with
    /// `:` (EPICS PVs) must be double-quoted: `"epics.HX2:DVD:GCC:01:PMON"`.
    ///
    /// An aggregate over one table (`SELECT … FROM t [WHERE] [GROUP BY] [ORDER BY] [LIMIT]`)
    /// runs through the live planner and gives exactly what `%%live` gives: float sums exact
    /// and in f64, `first`/`last` the non-null value with the smallest/largest timestamp,
    /// `hist` leaving rows outside [lo, hi) out. Anything else (joins, HAVING, expressions
    /// around aggregates) is polars SQL 0.55 as users meet it: `sum` of an `f32` column adds
    /// in `f32` (write `sum(x::double)`); two aggregates of one column need `AS` names; after
    /// `JOIN … ON a.k = b.k` only `a.k` exists; fixed-size arrays are lists here, so `x[1]`
    /// (1-based) and `array_sum(x)` work; `count`, `sum`, `avg`, `min`, `max`, `median`,
    /// `stddev`, `variance`, `quantile_cont`, `first`, `last`, `corr`, `covar_samp`,
    /// `array_agg` aggregate, `stddev_pop`, `var_pop`, `mode` do not exist.
    pub fn sql(&self, query: &str) -> Result<DataFrame> {
        let Planned { run, hints } = self.plan(query)?;
        // Polars reports most problems as errors, but a bug deep in an engine can still panic;
        // a notebook must survive it (`execute` catches it).
        run.execute(&hints)
    }

    /// [`Catalog::sql`] that gives up when `cancel` becomes true (checked every few ms).
    ///
    /// Polars 0.55 has no cancellation hook that is safe to use from a library: the only one,
    /// `LazyFrame::collect_concurrently`, runs the query as a rayon job, where a panic aborts
    /// the process. So the query runs on its own thread and is *abandoned* on cancel: this
    /// returns [`QueryError::Cancelled`] at once, while the computation finishes in the
    /// background and its result is dropped.
    pub fn sql_with_cancel(&self, query: &str, cancel: &AtomicBool) -> Result<DataFrame> {
        if cancel.load(Ordering::Relaxed) {
            return Err(QueryError::Cancelled);
        }
        let Planned { run, hints } = self.plan(query)?;
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("beamtime-sql".into())
            .spawn(move || {
                let _ = tx.send(run.execute(&hints));
            })
            .map_err(|e| QueryError::Sql(format!("cannot start a query thread: {e}")))?;
        loop {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(r) => return r,
                Err(mpsc::RecvTimeoutError::Timeout) if cancel.load(Ordering::Relaxed) => return Err(QueryError::Cancelled),
                Err(mpsc::RecvTimeoutError::Timeout) => {},
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(QueryError::Sql("the query thread stopped without a result".into()));
                },
            }
        }
    }

    /// The SQL text after dotted names are quoted: what polars actually parses.
    pub fn rewrite_sql(&self, query: &str) -> String {
        let known = self.known_columns(&file_schemas(&self.context(), query));
        quote_dotted_names(query, &|s| known.contains(s)).sql
    }

    /// A context with every table registered (lazily: registering clones `Arc`s, not data).
    ///
    /// Fixed-size array columns are seen as lists: polars SQL's subscripts (`x[1]`) and
    /// `array_*` functions only take lists. The cast runs only for the columns a query uses.
    fn context(&self) -> SQLContext {
        let ctx = SQLContext::new().with_function_registry(Arc::new(ArrayFunctions::new(Arc::new(self.shapes().clone()))));
        for (name, df) in self.iter() {
            let lists: Vec<Expr> = df
                .schema()
                .iter()
                .filter_map(|(n, d)| match d {
                    DataType::Array(inner, _) => Some(col(n.clone()).cast(DataType::List(inner.clone()))),
                    _ => None,
                })
                .collect();
            let lf = df.clone().lazy();
            ctx.register(name, if lists.is_empty() { lf } else { lf.with_columns(lists) });
        }
        ctx
    }

    /// Column names of every table, and of the files the query reads with table functions.
    fn known_columns(&self, files: &[(String, Vec<String>)]) -> HashSet<String> {
        let mut known: HashSet<String> = self.all_columns().collect();
        known.extend(files.iter().flat_map(|(_, c)| c.iter().cloned()));
        known
    }

    fn all_columns(&self) -> impl Iterator<Item = String> + '_ {
        self.iter().flat_map(|(_, df)| df.get_column_names_owned()).map(|n| n.to_string())
    }

    fn plan(&self, query: &str) -> Result<Planned> {
        if query.trim().is_empty() {
            return Err(QueryError::Syntax("the query is empty".into()));
        }
        let live = self.plan_live(query);
        let mut ctx = self.context();
        let query = &live_functions_for_tables(query);
        let files = file_schemas(&ctx, query);
        let known = self.known_columns(&files);
        let rewritten = quote_dotted_names(query, &|s| known.contains(s));

        // The tables the query names, for suggestions; a query that does not parse has none.
        let mut tables: Vec<String> = polars::sql::extract_table_identifiers(&rewritten.sql, false, true).unwrap_or_default();
        tables.retain(|t| self.get(t).is_some());
        let mut columns: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let from_tables = tables.iter().filter_map(|t| self.get(t)).flat_map(|df| df.get_column_names_owned()).map(|n| n.to_string());
        for c in from_tables.chain(files.into_iter().flat_map(|(_, c)| c)) {
            if seen.insert(c.clone()) {
                columns.push(c);
            }
        }
        if columns.is_empty() {
            // No table recognised (e.g. a syntax error): suggest from every table.
            columns = self.all_columns().filter(|c| seen.insert(c.clone())).collect();
        }
        let hints = Hints { columns, unmatched: rewritten.unmatched, tables: self.names() };

        // Parsing and planning run user text through a large parser: same panic guard.
        // Without common-subexpression elimination: polars 0.55 panics on literal
        // subexpressions of filtered projections (e.g. a histogram's bin width).
        let no_cse = |lf: LazyFrame| {
            let flags = lf.get_current_optimizations();
            lf.with_optimizations(flags - OptFlags::COMM_SUBEXPR_ELIM)
        };
        let planned = catch_unwind(AssertUnwindSafe(|| ctx.execute(&rewritten.sql).map(no_cse).and_then(|mut lf| lf.collect_schema().map(|_| lf))));
        let polars = match planned {
            Ok(Ok(lf)) => Ok(lf),
            Ok(Err(e)) => Err(explain(e, &hints)),
            Err(p) => Err(panicked(p)),
        };
        let run = match live {
            Some((query, table)) => Run::Live { query, table, fallback: polars },
            None => Run::Polars(polars?),
        };
        Ok(Planned { run, hints })
    }

    /// An aggregate over one table of the catalog, planned as a live query: `first`/`last`
    /// by timestamp skipping nulls, `hist` leaving out-of-range rows out, exact float sums —
    /// the numbers `%%live` and `beamtime run` give. None for anything else.
    fn plan_live(&self, query: &str) -> Option<(LiveQuery, DataFrame)> {
        let known: HashSet<String> = self.all_columns().collect();
        let quoted = quote_dotted_names(query, &|s| known.contains(s)).sql;
        let tables = polars::sql::extract_table_identifiers(&quoted, false, true).ok()?;
        let [name] = tables.as_slice() else { return None };
        let table = self.get(name)?;
        let columns: Vec<String> = table.get_column_names().iter().map(|c| c.to_string()).collect();
        let planned = catch_unwind(AssertUnwindSafe(|| LiveQuery::plan_table(query, name, &columns))).ok()?;
        let mut planned = planned.ok()??;
        planned.set_shapes(Arc::new(self.shapes().clone()));
        Some((planned, table.clone()))
    }
}

/// `(path, columns)` of the files read with `read_parquet('…')` and friends; files that
/// cannot be opened are left for polars to report when the query runs.
fn file_schemas(ctx: &SQLContext, query: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (func, path) in table_function_paths(query) {
        let probe = format!("SELECT * FROM {func}('{}')", path.replace('\'', "''"));
        let mut ctx = ctx.clone();
        let schema = catch_unwind(AssertUnwindSafe(|| ctx.execute(&probe).and_then(|mut lf| lf.collect_schema())));
        if let Ok(Ok(s)) = schema {
            out.push((path, s.iter_names().map(|n| n.to_string()).collect()));
        }
    }
    out
}

fn panicked(p: Box<dyn std::any::Any + Send>) -> QueryError {
    let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default();
    QueryError::Sql(format!("polars failed internally on this query ({msg}); try rephrasing it"))
}

/// Turns a polars error into the error a user can act on.
fn explain(e: PolarsError, hints: &Hints) -> QueryError {
    let full = polars_msg(&e);
    // Polars appends the plan it failed in; users want the first paragraph.
    let msg = full.split("\n\nResolved plan").next().unwrap_or(&full).trim_end().to_string();
    let unknown_column = |column: String| {
        let suggestions = suggest(&column, &hints.columns);
        QueryError::UnknownColumn { column, suggestions }
    };
    let missing_table = quoted_after(&msg, "relation '").filter(|_| msg.contains("not found"));
    if let Some(name) = missing_table.or_else(|| quoted_after(&msg, "table '").filter(|_| msg.contains("does not exist"))) {
        return QueryError::UnknownTable { name, available: hints.tables.clone() };
    }
    // `ipm2.raw.sm` or `e.ipm2.raw.sm` unquoted: polars looked for a table, struct or column
    // `ipm2`; the user meant the whole chain.
    if let Some(first) = quoted_after(&msg, "no table or struct column named '").or_else(|| quoted_after(&msg, "no column named '")) {
        let chain = hints.unmatched.iter().find_map(|c| {
            let at = if c.starts_with(&format!("{first}.")) { 0 } else { c.find(&format!(".{first}."))? + 1 };
            Some(c[at..].to_string())
        });
        return unknown_column(chain.unwrap_or(first));
    }
    if let Some(name) = quoted_after(&msg, "duplicate output name '") {
        return QueryError::Sql(format!(
            "two result columns would both be named {name:?}; name them with AS, e.g. min({name}) AS {name}_min, max({name}) AS {name}_max"
        ));
    }
    let root = root_error(&e);
    if let PolarsError::ColumnNotFound(_) | PolarsError::SchemaFieldNotFound(_) | PolarsError::StructFieldNotFound(_) = root
        && let Some(column) = missing_column(&msg)
    {
        // `step:s`: polars' name for the right-hand key `s.step` of a join, which it merges
        // into the left-hand key.
        if let Some((base, alias)) = column.rsplit_once(':')
            && hints.columns.iter().any(|c| c == base)
            && !alias.is_empty()
            && alias.chars().all(|c| c.is_alphanumeric() || c == '_')
        {
            return QueryError::Sql(format!(
                "{alias}.{base} is a join key that polars merges into the other table's key after the JOIN; refer to that one instead (or join with USING ({base}) and write {base})"
            ));
        }
        return unknown_column(column);
    }
    match root {
        PolarsError::SQLSyntax(_) => QueryError::Syntax(clean_sql_msg(&msg)),
        PolarsError::SQLInterface(m) if m.starts_with("sql parser error") => QueryError::Syntax(clean_sql_msg(&msg)),
        _ => QueryError::Sql(msg),
    }
}

fn root_error(e: &PolarsError) -> &PolarsError {
    match e {
        PolarsError::Context { error, .. } | PolarsError::ExprContext { error, .. } => root_error(error),
        e => e,
    }
}

/// The text between `prefix` and the next quote matching the prefix's last character.
fn quoted_after(msg: &str, prefix: &str) -> Option<String> {
    let q = prefix.chars().last()?;
    let start = msg.find(prefix)? + prefix.len();
    let len = msg[start..].find(q)?;
    Some(msg[start..start + len].to_string())
}

/// The column name a not-found error is about: `unable to find column "x"; valid columns: […]`,
/// `not found: x`, `field not found: x`.
fn missing_column(msg: &str) -> Option<String> {
    let name = quoted_after(msg, "column \"").or_else(|| quoted_after(msg, "column '")).or_else(|| {
        let i = msg.find("not found: ")? + "not found: ".len();
        let rest = &msg[i..];
        let end = rest.find(['\n', ';']).unwrap_or(rest.len());
        Some(rest[..end].trim().trim_matches(['"', '\'']).to_string())
    })?;
    (!name.is_empty()).then_some(name)
}

/// Drops the parser's `sql parser error: ` prefix.
fn clean_sql_msg(msg: &str) -> String {
    msg.replace("sql parser error: ", "")
}

/// Up to [`MAX_SUGGESTIONS`] columns close to `name`: same name ignoring case, then those
/// containing it (or contained in it), then by edit distance, within a third of the length.
pub fn suggest(name: &str, columns: &[String]) -> Vec<String> {
    let lname = name.to_lowercase();
    let mut scored: Vec<(usize, usize, &String)> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.as_str() != name)
        .filter_map(|(i, c)| {
            let lc = c.to_lowercase();
            let d = levenshtein(&lname, &lc);
            let rank = if lc == lname {
                0
            } else if lc.contains(&lname) || (lname.len() >= 3 && lname.contains(&lc) && lc.len() >= 3) {
                1 + d
            } else if d <= (lname.chars().count().max(3)) / 3 {
                100 + d
            } else {
                // Last path segment equal (`raw.sum` vs `ipm2.raw.sum`, `sum` vs `ipm2.raw.sum`).
                let tail = |s: &str| s.rsplit(['.', ':']).next().unwrap_or("").to_string();
                if tail(&lc) == tail(&lname) && !tail(&lc).is_empty() { 200 + d } else { return None }
            };
            Some((rank, i, c))
        })
        .collect();
    scored.sort();
    // A column offered by several sources (streams, batches) is suggested once.
    let mut seen = std::collections::HashSet::new();
    scored.into_iter().filter(|(_, _, c)| seen.insert(c.as_str())).take(MAX_SUGGESTIONS).map(|(_, _, c)| c.clone()).collect()
}

/// Edit distance (insertions, deletions, substitutions) over chars.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let cols: Vec<String> =
            ["ipm2.raw.sum", "ipm2.raw.xpos", "diode.raw.signal", "step", "Step2", "gmd.raw.millijoulesperpulse"].map(String::from).to_vec();
        assert_eq!(suggest("ipm2.raw.sm", &cols), ["ipm2.raw.sum"]);
        assert_eq!(suggest("ipm2", &cols), ["ipm2.raw.sum", "ipm2.raw.xpos"]);
        assert_eq!(suggest("STEP", &cols), ["step", "Step2"]);
        assert_eq!(suggest("sum", &cols), ["ipm2.raw.sum"]);
        assert!(suggest("zzzzzz", &cols).is_empty());
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        let twice: Vec<String> = ["ipm2.raw.sum", "ipm2.raw.sum", "ipm2.raw.xpos"].map(String::from).to_vec();
        assert_eq!(suggest("ipm2.raw.summ", &twice), ["ipm2.raw.sum", "ipm2.raw.xpos"]);
    }

    #[test]
    fn live_functions_work_over_tables_with_the_same_numbers() {
        let mut cat = Catalog::new();
        let df = df!("x" => [0.1, 0.4, 0.6, 1.2, 5.0], "y" => [1.0, 2.0, 3.0, 4.0, 10.0]).unwrap();
        cat.insert("t", df).unwrap();
        let r = cat.sql("SELECT bin(x, 0.5) AS b, count(*) AS n FROM t GROUP BY b ORDER BY b").unwrap();
        assert_eq!(r.column("b").unwrap().f64().unwrap().into_no_null_iter().collect::<Vec<_>>(), [0.0, 0.5, 1.0, 5.0]);
        assert_eq!(r.column("n").unwrap().cast(&DataType::UInt32).unwrap().u32().unwrap().into_no_null_iter().collect::<Vec<_>>(), [2, 1, 1, 1]);
        // hist: the out-of-range value (5.0) is left out, as live — through the live planner
        // and through polars (HAVING is not live).
        let r = cat.sql("SELECT hist(x, 0, 2, 4) AS h, count(*) AS n FROM t GROUP BY h ORDER BY h NULLS LAST").unwrap();
        let h: Vec<Option<f64>> = r.column("h").unwrap().f64().unwrap().iter().collect();
        assert_eq!(h, [Some(0.0), Some(0.5), Some(1.0)]);
        let r = cat.sql("SELECT hist(x, 0, 2, 4) AS h, count(*) AS n FROM t GROUP BY h HAVING count(*) > 0 ORDER BY h NULLS LAST").unwrap();
        let h: Vec<Option<f64>> = r.column("h").unwrap().f64().unwrap().iter().collect();
        assert_eq!(h, [Some(0.0), Some(0.5), Some(1.0)]);
        let r = cat.sql("SELECT var_pop(y) AS v, stddev_pop(y) AS s FROM t").unwrap();
        let v = r.column("v").unwrap().f64().unwrap().get(0).unwrap();
        let mean = 20.0 / 5.0;
        let want = [1.0f64, 2.0, 3.0, 4.0, 10.0].iter().map(|y| (y - mean) * (y - mean)).sum::<f64>() / 5.0;
        assert!((v - want).abs() < 1e-12 && (r.column("s").unwrap().f64().unwrap().get(0).unwrap() - want.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn first_and_last_skip_nulls_in_timestamp_order_like_live() {
        let mut cat = Catalog::new();
        // Rows out of timestamp order, the detector present on some events only.
        let df = df!(
            "timestamp" => [30u64, 10, 20, 50, 40],
            "det" => [Some(3.0f32), None, Some(2.0), None, Some(4.0)],
            "g" => [1i64, 1, 2, 2, 1]
        )
        .unwrap();
        cat.insert("t", df).unwrap();
        let r = cat.sql("SELECT first(det) AS f, last(det) AS l, sum(det) AS s FROM t").unwrap();
        assert_eq!(r.column("f").unwrap().f32().unwrap().get(0), Some(2.0)); // t=20 (t=10 is null)
        assert_eq!(r.column("l").unwrap().f32().unwrap().get(0), Some(4.0)); // t=40 (t=50 is null)
        // A float sum comes back in f64.
        assert_eq!(r.column("s").unwrap().f64().unwrap().get(0), Some(9.0));
        let r = cat.sql("SELECT g, first(det) AS f, last(det) AS l FROM t GROUP BY g ORDER BY g").unwrap();
        let f: Vec<Option<f32>> = r.column("f").unwrap().f32().unwrap().iter().collect();
        let l: Vec<Option<f32>> = r.column("l").unwrap().f32().unwrap().iter().collect();
        assert_eq!((f, l), (vec![Some(3.0), Some(2.0)], vec![Some(4.0), Some(2.0)]));
        // Without a timestamp column: table order, still skipping nulls.
        let mut cat = Catalog::new();
        cat.insert("u", df!("v" => [None, Some(1i32), Some(2), None]).unwrap()).unwrap();
        let r = cat.sql("SELECT first(v) AS f, last(v) AS l FROM u").unwrap();
        assert_eq!((r.column("f").unwrap().i32().unwrap().get(0), r.column("l").unwrap().i32().unwrap().get(0)), (Some(1), Some(2)));
    }
}
