//! Interrupting a Rust cell: a watcher stops the build (cargo, rustc) when one runs, else kills
//! evcxr's runtime process (evcxr has no other way to stop running code), and says which.

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cell::{CellContext, CellError};
use crate::lock::lock;

/// After an interrupt with no build running, how long before the runtime is killed when
/// we cannot tell what it does.
const KILL_RUNTIME_AFTER: Duration = Duration::from_millis(300);
/// How long an interrupted cell may stay in evcxr's analysis (runtime idle, no build)
/// before the runtime is killed anyway.
const IDLE_RUNTIME_GRACE: Duration = Duration::from_secs(10);

/// What the interrupt watcher did.
#[derive(Default)]
pub struct Watch {
    pub done: AtomicBool,
    pub process: Mutex<Option<Arc<Mutex<Child>>>>,
    pub stopped_build: AtomicBool,
    pub killed_runtime: AtomicBool,
}

pub fn interrupt_error(w: &Watch) -> CellError {
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

/// Stops the running build or, failing that, the runtime process, once the interrupt flag
/// is set; returns when the cell ends. The runtime is only killed while it runs the cell's
/// code: when it waits for evcxr's next command (evcxr is analysing the cell, a build is
/// about to start) killing it would lose the variables for nothing.
pub fn watch_interrupt(ctx: &CellContext, w: &Watch) {
    let mut since: Option<Instant> = None;
    while !w.done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        if !ctx.interrupted() || w.killed_runtime.load(Ordering::SeqCst) {
            continue;
        }
        let t0 = *since.get_or_insert_with(Instant::now);
        let runtime = lock(&w.process).clone();
        let runtime_pid = runtime.as_ref().map(|p| lock(p).id());
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
            let _ = lock(&p).kill();
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
pub fn kill_build_processes(runtime: Option<u32>) -> usize {
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
