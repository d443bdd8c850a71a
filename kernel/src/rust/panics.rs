//! A cell's panic: picked out of the runtime's stderr and shown as one error with the cell's
//! own frames.

use super::diagnostics::{RED, RESET};
use crate::cell::CellError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
