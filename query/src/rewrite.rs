//! Unquoted dotted column names in SQL: `ipm2.raw.sum` → `"ipm2.raw.sum"`.
//!
//! The events table names columns like psana paths (`<det>.<alg>.<field>`), and SQL reads
//! `a.b.c` as table/struct access. Before polars parses a query, a small scanner that knows
//! SQL's lexical rules (string literals, quoted identifiers, comments, dollar quotes, numbers)
//! finds identifier chains and quotes the longest prefix that is a known column name:
//!
//! - `ipm2.raw.sum` → `"ipm2.raw.sum"`; `ipm2.raw.sum::int` → `"ipm2.raw.sum"::int`;
//! - `t.ipm2.raw.sum` (a table name or alias `t` first) → `t."ipm2.raw.sum"`;
//! - `e.step` and other `table.column` references are left alone, as are chains that match
//!   no column (struct fields, `schema.table`).
//!
//! It also writes `1e9` as `1.0e9`: polars 0.55 parses a number without a '.' as an integer
//! and rejects exponents.
//!
//! Names with `:` (EPICS PVs, `epics.HX2:DVD:GCC:01:PMON`) are matched too, but only quoting
//! (`"epics.HX2:DVD:GCC:01:PMON"`) is documented for them: `:` means other things in SQL.
//! Matching is case-sensitive, like polars' column names.
//!
//! The functions live queries add to SQL (`bin`, `hist`, `var_pop`, `stddev_pop`) are
//! rewritten here too, into arithmetic polars evaluates ([`live_functions`],
//! [`live_functions_for_tables`]).

/// Token kinds the rewriter cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    /// An unquoted identifier or keyword (no dots).
    Word,
    /// `"…"` or `` `…` ``.
    QuotedIdent,
    /// `'…'`, `E'…'`, `$tag$…$tag$`.
    Str,
    Number,
    /// Whitespace and comments.
    Space,
    /// Any other single character.
    Punct,
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '#' || c == '@'
}

fn is_ident_part(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '@' | '$' | '#')
}

/// A lexical scanner over SQL text following sqlparser's GenericDialect (what polars uses):
/// `''` escapes in strings, backslash escapes only in `E'…'`, nested `/* */` comments.
/// Unterminated strings and comments run to the end (the parser reports them).
pub(crate) struct Scanner<'a> {
    text: &'a str,
    pub(crate) pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Scanner { text, pos: 0 }
    }

    fn peek(&self, at: usize) -> Option<char> {
        self.text.get(at..).and_then(|s| s.chars().next())
    }

    /// Index after the closing `quote` of a literal whose opening quote is at `start`.
    fn close_quoted(&self, start: usize, quote: u8, backslash: bool) -> usize {
        let b = self.text.as_bytes();
        let mut i = start + 1;
        while i < b.len() {
            if backslash && b[i] == b'\\' {
                i += 2;
            } else if b[i] == quote {
                if b.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            } else {
                i += 1;
            }
        }
        b.len()
    }

    /// `$tag$` at `start` (the tag may be empty): the index after the closing `$tag$`.
    fn close_dollar(&self, start: usize) -> Option<usize> {
        let rest = &self.text[start + 1..];
        let tag_len = rest.find('$')?;
        let tag = &rest[..tag_len];
        if !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || tag.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let delim = &self.text[start..start + tag_len + 2];
        let body = start + delim.len();
        Some(self.text[body..].find(delim).map_or(self.text.len(), |i| body + i + delim.len()))
    }
}

impl Iterator for Scanner<'_> {
    /// `(kind, start, end)` byte offsets.
    type Item = (Tok, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.pos;
        let c = self.peek(start)?;
        let b = self.text.as_bytes();
        let next_is = |ch: u8| b.get(start + 1) == Some(&ch);
        let (kind, end) = match c {
            c if c.is_whitespace() => {
                let n = self.text[start..].find(|c: char| !c.is_whitespace()).unwrap_or(self.text.len() - start);
                (Tok::Space, start + n)
            },
            '-' if next_is(b'-') => (Tok::Space, self.text[start..].find('\n').map_or(self.text.len(), |i| start + i + 1)),
            '/' if next_is(b'*') => {
                let (mut depth, mut i) = (1usize, start + 2);
                while i < b.len() && depth > 0 {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                (Tok::Space, i.min(b.len()))
            },
            '\'' => (Tok::Str, self.close_quoted(start, b'\'', false)),
            '"' => (Tok::QuotedIdent, self.close_quoted(start, b'"', false)),
            '`' => (Tok::QuotedIdent, self.close_quoted(start, b'`', false)),
            '$' => match self.close_dollar(start) {
                Some(end) => (Tok::Str, end),
                None => (Tok::Punct, start + 1),
            },
            c if c.is_ascii_digit() || (c == '.' && b.get(start + 1).is_some_and(u8::is_ascii_digit)) => {
                let mut i = start;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                    // The sign of an exponent belongs to the number: `1.5e-3`.
                    let exp = matches!(b[i], b'e' | b'E') && b[start..i].iter().all(|c| c.is_ascii_digit() || *c == b'.');
                    i += 1;
                    if exp && i + 1 < b.len() && matches!(b[i], b'+' | b'-') && b[i + 1].is_ascii_digit() {
                        i += 1;
                    }
                }
                (Tok::Number, i)
            },
            // Escaped string E'…' (the only place a backslash escapes).
            'E' | 'e' if next_is(b'\'') => (Tok::Str, self.close_quoted(start + 1, b'\'', true)),
            c if is_ident_start(c) => {
                let n = self.text[start..].find(|c: char| !is_ident_part(c));
                (Tok::Word, n.map_or(self.text.len(), |n| start + n))
            },
            c => (Tok::Punct, start + c.len_utf8()),
        };
        self.pos = end;
        Some((kind, start, end))
    }
}

/// End of the identifier chain at `start`: identifier characters, `.` and `:`.
fn chain_end(text: &str, start: usize) -> usize {
    text[start..].find(|c: char| !(is_ident_part(c) || c == '.' || c == ':')).map_or(text.len(), |n| start + n)
}

/// The longest `text[start..p]`, `p ≤ end` cut before a `.`/`:` or at `end`, that contains a
/// `.` or `:` and is a column name.
fn longest_column(text: &str, start: usize, end: usize, is_column: &dyn Fn(&str) -> bool) -> Option<usize> {
    let b = text.as_bytes();
    (start + 1..=end)
        .rev()
        .filter(|&p| (p == end || matches!(b[p], b'.' | b':')) && !matches!(b[p - 1], b'.' | b':'))
        .find(|&p| {
            let s = &text[start..p];
            s.contains(['.', ':']) && is_column(s)
        })
}

/// Quotes a name as an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What [`quote_dotted_names`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    pub sql: String,
    /// Column names it quoted, in order of appearance.
    pub quoted: Vec<String>,
    /// Dotted chains that matched no column (for error messages): `ipm2.raw.sm`.
    pub unmatched: Vec<String>,
}

/// Rewrites `query`, quoting dotted identifier chains that name a column (see the module
/// documentation). Everything else, whitespace and comments included, is copied unchanged.
pub fn quote_dotted_names(query: &str, is_column: &dyn Fn(&str) -> bool) -> Rewritten {
    let mut out = Rewritten { sql: String::with_capacity(query.len() + 16), ..Default::default() };
    let mut sc = Scanner::new(query);
    let mut last = 0; // query[last..] is not yet copied
    // The last quoted identifier: (end, name), to tell `"t".x` (a qualifier) from `"col".x`.
    let mut quoted: Option<(usize, String)> = None;
    while let Some((kind, start, end)) = sc.next() {
        if kind == Tok::QuotedIdent {
            let q = &query[start..end];
            let delim = &q[..1]; // `"` or `` ` ``
            // An unterminated one runs to the end: nothing can follow it.
            if let Some(inner) = q.get(1..).and_then(|r| r.strip_suffix(delim)) {
                quoted = Some((end, inner.replace(&delim.repeat(2), delim)));
            }
        }
        // polars 0.55 reads a number without '.' as an integer, so `1e9` fails: write `1.0e9`.
        if kind == Tok::Number && let Some(e) = integer_with_exponent(&query[start..end]) {
            out.sql.push_str(&query[last..start + e]);
            out.sql.push_str(".0");
            last = start + e;
            continue;
        }
        // Words inside a chain were handled with its first word, unless they follow a quoted
        // qualifier: `"t".ipm2.raw.sum` (but `"ipm2.raw".sum` is a field of a column).
        let after_qualifier = matches!(&quoted, Some((e, name)) if *e + 1 == start && query[*e..start] == *"." && !is_column(name));
        let mid_chain = query[..start].ends_with(['.', ':']) && !query[..start].ends_with("::") && !after_qualifier;
        if kind != Tok::Word || mid_chain {
            continue;
        }
        // `::` is a cast, not part of a name.
        let chain = chain_end(query, start);
        let chain = query[start..chain].find("::").map_or(chain, |i| start + i);
        // A: the chain starts with a column name. B: `qualifier.column`.
        let a = longest_column(query, start, chain, is_column);
        let b = (query.as_bytes().get(end) == Some(&b'.') && query[end + 1..].starts_with(is_ident_start))
            .then(|| longest_column(query, end + 1, chain, is_column))
            .flatten();
        let (from, to) = match (a, b) {
            (Some(pa), Some(pb)) if pb > pa => (end + 1, pb),
            (Some(pa), _) => (start, pa),
            (None, Some(pb)) => (end + 1, pb),
            (None, None) => {
                let c = query[start..chain].trim_end_matches([':', '.']);
                if c.contains('.') && !c.contains("::") {
                    out.unmatched.push(c.to_string());
                }
                // Skip the chain's words so that no later part is matched on its own.
                sc.pos = chain;
                continue;
            },
        };
        out.sql.push_str(&query[last..from]);
        // `"a"b.c` must not become `"a""b.c"` (one identifier with a quote in it).
        if out.sql.ends_with('"') {
            out.sql.push(' ');
        }
        out.sql.push_str(&quote_ident(&query[from..to]));
        if query[to..].starts_with('"') {
            out.sql.push(' ');
        }
        out.quoted.push(query[from..to].to_string());
        last = to;
        sc.pos = to;
    }
    out.sql.push_str(&query[last..]);
    out
}

/// `Some(index of 'e')` for `123e4`, `1E-9`: digits, an exponent, no '.'.
fn integer_with_exponent(n: &str) -> Option<usize> {
    let e = n.find(['e', 'E'])?;
    let (mantissa, exp) = (&n[..e], &n[e + 1..]);
    let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    (digits(mantissa) && digits(exp)).then_some(e)
}

/// `read_parquet('…')`, `read_csv('…')`, `read_ipc('…')`, `read_json('…')` calls: (function,
/// path) with the path unescaped.
pub(crate) fn table_function_paths(query: &str) -> Vec<(String, String)> {
    let toks: Vec<(Tok, usize, usize)> = Scanner::new(query).filter(|t| t.0 != Tok::Space).collect();
    let mut out = Vec::new();
    for w in toks.windows(4) {
        let [(Tok::Word, f0, f1), (Tok::Punct, p0, _), (Tok::Str, s0, s1), (Tok::Punct, c0, _)] = *w else { continue };
        let f = query[f0..f1].to_ascii_lowercase();
        let lit = &query[s0..s1];
        if matches!(f.as_str(), "read_parquet" | "read_csv" | "read_ipc" | "read_json")
            && &query[p0..=p0] == "("
            && &query[c0..=c0] == ")"
            && lit.len() >= 2
            && lit.starts_with('\'')
            && lit.ends_with('\'')
        {
            out.push((f, lit[1..lit.len() - 1].replace("''", "'")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLS: &[&str] = &[
        "step",
        "ipm2.raw.sum",
        "ipm2.raw",
        "diode.raw.signal",
        "lasr.raw.laser_on",
        "scan.motor",
        "epics.HX2:DVD:GCC:01:PMON",
        "fim_1.fex.intensity",
    ];

    fn rw(q: &str) -> String {
        quote_dotted_names(q, &|s| COLS.contains(&s)).sql
    }

    #[test]
    fn quotes_dotted_columns() {
        assert_eq!(
            rw("SELECT avg(ipm2.raw.sum) FROM events WHERE lasr.raw.laser_on = 1 GROUP BY step"),
            r#"SELECT avg("ipm2.raw.sum") FROM events WHERE "lasr.raw.laser_on" = 1 GROUP BY step"#
        );
        // Longest match first: ipm2.raw is a column too.
        assert_eq!(rw("ipm2.raw, ipm2.raw.sum"), r#""ipm2.raw", "ipm2.raw.sum""#);
        assert_eq!(rw("scan.motor::int"), r#""scan.motor"::int"#);
        assert_eq!(rw("epics.HX2:DVD:GCC:01:PMON*2"), r#""epics.HX2:DVD:GCC:01:PMON"*2"#);
        assert_eq!(rw("fim_1.fex.intensity+1"), r#""fim_1.fex.intensity"+1"#);
    }

    #[test]
    fn qualified_names() {
        assert_eq!(rw("e.ipm2.raw.sum"), r#"e."ipm2.raw.sum""#);
        assert_eq!(rw(r#""e".ipm2.raw.sum"#), r#""e"."ipm2.raw.sum""#);
        assert_eq!(rw(r#"`e`.ipm2.raw.sum"#), r#"`e`."ipm2.raw.sum""#);
        // After a column, the rest is a struct field, never another column.
        assert_eq!(rw("scan.motor.scan.motor"), r#""scan.motor".scan.motor"#);
        assert_eq!(rw(r#""scan.motor".scan.motor"#), r#""scan.motor".scan.motor"#);
        assert_eq!(rw("e.step, events.step"), "e.step, events.step");
    }

    #[test]
    fn leaves_literals_comments_and_unknown_chains() {
        for q in [
            "'ipm2.raw.sum'",
            r#""ipm2.raw.sum""#,
            "-- ipm2.raw.sum\n",
            "/* ipm2.raw.sum /* nested */ ipm2.raw.sum */",
            "$$ipm2.raw.sum$$",
            "$t$ ipm2.raw.sum $t$",
            r"E'it\'s ipm2.raw.sum'",
            "s.field",
            "x.ipm2.rawx.sum",
            "ipm2.rawx.sum",
            "1.5e3",
        ] {
            assert_eq!(rw(q), q, "{q}");
        }
        assert_eq!(rw("'it''s' || ipm2.raw.sum"), r#"'it''s' || "ipm2.raw.sum""#);
        // The longest prefix that is a column wins; the rest reads as a struct field.
        assert_eq!(rw("ipm2.raw.summ"), r#""ipm2.raw".summ"#);
        let r = quote_dotted_names("SELECT diode.raw.sig, a.b, ipm2.raw.sum FROM t", &|s| COLS.contains(&s));
        assert_eq!(r.unmatched, ["diode.raw.sig", "a.b"]);
        assert_eq!(r.quoted, ["ipm2.raw.sum"]);
    }

    #[test]
    fn exponents_get_a_decimal_point() {
        assert_eq!(rw("x > 1e9 AND y < 2E-3 AND z = 1.5e-3 AND w = 0x1e5 AND v = 3e+2"), "x > 1.0e9 AND y < 2.0E-3 AND z = 1.5e-3 AND w = 0x1e5 AND v = 3.0e+2");
        assert_eq!(rw("a-1e2"), "a-1.0e2");
        assert_eq!(rw("'1e9'"), "'1e9'");
    }

    #[test]
    fn finds_table_function_paths() {
        assert_eq!(
            table_function_paths("SELECT * FROM read_parquet( 'a.parquet' ) JOIN READ_CSV('it''s.csv') USING (x)"),
            [("read_parquet".to_string(), "a.parquet".to_string()), ("read_csv".to_string(), "it's.csv".to_string())]
        );
    }

    /// Random text from SQL's tricky characters: no panic, and rewriting twice changes nothing.
    #[test]
    fn random_text_never_panics_and_rewriting_is_idempotent() {
        const ATOMS: &[&str] = &[
            "ipm2", ".", "raw", "sum", ":", "'", "\"", "`", "$", "$t$", "-", "/", "*", "1", "e", "E", "+", " ", "\n", "é", "x", "_", "::",
            "scan.motor", "(", ")", "\\",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut lengths = 0;
        for _ in 0..20_000 {
            let mut q = String::new();
            for _ in 0..next() % 24 {
                q.push_str(ATOMS[(next() % ATOMS.len() as u64) as usize]);
            }
            lengths += q.len();
            let once = rw(&q);
            assert_eq!(rw(&once), once, "{q:?}");
            let _ = table_function_paths(&q);
        }
        assert!(lengths > 100_000, "the generator makes text");
    }

    #[test]
    fn never_panics_on_odd_text() {
        for q in ["", "'", "\"", "$", "$a", "/*", "--", "a.", "a..b", "é.ü", "ipm2.raw.sum.", ".5", "E'\\", "a::", "::b", "1e", "1e-", "1e+x", ".e5"] {
            let _ = rw(q);
            let _ = table_function_paths(q);
        }
    }
}

// ---- live functions as SQL polars evaluates ----

use sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SetExpr, Statement};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

/// The arguments of a function call as expressions (named ones by position).
pub(crate) fn function_args(f: &sqlparser::ast::Function) -> Vec<FunctionArgExpr> {
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

/// True for a `hist(…)` call.
pub(crate) fn is_hist(e: &Expr) -> bool {
    matches!(e, Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("hist"))
}

/// The condition that keeps the rows of `hist(x, lo, hi, n)` inside [lo, hi): a histogram
/// leaves the others out.
pub(crate) fn hist_range(e: &Expr) -> Option<String> {
    let Expr::Function(f) = e else { return None };
    if !is_hist(e) {
        return None;
    }
    let args = function_args(f);
    let [FunctionArgExpr::Expr(x), FunctionArgExpr::Expr(lo), FunctionArgExpr::Expr(hi), FunctionArgExpr::Expr(_)] = args.as_slice() else {
        return None;
    };
    Some(format!("({x}) >= ({lo}) AND ({x}) < ({hi})"))
}

/// `bin(x, w)` → `floor(x / w) * w`; `hist(x, lo, hi, n)` → the lower edge of x's bin, in the
/// row-level SQL of a live query (its planner adds the range to WHERE).
pub(crate) fn live_functions(sql: &str) -> String {
    rewrite_calls(sql, false)
}

/// The functions live queries know, for `%%sql` queries that polars runs itself (those the
/// live planner cannot: joins, HAVING, expressions around aggregates…): `bin`, `hist` (rows
/// outside [lo, hi) left out, as live), `var_pop`, `stddev_pop`.
pub fn live_functions_for_tables(sql: &str) -> String {
    let lower = sql.to_ascii_lowercase();
    if !["bin(", "hist(", "var_pop(", "stddev_pop("].iter().any(|f| lower.contains(f)) {
        return sql.to_string();
    }
    rewrite_calls(sql, true)
}

fn rewrite_calls(sql: &str, tables: bool) -> String {
    let Ok(mut stmts) = Parser::parse_sql(&GenericDialect {}, sql) else { return sql.to_string() };
    if tables {
        for st in stmts.iter_mut() {
            if let Statement::Query(q) = st {
                if let SetExpr::Select(sel) = q.body.as_mut() {
                    leave_out_of_range_rows(sel);
                }
            }
        }
    }
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
                ("hist", [x, lo, hi, n]) => Some(format!(
                    "(({lo}) + floor((({x}) - ({lo})) / ((({hi}) - ({lo})) / ({n}))) * ((({hi}) - ({lo})) / ({n})))"
                )),
                ("var_pop", [x]) if tables => Some(format!("(var({x}) * (count({x}) - 1) / count({x}))")),
                ("stddev_pop", [x]) if tables => Some(format!("sqrt(var({x}) * (count({x}) - 1) / count({x}))")),
                // An event function in a live query: each event's timestamp goes along, for
                // the message of a panic.
                (f, args) if !tables && crate::event_functions::arity(f) == Some(args.len()) => Some(format!("{f}({}, timestamp)", args.join(", "))),
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

/// ANDs the ranges of the `hist(…)` keys in a SELECT's list or GROUP BY into its WHERE.
fn leave_out_of_range_rows(sel: &mut sqlparser::ast::Select) {
    let mut ranges: Vec<String> = Vec::new();
    let mut collect = |e: &Expr| {
        let _ = sqlparser::ast::visit_expressions(e, |x: &Expr| {
            if let Some(r) = hist_range(x).filter(|r| !ranges.contains(r)) {
                ranges.push(r);
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
    };
    for item in &sel.projection {
        if let sqlparser::ast::SelectItem::UnnamedExpr(e) | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. } = item {
            collect(e);
        }
    }
    if let sqlparser::ast::GroupByExpr::Expressions(exprs, _) = &sel.group_by {
        exprs.iter().for_each(&mut collect);
    }
    if ranges.is_empty() {
        return;
    }
    let mut cond = ranges.join(" AND ");
    if let Some(w) = &sel.selection {
        cond = format!("({w}) AND {cond}");
    }
    if let Ok(parsed) = Parser::new(&GenericDialect {}).try_with_sql(&cond).and_then(|mut p| p.parse_expr()) {
        sel.selection = Some(parsed);
    }
}
