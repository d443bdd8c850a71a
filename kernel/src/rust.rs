//! Rust cells, evaluated by evcxr used as a library (spec §8).
//!
//! - The evcxr context is created on the first Rust cell, on the cell thread (kernel start and
//!   `kernel_info_reply` stay fast), and shared with the shell thread for completions behind a
//!   mutex the shell thread only ever `try_lock`s.
//! - evcxr's stdout/stderr receivers are read on their own threads into a sink that
//!   publishes coalesced `stream` messages (at most every 200 ms, and before the reply).
//! - Compile errors become one `error` whose traceback shows the offending span; a panic of the
//!   cell becomes an `error` too; a dead runtime process is reported with the variables lost.
//! - Interrupt: a watcher thread stops the build (cargo/rustc) if one runs, keeping the
//!   session's variables; otherwise it kills evcxr's runtime process, which evcxr restarts
//!   with every variable lost (evcxr has no other way to stop running code), and says so.
//! - Without a toolchain (no `cargo` on PATH) Rust cells give one clear error; magics work.
//! - Tables: [`crate::bridge`] serves the kernel's tables to the `beamtime` prelude crate,
//!   which the kernel adds to every session as a path dependency (source embedded here).

use std::path::PathBuf;

use serde_json::Value;

use crate::cells::{Bundle, CellContext, CellError};

/// Runs evcxr's runtime child or rustc wrapper when this process is one; call first in `main`.
pub fn runtime_hook() {
    #[cfg(feature = "rust-cells")]
    evcxr::runtime_hook();
}

/// The prelude crate's sources, written out for evcxr on first use.
const PRELUDE_MANIFEST: &str = include_str!("../../prelude/Cargo.toml");
const PRELUDE_LIB: &str = include_str!("../../prelude/src/lib.rs");

/// Where `cargo` would be found for Rust cells: PATH, then next to this executable (as evcxr
/// looks). `None` when there is no toolchain.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let in_dir = |d: &std::path::Path| {
        let p = d.join(name);
        is_executable(&p).then_some(p)
    };
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(p) = std::env::split_paths(&path).find_map(|d| in_dir(&d)) {
            return Some(p);
        }
    }
    std::env::current_exe().ok().and_then(|e| e.parent().and_then(in_dir))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg_attr(not(feature = "rust-cells"), allow(dead_code))]
fn no_toolchain() -> CellError {
    let path = std::env::var("PATH").unwrap_or_default();
    CellError::new(
        "RustUnavailable",
        format!(
            "Rust cells need a Rust toolchain, and `cargo` is not on this kernel's PATH ({path}). \
             Install one (https://rustup.rs, plus `rustup component add rust-src`), make sure the \
             Jupyter server's environment has it on PATH, and restart the kernel. Magics work \
             without it: %help lists them."
        ),
    )
}

/// Writes the embedded prelude crate to a cache directory (once per version); its path.
pub fn prelude_dir() -> std::io::Result<PathBuf> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in PRELUDE_MANIFEST.bytes().chain(PRELUDE_LIB.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join("beamtime").join(format!("prelude-{h:016x}"));
    for (rel, text) in [("Cargo.toml", PRELUDE_MANIFEST), ("src/lib.rs", PRELUDE_LIB)] {
        let p = dir.join(rel);
        if std::fs::read_to_string(&p).ok().as_deref() == Some(text) {
            continue;
        }
        std::fs::create_dir_all(p.parent().unwrap())?;
        // Write then rename: kernels starting together never see half a file.
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &p)?;
    }
    Ok(dir)
}

/// The evcxr dependency line for the prelude: `beamtime` with the given extra TOML keys.
fn prelude_dep(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let extra = extra.trim().trim_start_matches(',').trim();
    if extra.is_empty() {
        format!(":dep beamtime = {{ path = \"{path}\", package = \"beamtime-prelude\" }}")
    } else {
        format!(":dep beamtime = {{ path = \"{path}\", package = \"beamtime-prelude\", {extra} }}")
    }
}

/// `:dep beamtime` lines name the embedded prelude: `:dep beamtime = { features = ["polars"] }`
/// gets its path filled in. Other lines are unchanged (line numbers are kept).
pub fn rewrite_prelude_deps(code: &str, dir: &std::path::Path) -> String {
    let mut out = Vec::new();
    for line in code.split('\n') {
        let t = line.trim();
        let rest = t.strip_prefix(":dep").filter(|r| r.starts_with(char::is_whitespace)).map(str::trim_start);
        let rewritten = rest.and_then(|r| r.strip_prefix("beamtime")).and_then(|r| {
            let r = r.trim();
            if r.is_empty() {
                return Some(prelude_dep(dir, ""));
            }
            let table = r.strip_prefix('=')?.trim();
            let inner = table.strip_prefix('{')?.strip_suffix('}')?;
            // An explicit source is the user's choice.
            if ["path", "git", "version", "package"].iter().any(|k| inner.split(',').any(|kv| kv.trim_start().starts_with(k))) {
                return None;
            }
            Some(prelude_dep(dir, inner))
        });
        out.push(rewritten.unwrap_or_else(|| line.to_string()));
    }
    out.join("\n")
}

/// Whether a cell asks for the prelude's `polars` feature (`:dep beamtime = { … "polars" … }`).
pub fn wants_polars_prelude(code: &str) -> bool {
    code.lines().any(|l| {
        let t = l.trim_start();
        t.strip_prefix(":dep").is_some_and(|r| r.trim_start().starts_with("beamtime")) && t.contains("\"polars\"")
    })
}

/// Code point offset → byte offset (clamped to the end).
pub fn byte_offset(code: &str, cp: usize) -> usize {
    code.char_indices().nth(cp).map_or(code.len(), |(b, _)| b)
}

/// Byte offset → code point offset (a position inside a character counts as its start).
pub fn cp_offset(code: &str, byte: usize) -> usize {
    let mut b = byte.min(code.len());
    while !code.is_char_boundary(b) {
        b -= 1;
    }
    code[..b].chars().count()
}

/// The Rust part of a cell for analysis: leading magic lines become spaces, so that byte
/// offsets are unchanged. `None` for a cell magic (`%%…`) or when the cursor is on a magic line.
pub fn rust_source_for_analysis(code: &str, cursor_byte: usize) -> Option<String> {
    if code.trim_start().starts_with("%%") {
        return None;
    }
    let mut out = String::with_capacity(code.len());
    let mut in_magics = true;
    let mut pos = 0;
    for line in code.split_inclusive('\n') {
        let t = line.trim();
        if in_magics && t.starts_with('%') {
            if cursor_byte >= pos && cursor_byte <= pos + line.trim_end_matches('\n').len() {
                return None;
            }
            // Keep byte lengths: a multi-byte character becomes as many spaces as it has bytes.
            for c in line.chars() {
                if c == '\n' {
                    out.push('\n');
                } else {
                    out.extend(std::iter::repeat_n(' ', c.len_utf8()));
                }
            }
        } else {
            if !t.is_empty() {
                in_magics = false;
            }
            out.push_str(line);
        }
        pos += line.len();
    }
    Some(out)
}

/// Renders one compiler diagnostic on the cell's own lines, rustc style.
pub struct Diagnostic<'a> {
    pub level: &'a str,
    pub code: Option<&'a str>,
    pub message: String,
    /// (start line, start column, end line, end column (exclusive), label, primary); 1-based,
    /// columns in characters.
    pub spans: Vec<(usize, usize, usize, usize, String, bool)>,
    pub notes: Vec<String>,
}

const RED: &str = "\x1b[1;31m";
const BLUE: &str = "\x1b[1;34m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

impl Diagnostic<'_> {
    pub fn render(&self, source: &str) -> Vec<String> {
        let lines: Vec<&str> = source.split('\n').collect();
        let mut out = Vec::new();
        let code = self.code.map(|c| format!("[{c}]")).unwrap_or_default();
        let level = if self.level.is_empty() { "error" } else { self.level };
        out.push(format!("{RED}{level}{code}{RESET}{BOLD}: {}{RESET}", self.message));
        let width = self.spans.iter().map(|s| s.2.to_string().len()).max().unwrap_or(1);
        let pad = " ".repeat(width);
        if let Some(first) = self.spans.iter().find(|s| s.5).or(self.spans.first()) {
            out.push(format!("{pad}{BLUE}-->{RESET} cell:{}:{}", first.0, first.1));
            out.push(format!("{pad} {BLUE}|{RESET}"));
        }
        let mut spans = self.spans.clone();
        spans.sort_by_key(|s| (s.0, s.1));
        let mut shown_line = 0;
        for (l0, c0, l1, c1, label, primary) in &spans {
            let colour = if *primary { RED } else { BLUE };
            let mark = if *primary { '^' } else { '-' };
            let last = (*l1).min(*l0 + 4);
            for l in *l0..=last {
                if l > shown_line {
                    let text = lines.get(l.wrapping_sub(1)).copied().unwrap_or("");
                    out.push(format!("{BLUE}{l:>width$} |{RESET} {text}"));
                    shown_line = l;
                }
            }
            if l1 > &last {
                out.push(format!("{pad} {BLUE}|{RESET} ..."));
            }
            // Carets under the span's first line (to its end when the span goes on).
            let text = lines.get(l0.wrapping_sub(1)).copied().unwrap_or("");
            let chars: Vec<char> = text.chars().collect();
            let start = c0.saturating_sub(1).min(chars.len());
            let end = if l1 == l0 { c1.saturating_sub(1).clamp(start + 1, chars.len().max(start + 1)) } else { chars.len().max(start + 1) };
            let lead: String = chars[..start].iter().map(|&c| if c == '\t' { '\t' } else { ' ' }).collect();
            let marks: String = std::iter::repeat_n(mark, end - start).collect();
            out.push(format!("{pad} {BLUE}|{RESET} {lead}{colour}{marks} {label}{RESET}"));
        }
        if !self.spans.is_empty() {
            out.push(format!("{pad} {BLUE}|{RESET}"));
        }
        for n in &self.notes {
            let mut it = n.lines();
            if let Some(first) = it.next() {
                out.push(format!("{pad} {BLUE}={RESET} {BOLD}{first}{RESET}"));
            }
            for more in it {
                out.push(format!("{pad}   {more}"));
            }
        }
        out
    }
}

/// A panic's message and backtrace, as scanned from the runtime's stderr.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct Panic {
    pub thread: String,
    pub message: Vec<String>,
    pub backtrace: Vec<String>,
}

/// Picks the default panic hook's output out of stderr lines.
#[derive(Default, Debug)]
pub struct PanicScan {
    state: ScanState,
    current: Option<Panic>,
    pub found: Vec<Panic>,
}

#[derive(Default, Debug, PartialEq)]
enum ScanState {
    #[default]
    Idle,
    Message,
    Backtrace,
}

impl PanicScan {
    /// Feeds one stderr line; false when the line belongs to a cell's panic (kept out of the
    /// stream: it is shown in the error instead).
    pub fn feed(&mut self, line: &str) -> bool {
        match self.state {
            ScanState::Idle => {
                let Some(thread) = panic_thread(line) else { return true };
                // The cell runs on the runtime's main thread; evcxr's cdylib sees it unnamed.
                if thread != "main" && thread != "<unnamed>" {
                    return true;
                }
                self.current = Some(Panic { thread, ..Default::default() });
                self.state = ScanState::Message;
                false
            }
            ScanState::Message => {
                if line.starts_with("note: run with `RUST_BACKTRACE") {
                    self.end();
                } else if line.trim_end() == "stack backtrace:" {
                    self.state = ScanState::Backtrace;
                } else if let Some(p) = &mut self.current {
                    p.message.push(line.to_string());
                }
                false
            }
            ScanState::Backtrace => {
                if line.starts_with("note: Some details are omitted") {
                    self.end();
                    false
                } else if line.starts_with(' ') {
                    if let Some(p) = &mut self.current {
                        p.backtrace.push(line.to_string());
                    }
                    false
                } else {
                    self.end();
                    self.feed(line)
                }
            }
        }
    }

    /// Inside a panic's output.
    pub fn busy(&self) -> bool {
        self.state != ScanState::Idle
    }

    fn end(&mut self) {
        self.state = ScanState::Idle;
        if let Some(p) = self.current.take() {
            self.found.push(p);
        }
    }

    /// Every panic seen since the last call (one still being printed included).
    pub fn take(&mut self) -> Vec<Panic> {
        self.end();
        std::mem::take(&mut self.found)
    }
}

/// `thread 'NAME' panicked at …` (also `thread 'NAME' (ID) panicked at …`) → NAME.
fn panic_thread(line: &str) -> Option<String> {
    let rest = line.strip_prefix("thread '")?;
    let (name, after) = rest.split_once('\'')?;
    after.contains(" panicked at ").then(|| name.to_string())
}

impl Panic {
    /// The error shown for a panicked cell; frames of std, evcxr's wrapper and the runtime are
    /// left out, and the cell's own code is called `<cell>`.
    pub fn to_error(&self) -> CellError {
        let message = self.message.join("\n");
        let message = if message.trim().is_empty() { "explicit panic".to_string() } else { message };
        let mut tb = vec![format!("{RED}panicked{RESET}: {message}")];
        let mut frames = Vec::new();
        let mut keep = false;
        for l in &self.backtrace {
            let t = l.trim_start();
            if let Some(loc) = t.strip_prefix("at ") {
                if keep && !loc.starts_with("/rustc/") {
                    frames.push(l.clone());
                }
                continue;
            }
            let Some((num, name)) = t.split_once(": ") else { continue };
            keep = !is_machinery_frame(name);
            if keep {
                let lead = &l[..l.len() - t.len()];
                frames.push(format!("{lead}{num}: {}", cell_frame_name(name)));
            }
        }
        if !frames.is_empty() {
            tb.push("backtrace:".into());
            tb.extend(frames);
        }
        tb.push("Variables the cell defined were not kept; earlier ones were (evcxr caught the panic).".into());
        CellError { ename: "Panic".into(), evalue: message, traceback: tb }
    }
}

/// Frames of std, of evcxr's generated wrapper and of the runtime process.
fn is_machinery_frame(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "std::", "core::", "alloc::", "<std::", "<core::", "<alloc::", "__rust", "rust_begin_unwind", "rust_panic",
        "<unknown>", "evcxr::", "kernel::", "main", "__libc", "_start",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || name.strip_prefix("run_user_code_").is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
}

/// `ctx::run_user_code_7::{{closure}}` (evcxr's function around the cell) → `<cell>`;
/// `ctx::f` (a function the session defined) → `f`.
fn cell_frame_name(name: &str) -> String {
    let Some(rest) = name.strip_prefix("ctx::") else { return name.to_string() };
    if let Some(r) = rest.strip_prefix("run_user_code_") {
        let tail = r.trim_start_matches(|c: char| c.is_ascii_digit());
        return format!("<cell>{}", tail.trim_start_matches("::{{closure}}"));
    }
    rest.to_string()
}

/// Turns evcxr's outputs into the `execute_result` bundle: JSON mimes parsed, `text/plain`
/// always present, `:timing` folded into the text.
pub fn bundle(mut by_mime: Vec<(String, String)>, timing: Option<std::time::Duration>) -> Option<Bundle> {
    if let Some(t) = timing {
        let note = format!("Took {}ms", t.as_millis());
        match by_mime.iter_mut().find(|(m, _)| m == "text/plain") {
            Some((_, text)) => {
                text.push('\n');
                text.push_str(&note);
            }
            None => by_mime.push(("text/plain".into(), note)),
        }
    }
    if by_mime.is_empty() {
        return None;
    }
    by_mime.sort();
    let mut data = serde_json::Map::new();
    for (mime, text) in &by_mime {
        let json_mime = mime.ends_with("/json") || mime.ends_with("+json");
        let value = if json_mime { serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())) } else { Value::String(text.clone()) };
        data.insert(mime.clone(), value);
    }
    if !data.contains_key("text/plain") {
        let first = &by_mime[0].0;
        data.insert("text/plain".into(), Value::String(format!("<{first} output>")));
    }
    Some(Value::Object(data))
}

#[cfg(feature = "rust-cells")]
pub use engine::{RustCells, RustShared};

#[cfg(not(feature = "rust-cells"))]
pub use stub::{RustCells, RustShared};

#[cfg(not(feature = "rust-cells"))]
mod stub {
    use super::*;

    /// Without evcxr there is no context to share.
    #[derive(Clone, Default)]
    pub struct RustShared {}

    impl RustShared {
        pub fn complete(&self, _code: &str, _cursor: usize) -> Option<Value> {
            None
        }
        pub fn inspect(&self, _code: &str, _cursor: usize) -> Option<Value> {
            None
        }
        pub fn shutdown(&self) {}
    }

    pub struct RustCells {}

    impl RustCells {
        pub fn new(_shared: RustShared) -> Self {
            RustCells {}
        }

        pub fn execute(&mut self, _code: &str, _ctx: &CellContext, _catalog: &mut query::Catalog) -> Result<Option<Bundle>, CellError> {
            Err(CellError::new("RustUnavailable", "this kernel was built without Rust cells (cargo feature `rust-cells`); magics work: %help lists them"))
        }
    }
}

#[cfg(feature = "rust-cells")]
mod engine {
    use std::process::Child;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;
    use crate::bridge::{TableServer, SOCKET_ENV};
    use crate::server::Outbox;
    use crate::transport::Message;

    /// evcxr's `:cache` size the kernel sets when the polars prelude is first requested.
    const POLARS_CACHE_MIB: u32 = 2048;
    /// Coalescing window for stream output (as ipykernel).
    const FLUSH_EVERY: Duration = Duration::from_millis(200);
    /// Stack of the threads that call into evcxr (and so rust-analyzer); only touched pages
    /// cost memory.
    const ANALYSIS_STACK: usize = 256 << 20;
    /// How long the shell thread waits for the context before answering empty.
    const SHELL_WAIT: Duration = Duration::from_millis(100);
    /// After an interrupt with no build running, how long before the runtime is killed when
    /// we cannot tell what it does.
    const KILL_RUNTIME_AFTER: Duration = Duration::from_millis(300);
    /// How long an interrupted cell may stay in evcxr's analysis (runtime idle, no build)
    /// before the runtime is killed anyway.
    const IDLE_RUNTIME_GRACE: Duration = Duration::from_secs(10);

    struct Engine {
        cmd: evcxr::CommandContext,
        process: Arc<Mutex<Child>>,
        tables: Option<TableServer>,
    }

    /// The evcxr context, shared by the cell thread and the shell thread.
    #[derive(Clone, Default)]
    pub struct RustShared {
        engine: Arc<Mutex<Option<Engine>>>,
        /// The runtime process handle (valid across evcxr's restarts), for shutdown.
        process: Arc<Mutex<Option<Arc<Mutex<Child>>>>>,
    }

    /// Runs `f` on a thread with a big stack (rust-analyzer recurses); `Err` if it panicked.
    fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, ()> {
        std::thread::scope(|s| {
            std::thread::Builder::new().name("beamtime-analysis".into()).stack_size(ANALYSIS_STACK).spawn_scoped(s, f).map_err(|_| ())?.join().map_err(|_| ())
        })
    }

    fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    impl RustShared {
        /// The context if it exists and is free within `wait`; `None` otherwise (never blocks
        /// longer).
        fn try_engine(&self, wait: Duration) -> Option<MutexGuard<'_, Option<Engine>>> {
            let t0 = Instant::now();
            loop {
                match self.engine.try_lock() {
                    Ok(g) => return g.is_some().then_some(g),
                    Err(TryLockError::Poisoned(p)) => {
                        let g = p.into_inner();
                        return g.is_some().then_some(g);
                    }
                    Err(TryLockError::WouldBlock) if t0.elapsed() >= wait => return None,
                    Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }

        /// A complete_reply for Rust code, or `None` (magic line, no context yet, busy).
        pub fn complete(&self, code: &str, cursor: usize) -> Option<Value> {
            let byte = byte_offset(code, cursor);
            let src = rust_source_for_analysis(code, byte)?;
            let mut guard = self.try_engine(SHELL_WAIT);
            let Some(engine) = guard.as_mut().and_then(|g| g.as_mut()) else {
                return Some(json!({"status": "ok", "matches": [], "cursor_start": cursor, "cursor_end": cursor, "metadata": {}}));
            };
            let found = on_big_stack(|| engine.cmd.completions(&src, byte));
            let Ok(Ok(c)) = found else {
                return Some(json!({"status": "ok", "matches": [], "cursor_start": cursor, "cursor_end": cursor, "metadata": {}}));
            };
            let (start, end) = (cp_offset(code, c.start_offset), cp_offset(code, c.end_offset));
            let mut matches = Vec::new();
            let mut types = Vec::new();
            for item in c.completions {
                if matches.contains(&item.code) {
                    continue;
                }
                types.push(json!({"text": item.code, "type": item.kind, "start": start, "end": end, "signature": item.label}));
                matches.push(item.code);
            }
            Some(json!({
                "status": "ok", "matches": matches, "cursor_start": start, "cursor_end": end,
                "metadata": {"_jupyter_types_experimental": types},
            }))
        }

        /// An inspect_reply for the Rust word under the cursor, or `None` as for `complete`.
        pub fn inspect(&self, code: &str, cursor: usize) -> Option<Value> {
            let byte = byte_offset(code, cursor);
            let src = rust_source_for_analysis(code, byte)?;
            // Hover looks at the expression ending at the position: the end of the word.
            let mut end = byte;
            while let Some(c) = src[end..].chars().next().filter(|c| c.is_alphanumeric() || *c == '_') {
                end += c.len_utf8();
            }
            let not_found = json!({"status": "ok", "found": false, "data": {}, "metadata": {}});
            let mut guard = self.try_engine(SHELL_WAIT);
            let Some(engine) = guard.as_mut().and_then(|g| g.as_mut()) else { return Some(not_found) };
            let found = on_big_stack(|| engine.cmd.hover_at(&src, end));
            match found {
                Ok(Ok((plain, html))) if !plain.trim().is_empty() && plain != "No documentation found" => {
                    Some(json!({"status": "ok", "found": true, "data": {"text/plain": plain, "text/html": html}, "metadata": {}}))
                }
                _ => Some(not_found),
            }
        }

        /// At kernel exit: stop cargo and the runtime process, and let evcxr remove its build
        /// directory.
        pub fn shutdown(&self) {
            kill_build_processes(None);
            if let Some(p) = relock(&self.process).as_ref() {
                let _ = relock(p).kill();
            }
            if let Some(mut g) = self.try_engine(Duration::from_secs(2)) {
                if let Some(engine) = g.take() {
                    let _ = relock(&engine.process).kill();
                    drop(engine);
                }
            }
        }
    }

    /// Where the current cell's output goes.
    struct Target {
        outbox: Outbox,
        parent: Message,
        silent: bool,
    }

    #[derive(Default)]
    struct SinkState {
        target: Option<Target>,
        pending: Vec<(&'static str, String)>,
        last_flush: Option<Instant>,
        last_stderr: Option<Instant>,
        panics: PanicScan,
        held_blank: bool,
        channels: Vec<(&'static str, crossbeam_channel::Receiver<String>)>,
    }

    impl SinkState {
        fn line(&mut self, name: &'static str, line: &str) {
            if name == "stderr" {
                self.last_stderr = Some(Instant::now());
                // The panic hook starts with an empty line: hold empty lines until we know.
                if line.is_empty() && !self.panics.busy() {
                    if self.held_blank {
                        self.push(name, "");
                    }
                    self.held_blank = true;
                    return;
                }
                let shown = self.panics.feed(line);
                if std::mem::take(&mut self.held_blank) && (shown || !self.panics.busy()) {
                    self.push(name, "");
                }
                if !shown {
                    return;
                }
            }
            self.push(name, line);
        }

        /// Takes whatever is still in the channels.
        fn drain(&mut self) {
            let channels = self.channels.clone();
            for (name, rx) in &channels {
                while let Ok(line) = rx.try_recv() {
                    self.line(name, &line);
                }
            }
        }

        fn push(&mut self, name: &'static str, line: &str) {
            match self.pending.last_mut() {
                Some((n, text)) if *n == name => {
                    text.push_str(line);
                    text.push('\n');
                }
                _ => self.pending.push((name, format!("{line}\n"))),
            }
        }

        fn flush(&mut self) {
            let pending = std::mem::take(&mut self.pending);
            self.last_flush = Some(Instant::now());
            let Some(t) = &self.target else { return };
            if t.silent {
                return;
            }
            for (name, text) in pending {
                t.outbox.publish(Some(&t.parent), "stream", json!({"name": name, "text": text}));
            }
        }
    }

    /// evcxr's output lines → coalesced `stream` messages of the running (or last) cell.
    #[derive(Default)]
    struct Sink {
        st: Mutex<SinkState>,
        cv: Condvar,
        flusher: AtomicBool,
    }

    impl Sink {
        /// Reads evcxr's output channels. Lines are only ever taken out of a channel under the
        /// sink's lock (the reader threads wait for readiness, then drain), so once evcxr says
        /// the cell is over and its stdout channel is empty, every line is in `pending`.
        fn start(self: &Arc<Self>, outputs: evcxr::EvalContextOutputs) {
            for (name, rx) in [("stdout", outputs.stdout), ("stderr", outputs.stderr)] {
                relock(&self.st).channels.push((name, rx.clone()));
                let sink = self.clone();
                let _ = std::thread::Builder::new().name(format!("beamtime-rust-{name}")).spawn(move || {
                    loop {
                        let mut sel = crossbeam_channel::Select::new();
                        sel.recv(&rx);
                        sel.ready();
                        let mut st = relock(&sink.st);
                        loop {
                            match rx.try_recv() {
                                Ok(line) => st.line(name, &line),
                                Err(crossbeam_channel::TryRecvError::Empty) => break,
                                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                                    st.channels.retain(|(_, r)| !r.same_channel(&rx));
                                    return;
                                }
                            }
                        }
                        sink.cv.notify_one();
                    }
                });
            }
            if self.flusher.swap(true, Ordering::SeqCst) {
                return;
            }
            let sink = Arc::downgrade(self);
            let _ = std::thread::Builder::new().name("beamtime-rust-flush".into()).spawn(move || {
                while let Some(sink) = sink.upgrade() {
                    let mut st = relock(&sink.st);
                    if st.pending.is_empty() {
                        let (g, _) = sink.cv.wait_timeout(st, Duration::from_secs(1)).unwrap_or_else(|p| p.into_inner());
                        st = g;
                        if st.pending.is_empty() {
                            continue;
                        }
                    }
                    let due = st.last_flush.map_or(Instant::now(), |t| t + FLUSH_EVERY);
                    let now = Instant::now();
                    if now < due {
                        drop(st);
                        std::thread::sleep(due - now);
                        continue;
                    }
                    st.flush();
                }
            });
        }

        fn begin(&self, ctx: &CellContext) {
            let mut st = relock(&self.st);
            st.drain();
            st.flush();
            st.target = Some(Target { outbox: ctx.shared.outbox.clone(), parent: ctx.parent.clone(), silent: ctx.silent });
            st.panics = PanicScan::default();
        }

        /// Waits for stderr lines still on their way (evcxr forwards them on its own thread),
        /// flushes, and returns the panics seen during the cell.
        fn finish(&self, started: Instant) -> Vec<Panic> {
            let t0 = Instant::now();
            loop {
                let quiet_since = relock(&self.st).last_stderr.filter(|t| *t > started).map_or(t0, |t| t.max(t0));
                let now = Instant::now();
                if now >= quiet_since + Duration::from_millis(15) || now >= t0 + Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut st = relock(&self.st);
            st.drain();
            if std::mem::take(&mut st.held_blank) {
                st.push("stderr", "");
            }
            st.flush();
            st.panics.take()
        }

        fn flush(&self) {
            let mut st = relock(&self.st);
            st.drain();
            st.flush();
        }

        fn note(&self, text: &str) {
            let mut st = relock(&self.st);
            for l in text.lines() {
                st.push("stderr", l);
            }
            st.flush();
        }
    }

    /// What the interrupt watcher did.
    #[derive(Default)]
    struct Watch {
        done: AtomicBool,
        process: Mutex<Option<Arc<Mutex<Child>>>>,
        stopped_build: AtomicBool,
        killed_runtime: AtomicBool,
    }

    pub struct RustCells {
        shared: RustShared,
        sink: Arc<Sink>,
        prelude: Option<PathBuf>,
        started: bool,
        /// The user chose evcxr's `:cache` setting: the kernel leaves it alone.
        user_cache: bool,
        /// The kernel turned evcxr's `:cache` on (for the polars prelude).
        cache_on: bool,
    }

    impl RustCells {
        pub fn new(shared: RustShared) -> Self {
            RustCells { shared, sink: Arc::default(), prelude: None, started: false, user_cache: false, cache_on: false }
        }

        pub fn execute(&mut self, code: &str, ctx: &CellContext, catalog: &mut query::Catalog) -> Result<Option<Bundle>, CellError> {
            if code.lines().any(|l| l.trim() == ":quit" || l.trim().starts_with(":quit ")) {
                return Err(CellError::new("UsageError", "`:quit` would end the whole kernel; use the notebook's Shut Down or Restart Kernel instead"));
            }
            if find_tool("cargo").is_none() {
                return Err(no_toolchain());
            }
            self.sink.begin(ctx);
            let started = Instant::now();
            let watch = Watch::default();
            *relock(&watch.process) = relock(&self.shared.process).clone();
            // evcxr runs rust-analyzer in this process: deeply nested code recurses deeply, so the
            // cell runs on a thread with a big stack while this one watches for interrupts.
            let result = std::thread::scope(|s| {
                let worker = std::thread::Builder::new().name("beamtime-rust".into()).stack_size(ANALYSIS_STACK).spawn_scoped(s, || {
                    let r = self.run(code, ctx, catalog, &watch);
                    watch.done.store(true, Ordering::SeqCst);
                    r
                });
                match worker {
                    Ok(h) => {
                        watch_interrupt(ctx, &watch);
                        h.join().unwrap_or_else(|_| Err(RunError::Cell(CellError::new("InternalError", "evcxr failed on this cell (see the kernel log)"))))
                    }
                    Err(e) => Err(RunError::Cell(CellError::new("OSError", format!("cannot start a thread for the cell: {e}")))),
                }
            });
            let panics = self.sink.finish(started);
            let interrupted = watch.stopped_build.load(Ordering::SeqCst) || watch.killed_runtime.load(Ordering::SeqCst);
            match result {
                Ok(outputs) => match panics.first() {
                    Some(p) => Err(p.to_error()),
                    None => Ok(outputs),
                },
                Err(_) if interrupted => Err(interrupt_error(&watch)),
                Err(RunError::Cell(e)) => Err(e),
                Err(RunError::Evcxr(e)) => Err(evcxr_error(e, code)),
            }
        }

        fn run(&mut self, code: &str, ctx: &CellContext, catalog: &mut query::Catalog, watch: &Watch) -> Result<Option<Bundle>, RunError> {
            let slot = self.shared.engine.clone();
            let mut guard = relock(&slot);
            if guard.is_none() {
                *guard = Some(self.create_engine(watch)?);
            }
            let engine = guard.as_mut().unwrap();
            let code = match &self.prelude {
                Some(dir) => rewrite_prelude_deps(code, dir),
                None => code.to_string(),
            };
            self.user_cache |= code.lines().any(|l| l.trim_start().starts_with(":cache"));
            if wants_polars_prelude(&code) && !self.user_cache && !self.cache_on {
                // Compiling polars inside evcxr takes minutes; evcxr's artifact cache makes it a
                // one-time cost per machine instead of one per kernel.
                self.cache_on = engine.cmd.execute(&format!(":cache {POLARS_CACHE_MIB}")).is_ok();
                self.sink.note(&format!(
                    "note: compiling polars for Rust cells: minutes the first time (~7 min on 2 cores), well under a minute \
                     once evcxr's build cache holds it{} (`:cache 0` turns the cache off)",
                    if self.cache_on { format!(" (now on: ~/.cache/evcxr, at most {POLARS_CACHE_MIB} MiB)") } else { String::new() }
                ));
            }
            let sink = self.sink.clone();
            let reader = |prompt: &str, password: bool| -> String {
                sink.flush();
                if !ctx.allow_stdin {
                    sink.note("(this frontend does not allow input: the cell gets an empty line)");
                    return String::new();
                }
                ctx.input(prompt, password).unwrap_or_default().replace(['\n', '\r'], " ")
            };
            let mut callbacks = evcxr::EvalCallbacks { input_reader: &|r| reader(&r.prompt, r.is_password) };
            let Engine { cmd, tables, .. } = engine;
            let mut run = || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.execute_with_callbacks(&code, &mut callbacks)));
            let outcome = match tables {
                Some(t) => t.lend(catalog, run),
                None => run(),
            };
            match outcome {
                Ok(Ok(out)) => {
                    let by_mime: Vec<(String, String)> = out.content_by_mime_type.into_iter().collect();
                    Ok(if ctx.silent { None } else { bundle(by_mime, out.timing) })
                }
                Ok(Err(e)) => Err(RunError::Evcxr(e)),
                Err(_) => {
                    // evcxr itself panicked: its state is unknown, start afresh next time.
                    if let Some(e) = guard.take() {
                        let _ = relock(&e.process).kill();
                    }
                    Err(RunError::Cell(CellError::new(
                        "InternalError",
                        "evcxr failed on this cell (it panicked; see the kernel log). The Rust session was reset: the next Rust cell starts afresh.",
                    )))
                }
            }
        }

        /// The evcxr context, its output threads and the tables bridge; the first compile.
        fn create_engine(&mut self, watch: &Watch) -> Result<Engine, RunError> {
            crate::bridge::sweep_dead_kernels();
            let tables = match TableServer::start() {
                Ok(t) => Some(t),
                Err(e) => {
                    self.sink.note(&format!("note: the tables bridge could not start ({e}); beamtime::table will not work"));
                    None
                }
            };
            let exe = std::env::current_exe().map_err(|e| RunError::Cell(CellError::new("RustUnavailable", format!("cannot find the kernel executable: {e}"))))?;
            let mut command = std::process::Command::new(exe);
            if let Some(t) = &tables {
                command.env(SOCKET_ENV, t.path());
            }
            let (eval, outputs) = evcxr::EvalContext::with_subprocess_command(command).map_err(|e| {
                if watch.stopped_build.load(Ordering::SeqCst) {
                    RunError::Evcxr(e)
                } else {
                    RunError::Cell(CellError::new("RustUnavailable", format!("evcxr could not start: {e}")))
                }
            })?;
            self.sink.start(outputs);
            let mut cmd = evcxr::CommandContext::with_eval_context(eval);
            if let (Some(t), Ok(out)) = (&tables, cmd.execute(":last_compile_dir")) {
                if let Some(build) = out.get("text/plain") {
                    let _ = std::fs::write(t.dir().join(crate::bridge::BUILD_DIR_NOTE), build.trim());
                }
            }
            let process = cmd.process_handle();
            *relock(&self.shared.process) = Some(process.clone());
            *relock(&watch.process) = Some(process.clone());
            if !self.started {
                self.started = true;
                if !rust_src_installed() {
                    self.sink.note(
                        "note: the rust-src component is not installed, so evcxr cannot infer the types of some variables \
                         (give them explicit types, or run `rustup component add rust-src` and restart the kernel)",
                    );
                }
            }
            match prelude_dir() {
                Ok(dir) => {
                    match cmd.execute(&prelude_dep(&dir, "")) {
                        Ok(_) => self.prelude = Some(dir),
                        Err(e) => self.sink.note(&format!("note: the beamtime prelude crate could not be added ({e}); beamtime::* is unavailable")),
                    }
                }
                Err(e) => self.sink.note(&format!("note: cannot write the beamtime prelude crate ({e}); beamtime::* is unavailable")),
            }
            Ok(Engine { cmd, process, tables })
        }
    }

    enum RunError {
        Cell(CellError),
        Evcxr(evcxr::Error),
    }


    fn rust_src_installed() -> bool {
        let Ok(out) = std::process::Command::new("rustc").args(["--print", "sysroot"]).output() else { return false };
        let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        root.join("lib/rustlib/src/rust/library/core").exists()
    }

    fn interrupt_error(w: &Watch) -> CellError {
        if w.killed_runtime.load(Ordering::SeqCst) {
            CellError::new(
                "KeyboardInterrupt",
                "interrupted: evcxr can only stop running code by killing its runtime process, so the session's \
                 variables were lost (evcxr restarted the process; functions, types, `use`s and `:dep`s are kept)",
            )
        } else {
            CellError::new("KeyboardInterrupt", "interrupted while compiling; the session's variables are kept")
        }
    }

    fn evcxr_error(e: evcxr::Error, code: &str) -> CellError {
        match e {
            evcxr::Error::CompilationErrors(errors) => compilation_error(&errors, code),
            evcxr::Error::SubprocessTerminated(msg) => CellError::new(
                "RuntimeDied",
                format!(
                    "the Rust runtime process ended ({}); evcxr restarted it and the session's variables were lost \
                     (functions, types, `use`s and `:dep`s are kept)",
                    msg.trim()
                ),
            ),
            evcxr::Error::TypeRedefinedVariablesLost(vars) => {
                CellError::new("VariablesLost", format!("a type was redefined, so these variables were lost: {}", vars.join(", ")))
            }
            evcxr::Error::Message(m) => {
                let mut e = CellError::new("EvcxrError", m.trim().to_string());
                if m.contains("Couldn't automatically determine type") && !rust_src_installed() {
                    e.traceback.push("hint: `rustup component add rust-src` lets evcxr infer more types".into());
                }
                e
            }
        }
    }

    /// One `error` for all of a cell's diagnostics, spans drawn on the cell's lines.
    fn compilation_error(errors: &[evcxr::CompilationError], code: &str) -> CellError {
        if errors.is_empty() {
            return CellError::new("CompilationError", "the cell did not compile (no diagnostics were reported)");
        }
        let mut traceback = Vec::new();
        for (i, e) in errors.iter().enumerate() {
            if i > 0 {
                traceback.push(String::new());
            }
            let mut spans = Vec::new();
            let mut notes = Vec::new();
            for m in e.spanned_messages().iter().chain(e.help_spanned().iter()) {
                match &m.span {
                    Some(s) => spans.push((s.start_line, s.start_column, s.end_line, s.end_column, m.label.clone(), m.is_primary)),
                    None if !m.label.is_empty() && !m.label.starts_with("error:") => notes.push(m.label.clone()),
                    None => {}
                }
            }
            if !spans.iter().any(|s| s.5) {
                if let Some(first) = spans.first_mut() {
                    first.5 = true;
                }
            }
            for h in e.help() {
                let h = format!("help: {h}");
                if !notes.contains(&h) {
                    notes.push(h);
                }
            }
            if let Some(hint) = e.evcxr_extra_hint() {
                notes.push(format!("note: {hint}"));
            }
            let d = Diagnostic { level: e.level(), code: e.code(), message: e.message(), spans, notes };
            if d.spans.is_empty() && !e.is_from_user_code() {
                // Not in the cell's own code: rustc's rendering is the best we have.
                let rendered = e.rendered();
                if !rendered.trim().is_empty() {
                    traceback.extend(rendered.lines().map(str::to_string));
                    continue;
                }
            }
            traceback.extend(d.render(code));
        }
        let mut evalue = errors[0].message();
        if errors.len() > 1 {
            evalue = format!("{evalue} (and {} more error{})", errors.len() - 1, if errors.len() > 2 { "s" } else { "" });
        }
        CellError { ename: "CompilationError".into(), evalue, traceback }
    }

    /// Stops the running build or, failing that, the runtime process, once the interrupt flag
    /// is set; returns when the cell ends. The runtime is only killed while it runs the cell's
    /// code: when it waits for evcxr's next command (evcxr is analysing the cell, a build is
    /// about to start) killing it would lose the variables for nothing.
    fn watch_interrupt(ctx: &CellContext, w: &Watch) {
        let mut since: Option<Instant> = None;
        while !w.done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            if !ctx.interrupted() || w.killed_runtime.load(Ordering::SeqCst) {
                continue;
            }
            let t0 = *since.get_or_insert_with(Instant::now);
            let runtime = relock(&w.process).clone();
            let runtime_pid = runtime.as_ref().map(|p| relock(p).id());
            if kill_build_processes(runtime_pid) > 0 {
                w.stopped_build.store(true, Ordering::SeqCst);
                continue;
            }
            let (Some(p), Some(pid)) = (runtime, runtime_pid) else { continue };
            let waiting = match waits_for_command(pid) {
                Some(true) => t0.elapsed() < IDLE_RUNTIME_GRACE,
                Some(false) => false,
                None => t0.elapsed() < KILL_RUNTIME_AFTER,
            };
            if !waiting {
                let _ = relock(&p).kill();
                w.killed_runtime.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Whether evcxr's runtime process sits in `read(0, …)`, waiting for its next command
    /// (`None`: cannot tell on this system).
    fn waits_for_command(pid: u32) -> Option<bool> {
        #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            const READ: &str = if cfg!(target_arch = "x86_64") { "0" } else { "63" };
            let s = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
            let mut f = s.split_whitespace();
            let nr = f.next()?;
            if nr == "running" {
                return Some(false);
            }
            let fd = f.next()?;
            Some(nr == READ && (fd == "0x0" || fd == "0"))
        }
        #[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
        {
            let _ = pid;
            None
        }
    }

    /// Kills this process's descendants (cargo, rustc, evcxr's rustc wrapper) except the
    /// runtime process and its own children; how many it killed. Linux only (reads /proc).
    fn kill_build_processes(runtime: Option<u32>) -> usize {
        #[cfg(target_os = "linux")]
        {
            let me = std::process::id();
            let mut parent_of = std::collections::HashMap::new();
            let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
                // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
                let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
                let mut f = after.split_whitespace();
                let (Some(state), Some(ppid)) = (f.next(), f.next().and_then(|p| p.parse::<u32>().ok())) else { continue };
                if state != "Z" {
                    parent_of.insert(pid, ppid);
                }
            }
            let descends = |mut pid: u32, from: u32| {
                for _ in 0..64 {
                    match parent_of.get(&pid) {
                        Some(&pp) if pp == from => return true,
                        Some(&pp) if pp > 1 => pid = pp,
                        _ => return false,
                    }
                }
                false
            };
            let mut killed = 0;
            for &pid in parent_of.keys() {
                if Some(pid) == runtime || !descends(pid, me) || runtime.is_some_and(|r| descends(pid, r)) {
                    continue;
                }
                // SAFETY: kill(2) with a pid we just saw as our descendant.
                if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                    killed += 1;
                }
            }
            killed
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = runtime;
            0
        }
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_convert_between_code_points_and_bytes() {
        let s = "é = 1; x";
        assert_eq!(byte_offset(s, 1), 2);
        assert_eq!(cp_offset(s, 2), 1);
        assert_eq!(byte_offset(s, 100), s.len());
        assert_eq!(cp_offset(s, 1), 0);
    }

    #[test]
    fn magic_lines_become_spaces_of_the_same_length() {
        let code = "%load t f.é\nlet x = 1;\nx.";
        let src = rust_source_for_analysis(code, code.len()).unwrap();
        assert_eq!(src.len(), code.len());
        assert!(src.starts_with("            \nlet x"));
        assert_eq!(rust_source_for_analysis(code, 3), None);
        assert_eq!(rust_source_for_analysis("%%sql\nSELECT", 8), None);
    }

    #[test]
    fn prelude_deps_get_their_path() {
        let dir = std::path::Path::new("/p");
        assert_eq!(rewrite_prelude_deps(":dep beamtime", dir), ":dep beamtime = { path = \"/p\", package = \"beamtime-prelude\" }");
        assert_eq!(
            rewrite_prelude_deps("let a = 1;\n:dep beamtime = { features = [\"polars\"] }", dir),
            "let a = 1;\n:dep beamtime = { path = \"/p\", package = \"beamtime-prelude\", features = [\"polars\"] }"
        );
        let own = ":dep beamtime = { path = \"/mine\" }";
        assert_eq!(rewrite_prelude_deps(own, dir), own);
        assert_eq!(rewrite_prelude_deps(":dep beamtimex", dir), ":dep beamtimex");
        assert!(wants_polars_prelude(":dep beamtime = { features = [\"polars\"] }"));
        assert!(!wants_polars_prelude(":dep beamtime\nlet polars = 1;"));
    }

    #[test]
    fn panics_are_picked_out_of_stderr() {
        let mut s = PanicScan::default();
        assert!(s.feed("hello"));
        assert!(!s.feed("thread '<unnamed>' panicked at src/lib.rs:7:1:"));
        assert!(!s.feed("boom"));
        assert!(!s.feed("stack backtrace:"));
        assert!(!s.feed("   0: ctx::run_user_code_3::{{closure}}"));
        assert!(!s.feed("   1: run_user_code_3"));
        assert!(!s.feed("note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace."));
        assert!(s.feed("after"));
        assert!(s.feed("thread 'worker' panicked at src/lib.rs:1:1:"));
        let found = s.take();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].message, vec!["boom"]);
        let e = found[0].to_error();
        assert_eq!((e.ename.as_str(), e.evalue.as_str()), ("Panic", "boom"));
        assert!(e.traceback.iter().any(|l| l.contains("0: <cell>")), "{:?}", e.traceback);
    }

    #[test]
    fn diagnostics_point_at_the_span() {
        let d = Diagnostic {
            level: "error",
            code: Some("E0308"),
            message: "mismatched types".into(),
            spans: vec![(2, 14, 2, 17, "expected `i32`, found `&str`".into(), true)],
            notes: vec![],
        };
        let out = d.render("let a = 1;\nlet x: i32 = \"a\";");
        let text = out.join("\n");
        assert!(text.contains("E0308"), "{text}");
        assert!(text.contains("cell:2:14"), "{text}");
        assert!(text.contains("let x: i32 = \"a\";"), "{text}");
        let caret = out.iter().find(|l| l.contains("^^^")).unwrap();
        assert!(caret.contains("             \x1b[1;31m^^^ expected"), "{caret:?}");
    }

    #[test]
    fn bundles_always_have_text_plain() {
        let b = bundle(vec![("application/json".into(), "{\"a\": 1}".into())], None).unwrap();
        assert_eq!(b["application/json"]["a"], 1);
        assert!(b["text/plain"].is_string());
        let b = bundle(vec![], Some(std::time::Duration::from_millis(12))).unwrap();
        assert_eq!(b["text/plain"], "Took 12ms");
        assert!(bundle(vec![], None).is_none());
    }
}
