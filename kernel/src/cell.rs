//! A cell as every layer sees it: the execute request, what running code may do (publish,
//! read input, notice an interrupt), its result bundle and its error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::publisher::Publisher;
use crate::transport::Message;

/// An `execute_request`, queued for the cell thread.
pub struct CellRequest(pub Message);

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
    pub publisher: &'a Publisher,
    /// Set by interrupt_request (and SIGINT); long operations poll it.
    pub interrupt: &'a AtomicBool,
    pub parent: &'a Message,
    pub silent: bool,
    pub allow_stdin: bool,
}

impl CellContext<'_> {
    pub fn stream(&self, name: &str, text: &str) {
        if !self.silent && !text.is_empty() {
            self.publisher.publish(Some(self.parent), "stream", json!({"name": name, "text": text}));
        }
    }
    pub fn display(&self, data: Value) {
        if !self.silent {
            self.publisher.publish(Some(self.parent), "display_data", json!({"data": data, "metadata": {}, "transient": {}}));
        }
    }
    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }
    /// Input from the frontend, or an error when the frontend does not allow it.
    pub fn input(&self, prompt: &str, password: bool) -> Result<String, CellError> {
        if !self.allow_stdin {
            return Err(CellError::new("StdinNotImplementedError", "this frontend does not support input requests"));
        }
        self.publisher.input(self.parent, prompt, password).ok_or_else(|| CellError::new("EOFError", "no input reply"))
    }

    /// Runs `f` on a worker thread, returning early with KeyboardInterrupt on interrupt (the
    /// work is abandoned: polars has no cancellation, and the kernel must stay responsive).
    pub fn interruptible<T: Send + 'static>(
        &self,
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
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if self.interrupted() => return Err(CellError::interrupted(what)),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(CellError::new("InternalError", format!("{what} failed without an answer (worker thread panicked)")));
                }
            }
        }
    }
}
