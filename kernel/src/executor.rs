//! Executing cells, one at a time, on their own thread (spec §4): leading magic lines, then a
//! cell magic or Rust. Every cell: busy → execute_input → outputs → result → reply → idle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cell::{Bundle, CellContext, CellError, CellRequest};
use crate::live::LiveQueries;
use crate::lock::{lock, write};
use crate::magics::{self, syntax::Session};
use crate::publisher::Publisher;
use crate::requests::{NameIndex, Requests};
use crate::rust::RustCells;
use crate::transport::Message;
use crate::widgets::Widgets;

/// How long after a failed cell a request sent before the failure may still arrive and be
/// aborted (a client whose clock is behind the kernel's cannot lose cells for longer).
const ABORT_WINDOW: Duration = Duration::from_secs(2);

/// A cell that failed with `stop_on_error`: requests sent before it failed are aborted.
struct Failure {
    /// When the error was made (kernel clock; requests carry the client's send time).
    at: chrono::DateTime<chrono::Utc>,
    seen: Instant,
}

pub struct Executor {
    publisher: Publisher,
    interrupt: Arc<AtomicBool>,
    widgets: Arc<Widgets>,
    requests: Arc<Requests>,
    catalog: query::Catalog,
    count: u32,
    rust: RustCells,
    live: LiveQueries,
    failure: Option<Failure>,
}

impl Executor {
    pub fn new(publisher: Publisher, interrupt: Arc<AtomicBool>, widgets: Arc<Widgets>, requests: Arc<Requests>) -> Self {
        let rust = RustCells::new(requests.rust.clone());
        // evcxr starts now, in the background: the first Rust cell is then as quick as a later one.
        rust.warm_up();
        let live = LiveQueries::new(publisher.clone(), widgets.clone());
        Executor { publisher, interrupt, widgets, requests, catalog: query::Catalog::new(), count: 0, rust, live, failure: None }
    }

    pub fn run(mut self, requests: Receiver<CellRequest>) {
        while let Ok(CellRequest(m)) = requests.recv() {
            // Like ipykernel: executes sent before a cell failed (with stop_on_error) are
            // aborted — by when they were sent, not by whether they had arrived yet when it
            // failed; one a client sent after the error runs.
            if self.failure.as_ref().is_some_and(|f| f.seen.elapsed() < ABORT_WINDOW && m.header.date <= f.at) {
                self.abort(&m);
                continue;
            }
            self.failure = None;
            let failed_at = self.execute(&m);
            let stop_on_error = m.content.get("stop_on_error").and_then(Value::as_bool).unwrap_or(true);
            if let (Some(at), true) = (failed_at, stop_on_error) {
                self.failure = Some(Failure { at, seen: Instant::now() });
            }
        }
    }

    fn abort(&self, m: &Message) {
        let out = &self.publisher;
        out.status(m, "busy");
        out.shell_reply(m, "execute_reply", json!({"status": "aborted", "execution_count": self.count}));
        out.status(m, "idle");
    }

    /// Runs one execute_request; when the cell failed, the time its error was made.
    fn execute(&mut self, m: &Message) -> Option<chrono::DateTime<chrono::Utc>> {
        let out = self.publisher.clone();
        out.status(m, "busy");
        self.widgets.set_current(m);
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
        self.interrupt.store(false, Ordering::SeqCst);
        let ctx = CellContext {
            publisher: &self.publisher,
            interrupt: &self.interrupt,
            parent: m,
            silent,
            allow_stdin: c.get("allow_stdin").and_then(Value::as_bool).unwrap_or(false),
        };
        // Live results are tables: the newest ones are what this cell sees.
        self.live.sync(&mut self.catalog);
        let mut session = Session { catalog: &mut self.catalog, live: &mut self.live, widgets: &self.widgets };
        let result = run_cell(&mut session, &mut self.rust, &code, &ctx);
        let mut failed_at = None;
        match result {
            Ok(bundle) => {
                if let Some(text) = bundle.as_ref().filter(|_| store_history).and_then(|b| b.get("text/plain")).and_then(Value::as_str) {
                    lock(&self.requests.outputs).insert(self.count, text.to_string());
                }
                if let Some(data) = bundle.filter(|_| !silent) {
                    out.publish(Some(m), "execute_result", json!({"execution_count": self.count, "data": data, "metadata": {}}));
                }
                out.shell_reply(m, "execute_reply", json!({"status": "ok", "execution_count": self.count, "payload": [], "user_expressions": {}}));
            }
            Err(e) => {
                failed_at = Some(chrono::Utc::now());
                out.publish(Some(m), "error", json!({"ename": e.ename, "evalue": e.evalue, "traceback": e.traceback}));
                out.shell_reply(
                    m,
                    "execute_reply",
                    json!({"status": "error", "execution_count": self.count, "ename": e.ename, "evalue": e.evalue, "traceback": e.traceback}),
                );
            }
        }
        if store_history {
            lock(&self.requests.history).push((self.count, code));
        }
        self.refresh_index();
        out.status(m, "idle");
        failed_at
    }

    /// Tables and columns for completion and inspection on the shell thread.
    fn refresh_index(&self) {
        let mut index = NameIndex::new();
        for name in self.catalog.names() {
            if let Some(df) = self.catalog.get(&name) {
                index.insert(name.clone(), df.columns().iter().map(|c| (c.name().to_string(), c.dtype().to_string())).collect());
            }
        }
        *write(&self.requests.index) = index;
    }
}

/// Splits a cell into leading line magics, and the rest: a cell magic with its body, or Rust.
fn run_cell(session: &mut Session, rust: &mut RustCells, code: &str, ctx: &CellContext) -> Result<Option<Bundle>, CellError> {
    let trimmed = code.trim_start();
    if let Some(rest) = trimmed.strip_prefix("%%") {
        let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
        return magics::run(line, body, true, session, ctx);
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
        result = magics::run(magic, "", false, session, ctx)?;
        lines.next();
        consumed += 1;
    }
    let rest: Vec<&str> = lines.collect();
    if rest.iter().all(|l| l.trim().is_empty()) {
        return Ok(result);
    }
    if let Some(shown) = result.take() {
        ctx.display(shown);
    }
    // Magic lines stay as blank lines, so compiler errors give the cell's own line numbers.
    rust.execute(&format!("{}{}", "\n".repeat(consumed), rest.join("\n")), ctx, session.catalog)
}
