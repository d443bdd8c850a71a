//! Requests answered at once on the shell channel, also while a cell runs: kernel_info,
//! complete, inspect, is_complete, history, comm_info and frontend comm messages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{json, Value};

use crate::lock::{lock, read};
use crate::magics::{self, MAGICS};
use crate::publisher::Publisher;
use crate::rust::RustShared;
use crate::transport::{Message, PROTOCOL_VERSION};
use crate::widgets::Widgets;

/// The Rust version this kernel reports (the toolchain it was built with).
const RUST_VERSION: &str = env!("CARGO_PKG_RUST_VERSION");

/// Table name → column names, refreshed by the cell thread after every cell.
pub type NameIndex = BTreeMap<String, Vec<(String, String)>>;

pub struct Requests {
    publisher: Publisher,
    widgets: Arc<Widgets>,
    pub index: RwLock<NameIndex>,
    /// (execution count, input) of every stored execution.
    pub history: Mutex<Vec<(u32, String)>>,
    /// The `text/plain` result of stored executions that had one (history with `output`).
    pub outputs: Mutex<BTreeMap<u32, String>>,
    /// The evcxr context, for completing and inspecting Rust code.
    pub rust: RustShared,
}

impl Requests {
    pub fn new(publisher: Publisher, widgets: Arc<Widgets>) -> Self {
        Requests { publisher, widgets, index: RwLock::default(), history: Mutex::default(), outputs: Mutex::default(), rust: Default::default() }
    }

    pub fn kernel_info(&self) -> Value {
        json!({
            "status": "ok",
            "protocol_version": PROTOCOL_VERSION,
            "implementation": "beamtime",
            "implementation_version": env!("CARGO_PKG_VERSION"),
            "language_info": {
                "name": "rust",
                "version": RUST_VERSION,
                "mimetype": "text/rust",
                "file_extension": ".rs",
                "pygments_lexer": "rust",
                "codemirror_mode": "rust",
                "nbconvert_exporter": "rust",
            },
            "banner": format!("beamtime {} — live LCLS analysis. Magics: %help; everything else is Rust.", env!("CARGO_PKG_VERSION")),
            "help_links": [],
            "supported_features": [],
            "debugger": false,
        })
    }

    /// busy → reply → idle for one shell request that is not an execute.
    pub fn handle_shell(&self, m: &Message) {
        let out = &self.publisher;
        out.status(m, "busy");
        let c = &m.content;
        let reply = match m.msg_type() {
            "kernel_info_request" => Some(("kernel_info_reply", self.kernel_info())),
            "complete_request" => Some(("complete_reply", self.complete(str_of(c, "code"), usize_of(c, "cursor_pos")))),
            "inspect_request" => Some(("inspect_reply", self.inspect(str_of(c, "code"), usize_of(c, "cursor_pos")))),
            "is_complete_request" => Some(("is_complete_reply", is_complete(str_of(c, "code")))),
            "history_request" => Some(("history_reply", self.history_reply(c))),
            "comm_info_request" => Some(("comm_info_reply", self.comm_info(c.get("target_name").and_then(Value::as_str)))),
            "comm_open" | "comm_msg" | "comm_close" => {
                if !self.widgets.handle(m) && m.msg_type() == "comm_open" {
                    // Only widget models and the widget control comm are served here.
                    let id = str_of(c, "comm_id").to_string();
                    eprintln!("beamtime kernel: closing comm {id} for unknown target '{}'", str_of(c, "target_name"));
                    out.publish(Some(m), "comm_close", json!({"comm_id": id, "data": {}}));
                }
                None
            }
            other => {
                eprintln!("beamtime kernel: ignored shell message {other}");
                None
            }
        };
        if let Some((t, content)) = reply {
            out.shell_reply(m, t, content);
        }
        out.status(m, "idle");
    }

    fn comm_info(&self, target: Option<&str>) -> Value {
        json!({"status": "ok", "comms": self.widgets.comm_info(target)})
    }

    fn history_reply(&self, c: &Value) -> Value {
        let hist = lock(&self.history);
        let outputs = lock(&self.outputs);
        let with_output = c.get("output").and_then(Value::as_bool).unwrap_or(false);
        // With `output`, each entry is [session, line, [input, output or null]] (as ipykernel).
        let entry = |(n, code): &(u32, String)| {
            if with_output { json!([1, n, [code, outputs.get(n)]]) } else { json!([1, n, code]) }
        };
        let items: Vec<Value> = match c.get("hist_access_type").and_then(Value::as_str).unwrap_or("tail") {
            "range" => {
                let start = c.get("start").and_then(Value::as_u64).unwrap_or(0) as u32;
                let stop = c.get("stop").and_then(Value::as_u64).map(|s| s as u32).unwrap_or(u32::MAX);
                hist.iter().filter(|(n, _)| *n >= start && *n < stop).map(entry).collect()
            }
            "search" => {
                let pattern = c.get("pattern").and_then(Value::as_str).unwrap_or("*");
                let n = c.get("n").and_then(Value::as_u64).map(|n| n as usize).unwrap_or(usize::MAX);
                let unique = c.get("unique").and_then(Value::as_bool).unwrap_or(false);
                let mut seen = std::collections::HashSet::new();
                // `unique` keeps the latest entry of each input.
                let mut hits: Vec<&(u32, String)> =
                    hist.iter().rev().filter(|(_, code)| glob_match(pattern, code) && (!unique || seen.insert(code.as_str()))).collect();
                hits.reverse();
                let found: Vec<Value> = hits.into_iter().map(entry).collect();
                found[found.len().saturating_sub(n)..].to_vec()
            }
            _ => {
                let n = c.get("n").and_then(Value::as_u64).map(|n| n as usize).unwrap_or(10);
                hist[hist.len().saturating_sub(n)..].iter().map(entry).collect()
            }
        };
        json!({"status": "ok", "history": items})
    }

    /// Magic names and options, table and column names; positions in code points.
    pub fn complete(&self, code: &str, cursor: usize) -> Value {
        // Rust code goes to evcxr (empty when it is busy); magic lines are completed here.
        if let Some(reply) = self.rust.complete(code, cursor) {
            return reply;
        }
        let (start, end, token) = token_at(code, cursor);
        let before: Vec<char> = code.chars().take(start).collect();
        let line_start = before.iter().rposition(|c| *c == '\n').map_or(0, |i| i + 1);
        let at_line_start = before[line_start..].iter().all(|c| c.is_whitespace());
        let mut matches: Vec<String> = Vec::new();
        if token.starts_with('%') && at_line_start {
            matches.extend(MAGICS.iter().map(|m| m.spelled()).filter(|s| s.starts_with(&token)));
            // `%sq` should offer `%%sql` too.
            let cell_magics: Vec<String> =
                MAGICS.iter().filter(|m| m.cell).map(|m| m.spelled()).filter(|s| s[1..].starts_with(&token) && !matches.contains(s)).collect();
            matches.extend(cell_magics);
        } else if token.starts_with("--") {
            // The options of the magic on this line, from the magics table (what its parser accepts).
            if let Some((m, _)) = magic_at(&before[line_start..], code.chars().skip(start)) {
                matches.extend(m.options.iter().map(|o| o.name).filter(|o| o.starts_with(&token)).map(str::to_string));
            }
        } else if let Some((m, true)) = magic_at(&before[line_start..], code.chars().skip(start)).filter(|(m, _)| !m.words.is_empty()) {
            // Its first argument is one of its words (`%live status`…).
            matches.extend(m.words.iter().filter(|w| w.starts_with(&token)).map(|w| w.to_string()));
        } else if code.trim_start().starts_with('%') {
            let index = read(&self.index);
            matches.extend(index.keys().filter(|t| t.starts_with(&token)).cloned());
            for cols in index.values() {
                for (c, _) in cols {
                    if c.starts_with(&token) && !matches.contains(c) {
                        matches.push(c.clone());
                    }
                }
            }
        }
        json!({"status": "ok", "matches": matches, "cursor_start": start, "cursor_end": end, "metadata": {}})
    }

    pub fn inspect(&self, code: &str, cursor: usize) -> Value {
        if let Some(reply) = self.rust.inspect(code, cursor) {
            return reply;
        }
        // The whole word under the cursor, not only its part before the cursor.
        let (start, end, _) = token_at(code, cursor);
        let token: String = code.chars().skip(start).take(end - start).collect();
        let word = token.trim_start_matches('%').trim_end_matches('?');
        let text = if let Some(help) = magics::help_text(word) {
            Some(help)
        } else {
            let index = read(&self.index);
            if let Some(cols) = index.get(word) {
                let mut s = format!("table {word}: {} columns\n", cols.len());
                for (c, t) in cols {
                    s.push_str(&format!("  {c}: {t}\n"));
                }
                Some(s)
            } else {
                index
                    .iter()
                    .flat_map(|(t, cols)| cols.iter().filter(|(c, _)| c == word).map(move |(c, ty)| format!("{c}: {ty} (column of table {t})")))
                    .next()
            }
        };
        match text {
            Some(t) => json!({"status": "ok", "found": true, "data": {"text/plain": t}, "metadata": {}}),
            None => json!({"status": "ok", "found": false, "data": {}, "metadata": {}}),
        }
    }
}

/// The magic of a line (`before` the token, and the rest of the code from the token on), and
/// whether the token is its first argument.
fn magic_at(before: &[char], after: impl Iterator<Item = char>) -> Option<(&'static magics::syntax::Magic, bool)> {
    let line: String = before.iter().copied().chain(after.take_while(|c| *c != '\n')).collect();
    let t = line.trim_start();
    let (cell, rest) = match t.strip_prefix("%%") {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('%')?),
    };
    let name = rest.split_whitespace().next()?;
    let words_before = before.iter().collect::<String>().split_whitespace().count();
    Some((magics::find(name, cell)?, words_before == 1))
}

fn str_of<'a>(c: &'a Value, k: &str) -> &'a str {
    c.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn usize_of(c: &Value, k: &str) -> usize {
    c.get(k).and_then(Value::as_u64).unwrap_or(0) as usize
}

fn is_token_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '%' | '-' | '?')
}

/// The token around a code-point cursor: (start, end) in code points, and its text up to the cursor.
pub fn token_at(code: &str, cursor: usize) -> (usize, usize, String) {
    let chars: Vec<char> = code.chars().collect();
    let cursor = cursor.min(chars.len());
    let mut start = cursor;
    while start > 0 && is_token_char(chars[start - 1]) {
        start -= 1;
    }
    let mut end = cursor;
    while end < chars.len() && is_token_char(chars[end]) {
        end += 1;
    }
    (start, end, chars[start..cursor].iter().collect())
}

fn glob_match(pattern: &str, text: &str) -> bool {
    // `*` matches any run; no other wildcards (what frontends send).
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = text;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            if !rest.starts_with(p) {
                return false;
            }
            rest = &rest[p.len()..];
        } else if let Some(at) = rest.find(p) {
            rest = &rest[at + p.len()..];
        } else {
            return false;
        }
    }
    parts.last().is_some_and(|p| p.is_empty()) || rest.is_empty()
}

/// Whether a cell can run as typed (consoles ask before sending Enter).
pub fn is_complete(code: &str) -> Value {
    let body = if code.starts_with("%%") { code.split_once('\n').map_or("", |(_, b)| b) } else if code.trim_start().starts_with('%') { "" } else { code };
    let mut depth: i64 = 0;
    let mut chars = body.chars().peekable();
    let mut in_str: Option<char> = None;
    while let Some(c) = chars.next() {
        match (in_str, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => in_str = None,
            (Some(_), _) => {}
            (None, '"') => in_str = Some('"'),
            (None, '\'') if code.starts_with("%%") => in_str = Some('\''),
            (None, '/') if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            _ => {}
        }
    }
    if depth < 0 {
        json!({"status": "invalid"})
    } else if depth > 0 || in_str.is_some() {
        json!({"status": "incomplete", "indent": "    "})
    } else {
        json!({"status": "complete"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_count_code_points() {
        assert_eq!(token_at("é %tab", 6), (2, 6, "%tab".to_string()));
        assert_eq!(token_at("SELECT ipm2.raw.s FROM", 17), (7, 17, "ipm2.raw.s".to_string()));
    }

    #[test]
    fn completeness() {
        assert_eq!(is_complete("let x = 1;")["status"], "complete");
        assert_eq!(is_complete("fn f() {")["status"], "incomplete");
        assert_eq!(is_complete("let s = \"{\";")["status"], "complete");
        assert_eq!(is_complete("}")["status"], "invalid");
        assert_eq!(is_complete("%%sql\nSELECT (1")["status"], "incomplete");
        assert_eq!(is_complete("%tables")["status"], "complete");
    }

    #[test]
    fn glob() {
        assert!(glob_match("*sql*", "%%sql\nSELECT 1"));
        assert!(!glob_match("%load*", "%save x y"));
        assert!(glob_match("*", "anything"));
    }
}
