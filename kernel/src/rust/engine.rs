//! The evcxr session: started in the background when the kernel starts (so that the first
//! Rust cell costs what a later one does) or else by the first Rust cell, run on a big-stack
//! thread while the interrupt watcher waits, shared with the shell thread for completion and
//! inspection (which only ever `try_lock`s it), stopped at shutdown.

use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::analysis::{byte_offset, cp_offset, rust_source_for_analysis};
use super::diagnostics::evcxr_error;
use super::interrupt::{interrupt_error, kill_build_processes, watch_interrupt, Watch};
use super::output::{bundle, Sink};
use super::prelude::{prelude_dep, prelude_dir, rewrite_prelude_deps, wants_polars_prelude};
use super::toolchain::{find_tool, no_toolchain, rust_src_installed};
use crate::bridge::{TableServer, SOCKET_ENV};
use crate::cell::{Bundle, CellContext, CellError};
use crate::lock::lock;

/// evcxr's `:cache` size the kernel sets when the polars prelude is first requested.
const POLARS_CACHE_MIB: u32 = 2048;
/// Stack of the threads that call into evcxr (and so rust-analyzer); only touched pages
/// cost memory.
const ANALYSIS_STACK: usize = 256 << 20;
/// How long the shell thread waits for the context before answering empty.
const SHELL_WAIT: Duration = Duration::from_millis(100);

/// What a kernel's warm-up runs once evcxr is up: the session's first stored variable is what
/// costs seconds (rust-analyzer loads the standard library to infer its type); moving it out
/// again leaves no variable behind.
const WARM_UP: [&str; 2] = ["let beamtime_warm_up = String::new();", "drop(beamtime_warm_up);"];
/// `BEAMTIME_RUST_WARMUP=0`: no evcxr until the first Rust cell.
pub const WARM_UP_ENV: &str = "BEAMTIME_RUST_WARMUP";

struct Engine {
    cmd: evcxr::CommandContext,
    process: Arc<Mutex<Child>>,
    tables: Option<TableServer>,
    /// The beamtime prelude crate's folder, when it could be added.
    prelude: Option<PathBuf>,
}

/// The evcxr context, shared by the cell thread and the shell thread.
#[derive(Clone, Default)]
pub struct RustShared {
    engine: Arc<Mutex<Option<Engine>>>,
    /// The runtime process handle (valid across evcxr's restarts), for shutdown.
    process: Arc<Mutex<Option<Arc<Mutex<Child>>>>>,
    /// Notes from starting evcxr in the background, for the next Rust cell to show.
    notes: Arc<Mutex<Vec<String>>>,
    /// The missing rust-src note was shown (once per kernel).
    noted_rust_src: Arc<std::sync::atomic::AtomicBool>,
}

/// Runs `f` on a thread with a big stack (rust-analyzer recurses); `Err` if it panicked.
fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, ()> {
    std::thread::scope(|s| {
        std::thread::Builder::new().name("beamtime-analysis".into()).stack_size(ANALYSIS_STACK).spawn_scoped(s, f).map_err(|_| ())?.join().map_err(|_| ())
    })
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
        if let Some(p) = lock(&self.process).as_ref() {
            let _ = lock(p).kill();
        }
        if let Some(mut g) = self.try_engine(Duration::from_secs(2)) {
            if let Some(engine) = g.take() {
                let _ = lock(&engine.process).kill();
                drop(engine);
            }
        }
    }
}

pub struct RustCells {
    shared: RustShared,
    sink: Arc<Sink>,
    /// The user chose evcxr's `:cache` setting: the kernel leaves it alone.
    user_cache: bool,
    /// The kernel turned evcxr's `:cache` on (for the polars prelude).
    cache_on: bool,
}

impl RustCells {
    pub fn new(shared: RustShared) -> Self {
        RustCells { shared, sink: Arc::default(), user_cache: false, cache_on: false }
    }

    /// Starts evcxr, adds the prelude and compiles a first statement on a thread of its own
    /// (its builds at a lower priority), without delaying anything: a Rust cell that comes
    /// meanwhile waits for it, and then costs what a later cell does. Off with
    /// `BEAMTIME_RUST_WARMUP=0` or without cargo (the first cell says why).
    pub fn warm_up(&self) {
        if std::env::var(WARM_UP_ENV).is_ok_and(|v| v == "0") || find_tool("cargo").is_none() {
            return;
        }
        let (shared, sink) = (self.shared.clone(), self.sink.clone());
        let spawned = std::thread::Builder::new().name("beamtime-rust-warm-up".into()).stack_size(ANALYSIS_STACK).spawn(move || {
            let mut guard = lock(&shared.engine);
            if guard.is_some() {
                return;
            }
            let mut notes = Vec::new();
            let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| create_engine(&shared, &sink, &Watch::default(), &mut notes, true)));
            if let Ok(Ok(mut engine)) = started {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| WARM_UP.iter().try_for_each(|c| engine.cmd.execute(c).map(drop)))).is_ok() {
                    *guard = Some(engine);
                } else {
                    let _ = lock(&engine.process).kill();
                }
            }
            // A failure is said by the first cell, which tries again.
            lock(&shared.notes).extend(notes);
        });
        if let Err(e) = spawned {
            eprintln!("beamtime: cannot start the Rust warm-up thread: {e}");
        }
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
        *lock(&watch.process) = lock(&self.shared.process).clone();
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
        // Waits for the warm-up when it is still at work.
        let mut guard = lock(&slot);
        let mut notes = std::mem::take(&mut *lock(&self.shared.notes));
        if guard.is_none() {
            let created = create_engine(&self.shared, &self.sink, watch, &mut notes, false);
            for n in notes.drain(..) {
                self.sink.note(&n);
            }
            *guard = Some(created?);
        }
        for n in notes {
            self.sink.note(&n);
        }
        let engine = guard.as_mut().unwrap();
        let code = match &engine.prelude {
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
                    let _ = lock(&e.process).kill();
                }
                Err(RunError::Cell(CellError::new(
                    "InternalError",
                    "evcxr failed on this cell (it panicked; see the kernel log). The Rust session was reset: the next Rust cell starts afresh.",
                )))
            }
        }
    }
}

/// The evcxr context, its output threads and the tables bridge; the first compile. Notes for
/// the user go to `notes`. In the `background`, the compiles run at a lower priority (the
/// runtime process, started first, keeps the normal one).
fn create_engine(shared: &RustShared, sink: &Arc<Sink>, watch: &Watch, notes: &mut Vec<String>, background: bool) -> Result<Engine, RunError> {
    crate::bridge::sweep_dead_kernels();
    let tables = match TableServer::start() {
        Ok(t) => Some(t),
        Err(e) => {
            notes.push(format!("note: the tables bridge could not start ({e}); beamtime::table will not work"));
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
    sink.start(outputs);
    if background {
        lower_this_threads_priority();
    }
    let mut cmd = evcxr::CommandContext::with_eval_context(eval);
    if let (Some(t), Ok(out)) = (&tables, cmd.execute(":last_compile_dir")) {
        if let Some(build) = out.get("text/plain") {
            let _ = std::fs::write(t.dir().join(crate::bridge::BUILD_DIR_NOTE), build.trim());
        }
    }
    let process = cmd.process_handle();
    *lock(&shared.process) = Some(process.clone());
    *lock(&watch.process) = Some(process.clone());
    if !shared.noted_rust_src.swap(true, Ordering::SeqCst) && !rust_src_installed() {
        notes.push(
            "note: the rust-src component is not installed, so evcxr cannot infer the types of some variables \
             (give them explicit types, or run `rustup component add rust-src` and restart the kernel)"
                .into(),
        );
    }
    let mut prelude = None;
    match prelude_dir() {
        Ok(dir) => match cmd.execute(&prelude_dep(&dir, "")) {
            Ok(_) => prelude = Some(dir),
            Err(e) => notes.push(format!("note: the beamtime prelude crate could not be added ({e}); beamtime::* is unavailable")),
        },
        Err(e) => notes.push(format!("note: cannot write the beamtime prelude crate ({e}); beamtime::* is unavailable")),
    }
    Ok(Engine { cmd, process, tables, prelude })
}

/// The warm-up's builds (cargo, rustc: children of this thread) yield to everything else.
fn lower_this_threads_priority() {
    // SAFETY: setpriority on this thread's own id; a failure only leaves the priority as it is.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

enum RunError {
    Cell(CellError),
    Evcxr(evcxr::Error),
}
