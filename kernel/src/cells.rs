//! Executing cells, one at a time, on their own thread (spec §4): magics here, Rust through
//! `rust` (evcxr). Every cell: busy → execute_input → outputs → result → reply → idle.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use polars::prelude::DataFrame;
use serde_json::{json, Value};

use crate::display;
use crate::magics;
use crate::requests::{NameIndex, Requests};
use crate::server::Shared;
use crate::transport::Message;

pub enum Job {
    Execute(Message),
}

/// A cell that failed: shown as one iopub `error` and an error reply.
#[derive(Debug)]
pub struct CellError {
    pub ename: String,
    pub evalue: String,
    pub traceback: Vec<String>,
}

impl CellError {
    pub fn new(ename: &str, evalue: impl Into<String>) -> Self {
        let evalue = evalue.into();
        CellError { ename: ename.into(), traceback: vec![format!("\x1b[0;31m{ename}\x1b[0m: {evalue}")], evalue }
    }
    fn interrupted(what: &str) -> Self {
        CellError::new("KeyboardInterrupt", format!("{what} interrupted"))
    }
}

impl From<query::QueryError> for CellError {
    fn from(e: query::QueryError) -> Self {
        CellError::new("QueryError", e.to_string())
    }
}

/// What a cell hands back to be shown as its `execute_result` (a mime bundle).
pub type Bundle = Value;

/// What running code may do besides returning a result.
pub struct CellContext<'a> {
    pub shared: &'a Shared,
    pub parent: &'a Message,
    pub silent: bool,
    pub allow_stdin: bool,
}

impl CellContext<'_> {
    pub fn stream(&self, name: &str, text: &str) {
        if !self.silent && !text.is_empty() {
            self.shared.outbox.publish(Some(self.parent), "stream", json!({"name": name, "text": text}));
        }
    }
    pub fn display(&self, data: Value) {
        if !self.silent {
            self.shared.outbox.publish(Some(self.parent), "display_data", json!({"data": data, "metadata": {}, "transient": {}}));
        }
    }
    pub fn interrupted(&self) -> bool {
        self.shared.interrupt.load(Ordering::SeqCst)
    }
    /// Input from the frontend, or an error when the frontend does not allow it.
    pub fn input(&self, prompt: &str, password: bool) -> Result<String, CellError> {
        if !self.allow_stdin {
            return Err(CellError::new("StdinNotImplementedError", "this frontend does not support input requests"));
        }
        self.shared.outbox.input(self.parent, prompt, password).ok_or_else(|| CellError::new("EOFError", "no input reply"))
    }
}

pub struct Executor {
    shared: Arc<Shared>,
    requests: Arc<Requests>,
    catalog: query::Catalog,
    count: u32,
    rust: crate::rust::RustCells,
    live: crate::live::Live,
    /// When the last failed cell's error reply was made (what `stop_on_error` aborts is
    /// what was sent before it).
    failed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Executor {
    pub fn new(shared: Arc<Shared>, requests: Arc<Requests>) -> Self {
        let rust = crate::rust::RustCells::new(requests.rust.clone());
        let live = crate::live::Live::new(shared.outbox.clone(), shared.widgets.clone());
        Executor { shared, requests, catalog: query::Catalog::new(), count: 0, rust, live, failed_at: None }
    }

    pub fn run(mut self, jobs: Receiver<Job>) {
        let mut next: Option<Message> = None;
        loop {
            let m = match next.take() {
                Some(m) => m,
                None => match jobs.recv() {
                    Ok(Job::Execute(m)) => m,
                    Err(_) => break,
                },
            };
            let ok = self.execute(&m);
            let stop_on_error = m.content.get("stop_on_error").and_then(Value::as_bool).unwrap_or(true);
            if !ok && stop_on_error {
                // Like ipykernel: executes already queued behind a failed cell are aborted —
                // only those sent before it failed, not one a client sent after seeing the error.
                while let Ok(Job::Execute(q)) = jobs.try_recv() {
                    if self.failed_at.is_none_or(|t| q.header.date <= t) {
                        self.abort(&q);
                    } else {
                        next = Some(q);
                        break;
                    }
                }
            }
        }
    }

    fn abort(&self, m: &Message) {
        let out = &self.shared.outbox;
        out.status(m, "busy");
        out.shell_reply(m, "execute_reply", json!({"status": "aborted", "execution_count": self.count}));
        out.status(m, "idle");
    }

    /// Runs one execute_request; false when the cell failed.
    fn execute(&mut self, m: &Message) -> bool {
        let out = self.shared.outbox.clone();
        out.status(m, "busy");
        self.shared.widgets.set_current(m);
        let c = &m.content;
        let code = c.get("code").and_then(Value::as_str).unwrap_or_default().to_string();
        let silent = c.get("silent").and_then(Value::as_bool).unwrap_or(false);
        let store_history = c.get("store_history").and_then(Value::as_bool).unwrap_or(true) && !silent;
        if store_history {
            self.count += 1;
        }
        if !silent {
            out.publish(Some(m), "execute_input", json!({"code": code, "execution_count": self.count}));
        }
        // An interrupt that arrived between cells must not hit this one.
        self.shared.interrupt.store(false, Ordering::SeqCst);
        let ctx = CellContext {
            shared: &self.shared,
            parent: m,
            silent,
            allow_stdin: c.get("allow_stdin").and_then(Value::as_bool).unwrap_or(false),
        };
        // Live results are tables: the newest ones are what this cell sees.
        self.live.sync(&mut self.catalog);
        let result = run_cell(&mut self.catalog, &mut self.rust, &mut self.live, &code, &ctx);
        let ok = result.is_ok();
        match result {
            Ok(bundle) => {
                if let Some(text) = bundle.as_ref().filter(|_| store_history).and_then(|b| b.get("text/plain")).and_then(Value::as_str) {
                    self.requests.outputs.lock().unwrap().insert(self.count, text.to_string());
                }
                if let Some(data) = bundle.filter(|_| !silent) {
                    out.publish(Some(m), "execute_result", json!({"execution_count": self.count, "data": data, "metadata": {}}));
                }
                out.shell_reply(m, "execute_reply", json!({"status": "ok", "execution_count": self.count, "payload": [], "user_expressions": {}}));
            }
            Err(e) => {
                self.failed_at = Some(chrono::Utc::now());
                out.publish(Some(m), "error", json!({"ename": e.ename, "evalue": e.evalue, "traceback": e.traceback}));
                out.shell_reply(
                    m,
                    "execute_reply",
                    json!({"status": "error", "execution_count": self.count, "ename": e.ename, "evalue": e.evalue, "traceback": e.traceback}),
                );
            }
        }
        if store_history {
            self.requests.history.lock().unwrap().push((self.count, code));
        }
        self.refresh_index();
        out.status(m, "idle");
        ok
    }

    /// Tables and columns for completion and inspection on the shell thread.
    fn refresh_index(&self) {
        let mut index = NameIndex::new();
        for name in self.catalog.names() {
            if let Some(df) = self.catalog.get(&name) {
                index.insert(name.clone(), df.columns().iter().map(|c| (c.name().to_string(), c.dtype().to_string())).collect());
            }
        }
        *self.requests.index.write().unwrap() = index;
    }
}

/// Splits a cell into leading line magics, and the rest: a cell magic with its body, or Rust.
fn run_cell(
    catalog: &mut query::Catalog,
    rust: &mut crate::rust::RustCells,
    live: &mut crate::live::Live,
    code: &str,
    ctx: &CellContext,
) -> Result<Option<Bundle>, CellError> {
    let trimmed = code.trim_start();
    if let Some(rest) = trimmed.strip_prefix("%%") {
        let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
        return cell_magic(catalog, live, line, body, ctx);
    }
    let mut result = None;
    let mut lines = code.lines().peekable();
    let mut consumed = 0;
    while let Some(line) = lines.peek() {
        let l = line.trim();
        if l.is_empty() {
            lines.next();
            consumed += 1;
            continue;
        }
        let Some(magic) = l.strip_prefix('%') else { break };
        result = line_magic(catalog, live, magic, ctx)?;
        lines.next();
        consumed += 1;
    }
    let rest: Vec<&str> = lines.collect();
    if rest.iter().all(|l| l.trim().is_empty()) {
        return Ok(result);
    }
    if result.is_some() {
        ctx.display(result.take().unwrap());
    }
    // Magic lines stay as blank lines, so compiler errors give the cell's own line numbers.
    rust.execute(&format!("{}{}", "\n".repeat(consumed), rest.join("\n")), ctx, catalog)
}

/// `--flag value` pairs and positional words of a magic line (values may be quoted).
struct Args {
    positional: Vec<String>,
    options: Vec<(String, String)>,
}

fn parse_args(magic: &str, line: &str, allowed: &[&str]) -> Result<Args, CellError> {
    let words = split_words(line).map_err(|e| CellError::new("UsageError", format!("%{magic}: {e}")))?;
    let mut args = Args { positional: Vec::new(), options: Vec::new() };
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        if w.starts_with("--") {
            if !allowed.contains(&w.as_str()) {
                let known = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
                return Err(CellError::new("UsageError", format!("%{magic}: unknown option {w} (options: {known})")));
            }
            let v = it.next().ok_or_else(|| CellError::new("UsageError", format!("%{magic}: {w} needs a value")))?;
            args.options.push((w, v));
        } else {
            args.positional.push(w);
        }
    }
    Ok(args)
}

impl Args {
    fn opt(&self, name: &str) -> Option<&str> {
        self.options.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut has = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                has = true;
            }
            (None, c) if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if has || !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

fn usage(m: &str, msg: impl Into<String>) -> CellError {
    let usage = magics::find(m).map(|x| x.usage).unwrap_or_default();
    CellError::new("UsageError", format!("{}\nusage: {usage}", msg.into()))
}

fn unknown_magic(name: &str, cell: bool) -> CellError {
    let known: Vec<String> = magics::MAGICS.iter().map(|m| m.spelled()).collect();
    let spelled = format!("{}{name}", if cell { "%%" } else { "%" });
    CellError::new("UsageError", format!("unknown magic {spelled}; the magics are {} (see %help)", known.join(", ")))
}

fn line_magic(catalog: &mut query::Catalog, live: &mut crate::live::Live, line: &str, ctx: &CellContext) -> Result<Option<Bundle>, CellError> {
    let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    if let Some(base) = name.strip_suffix('?') {
        let m = magics::find(base.trim_start_matches('%')).ok_or_else(|| unknown_magic(base, false))?;
        return Ok(Some(json!({"text/plain": m.help_text()})));
    }
    match name {
        "help" => {
            let text = match rest.trim() {
                "" => magics::overview(),
                m => magics::find(m.trim_start_matches('%')).ok_or_else(|| unknown_magic(m, false))?.help_text(),
            };
            Ok(Some(json!({"text/plain": text})))
        }
        "tables" => {
            parse_args("tables", rest, &[])?;
            let infos = catalog.list();
            if infos.is_empty() {
                return Ok(Some(json!({"text/plain": "no tables yet: %load run NAME SOURCE, %load NAME FILE, or %%sql --name NAME"})));
            }
            let names: Vec<String> = infos.iter().map(|t| t.name.clone()).collect();
            let rows: Vec<u64> = infos.iter().map(|t| t.rows as u64).collect();
            let cols: Vec<u64> = infos.iter().map(|t| t.columns as u64).collect();
            let df = polars::df!("table" => names, "rows" => rows, "columns" => cols).map_err(|e| CellError::new("PolarsError", e.to_string()))?;
            Ok(Some(display::table_bundle(None, &df, usize::MAX)))
        }
        "load" => {
            let args = parse_args("load", rest, &["--columns"])?;
            let positional = args.positional.iter().map(|a| expand_env(a)).collect::<Result<Vec<_>, _>>()?;
            let info = match positional.as_slice() {
                [kind, name, source] if kind == "run" => {
                    let columns = args.opt("--columns").map(|c| c.split(',').map(|s| s.trim().to_string()).collect());
                    let opts = query::LoadOptions { columns, ..Default::default() };
                    interruptible(ctx, "loading the run", {
                        let mut cat = catalog.clone();
                        let (name, source) = (name.clone(), source.clone());
                        move || cat.load_run(&name, &source, opts).map(|info| (cat, info))
                    })?
                }
                [name, file] => interruptible(ctx, "loading the file", {
                    let mut cat = catalog.clone();
                    let (name, file) = (name.clone(), file.clone());
                    move || cat.load_file(&name, std::path::Path::new(&file)).map(|info| (cat, info))
                })?,
                _ => return Err(usage("load", "%load takes `run NAME SOURCE` or `NAME FILE`")),
            };
            let (cat, info) = info;
            *catalog = cat;
            if let Some(df) = catalog.get(&info.name) {
                ctx.display(display::table_bundle(Some(&info.name), &df, display::DEFAULT_ROWS));
            }
            Ok(None)
        }
        "save" => {
            let args = parse_args("save", rest, &[])?;
            let [name, file] = args.positional.as_slice() else {
                return Err(usage("save", "%save takes a table name and a file"));
            };
            catalog.save(name, std::path::Path::new(file))?;
            let rows = catalog.get(name).map(|d| d.height()).unwrap_or(0);
            Ok(Some(json!({"text/plain": format!("saved {name} ({rows} rows) to {file}")})))
        }
        "describe" => {
            let args = parse_args("describe", rest, &[])?;
            let [name] = args.positional.as_slice() else {
                return Err(usage("describe", "%describe takes a table name"));
            };
            let df = catalog.get(name).ok_or_else(|| unknown_table(catalog, name))?;
            let summary = describe(&df).map_err(|e| CellError::new("PolarsError", e.to_string()))?;
            Ok(Some(display::table_bundle(Some(&format!("{name}: {} rows", df.height())), &summary, usize::MAX)))
        }
        "drop" => {
            let args = parse_args("drop", rest, &[])?;
            let [name] = args.positional.as_slice() else {
                return Err(usage("drop", "%drop takes a table name"));
            };
            catalog.remove(name).ok_or_else(|| unknown_table(catalog, name))?;
            Ok(None)
        }
        "sql" => Err(CellError::new("UsageError", "%%sql is a cell magic: put the query on the lines below `%%sql`")),
        "source" => {
            let args = parse_args("source", rest, &["--calib-dir"])?;
            let [source] = args.positional.as_slice() else {
                return Err(usage("source", "%source takes one psana source string"));
            };
            let source = expand_env(source)?;
            let calib = args.opt("--calib-dir").map(expand_env).transpose()?;
            let text = live.set_source(&source, calib)?;
            Ok(Some(json!({"text/plain": text})))
        }
        "live" => {
            let args = parse_args("live", rest, &["--timeout"])?;
            let mut words = args.positional.clone();
            if let Some(t) = args.opt("--timeout") {
                words.extend(["--timeout".to_string(), t.to_string()]);
            }
            Ok(Some(live.command(&words, catalog)?))
        }
        other => Err(unknown_magic(other, false)),
    }
}

/// Expands `$VAR`, `${VAR}` and `${VAR:-default}` (as a shell would), so that a notebook can
/// name where its data is without naming a machine's paths (the demo sets BEAMTIME_DEMO_DIR).
pub fn expand_env(text: &str) -> Result<String, CellError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, default, used) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| CellError::new("UsageError", format!("unclosed ${{ in {text}")))?;
            let body = &inner[..end];
            match body.split_once(":-") {
                Some((n, d)) => (n, Some(d), end + 2),
                None => (body, None, end + 2),
            }
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], None, end)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(CellError::new(
                    "UsageError",
                    format!("${name} is not set in the kernel's environment (`make demo` sets the demo's variables; or write the value itself)"),
                ))
            }
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

fn unknown_table(catalog: &query::Catalog, name: &str) -> CellError {
    let names = catalog.names();
    let list = if names.is_empty() { "there are no tables yet".to_string() } else { format!("tables: {}", names.join(", ")) };
    CellError::new("KeyError", format!("no table named '{name}' ({list})"))
}

fn cell_magic(catalog: &mut query::Catalog, live: &mut crate::live::Live, line: &str, body: &str, ctx: &CellContext) -> Result<Option<Bundle>, CellError> {
    let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    if let Some(base) = name.trim().strip_suffix('?') {
        let m = magics::find(base).ok_or_else(|| unknown_magic(base, true))?;
        return Ok(Some(json!({"text/plain": m.help_text()})));
    }
    match name.trim() {
        "live" => {
            let args = parse_args("live", rest, &["--ranks", "--rate", "--mode", "--window", "--launcher", "--view"])?;
            let (view, names) = view_options("live", &args)?;
            let [qname] = names.as_slice() else {
                return Err(usage("live", "%%live takes a name for the result (a table name), then options"));
            };
            if body.trim().is_empty() {
                return Err(usage("live", "%%live needs a query on the lines below it"));
            }
            let num = |o: &str| -> Result<Option<f64>, CellError> {
                args.opt(o).map(|v| v.parse::<f64>().map_err(|_| usage("live", format!("{o} {v}: a number expected")))).transpose()
            };
            let opts = crate::live::LiveOptions {
                ranks: num("--ranks")?.map(|r| r.max(1.0) as usize),
                rate: num("--rate")?,
                mode: args.opt("--window").or(args.opt("--mode")).map(str::to_string),
                launcher: args.opt("--launcher").map(str::to_string),
                view,
            };
            live.start_query(qname, body.trim(), &opts, ctx.parent, &|| ctx.interrupted())?;
            live.sync(catalog);
            Ok(None)
        }
        "sql" => {
            let args = parse_args("sql", rest, &["--name", "--rows", "--view"])?;
            let (view, extra) = view_options("sql", &args)?;
            if let Some(a) = extra.first() {
                return Err(usage("sql", format!("unexpected `{a}` (options: --name T, --rows N, --view KIND, x=COL, y=COL)")));
            }
            let rows = match args.opt("--rows") {
                Some(r) => r.parse::<usize>().map_err(|_| usage("sql", format!("--rows {r}: a number of rows expected")))?,
                None => display::DEFAULT_ROWS,
            };
            if body.trim().is_empty() {
                return Err(usage("sql", "%%sql needs a query on the lines below it"));
            }
            let df = interruptible(ctx, "the query", {
                let cat = catalog.clone();
                let q = body.to_string();
                move || cat.sql(&q)
            })?;
            let title = args.opt("--name").map(str::to_string);
            if let Some(n) = &title {
                catalog.insert(n, df.clone())?;
            }
            let mut bundle = display::table_bundle(title.as_deref(), &df, rows);
            // `--view KIND`: the result as a widget (a plot, or the sortable table), with the
            // static table beside it for viewers without widgets.
            if let Some(kind) = view.kind.as_deref().filter(|k| *k != "html") {
                let id = crate::live::open_result_widget(&ctx.shared.widgets, ctx.parent, title.as_deref().unwrap_or("sql"), &df, &view);
                bundle["application/vnd.jupyter.widget-view+json"] = crate::widgets::Widgets::view(&id);
                let y = view.y.as_ref().and_then(|y| y.first()).map(String::as_str);
                if let Some(svg) = display::svg_plot(&df, kind, view.x.as_deref(), y) {
                    bundle["text/html"] = json!(format!("{svg}{}", bundle["text/html"].as_str().unwrap_or("")));
                }
            }
            Ok(Some(bundle))
        }
        other => Err(unknown_magic(other, true)),
    }
}

/// `--view KIND`, `x=COL` and `y=COL[,COL]` (how a result is shown); returns them and the other
/// positional words.
fn view_options(magic: &str, args: &Args) -> Result<(crate::live::ViewOptions, Vec<String>), CellError> {
    let mut view = crate::live::ViewOptions { kind: args.opt("--view").map(str::to_string), ..Default::default() };
    if let Some(k) = &view.kind {
        if !crate::live::VIEW_KINDS.contains(&k.as_str()) {
            return Err(usage(magic, format!("--view {k}: one of {}", crate::live::VIEW_KINDS.join(", "))));
        }
    }
    let mut rest = Vec::new();
    for a in &args.positional {
        match a.split_once('=') {
            Some(("x", v)) if !v.is_empty() => view.x = Some(v.to_string()),
            Some(("y", v)) if !v.is_empty() => view.y = Some(v.split(',').map(str::to_string).collect()),
            Some(_) => return Err(usage(magic, format!("{a}: expected x=COLUMN or y=COLUMN[,COLUMN]"))),
            None => rest.push(a.clone()),
        }
    }
    Ok((view, rest))
}

/// Runs `f` on a worker thread, returning early with KeyboardInterrupt on interrupt (the work
/// is abandoned: polars has no cancellation, and the kernel must stay responsive).
fn interruptible<T: Send + 'static>(
    ctx: &CellContext,
    what: &str,
    f: impl FnOnce() -> Result<T, query::QueryError> + Send + 'static,
) -> Result<T, CellError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("beamtime-query".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| CellError::new("OSError", format!("cannot start a worker thread: {e}")))?;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(r) => return r.map_err(CellError::from),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if ctx.interrupted() => return Err(CellError::interrupted(what)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(CellError::new("InternalError", format!("{what} failed without an answer (worker thread panicked)")));
            }
        }
    }
}

/// One row per column: type, nulls, min, max.
fn describe(df: &DataFrame) -> polars::prelude::PolarsResult<DataFrame> {
    use polars::prelude::*;
    let mut names = Vec::new();
    let mut types = Vec::new();
    let mut nulls = Vec::new();
    let mut mins = Vec::new();
    let mut maxs = Vec::new();
    for c in df.columns() {
        names.push(c.name().to_string());
        types.push(c.dtype().to_string());
        nulls.push(c.null_count() as u64);
        let s = c.as_materialized_series();
        let numeric = s.dtype().is_primitive_numeric();
        mins.push(if numeric { s.min_reduce().map(|v| v.value().to_string()).unwrap_or_default() } else { String::new() });
        maxs.push(if numeric { s.max_reduce().map(|v| v.value().to_string()).unwrap_or_default() } else { String::new() });
    }
    df!("column" => names, "type" => types, "nulls" => nulls, "min" => mins, "max" => maxs)
}

#[cfg(test)]
mod tests {
    use super::expand_env;

    #[test]
    fn environment_variables_expand_like_a_shell() {
        // SAFETY: this test's own variable names; no other thread reads them.
        unsafe { std::env::set_var("BT_TEST_DIR", "/data/run") };
        assert_eq!(expand_env("exp=x:run=1:dir=${BT_TEST_DIR}/ffb:live").unwrap(), "exp=x:run=1:dir=/data/run/ffb:live");
        assert_eq!(expand_env("dir=$BT_TEST_DIR:live").unwrap(), "dir=/data/run:live");
        assert_eq!(expand_env("shmem=${BT_TEST_UNSET:-demo}.0").unwrap(), "shmem=demo.0");
        assert_eq!(expand_env("cost $ 5").unwrap(), "cost $ 5");
        let e = expand_env("dir=$BT_TEST_UNSET/x").unwrap_err();
        assert!(e.evalue.contains("$BT_TEST_UNSET is not set"), "{}", e.evalue);
        assert!(expand_env("${BT_TEST_DIR").is_err());
    }
}
