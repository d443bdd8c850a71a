//! What a Rust cell shows: its value as an `execute_result` bundle, and its stdout/stderr as
//! coalesced `stream` messages (at most one per stream every 200 ms, all of it before the reply).

use serde_json::Value;

use crate::cell::Bundle;
#[cfg(feature = "rust-cells")]
pub use sink::Sink;

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
mod sink {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    use serde_json::json;

    use crate::cell::CellContext;
    use crate::lock::lock;
    use crate::publisher::Publisher;
    use crate::rust::panics::{Panic, PanicScan};
    use crate::transport::Message;

    /// Coalescing window for stream output (as ipykernel).
    const FLUSH_EVERY: Duration = Duration::from_millis(200);

    /// Where the current cell's output goes.
    struct Target {
        publisher: Publisher,
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
                t.publisher.publish(Some(&t.parent), "stream", json!({"name": name, "text": text}));
            }
        }
    }

    /// evcxr's output lines → coalesced `stream` messages of the running (or last) cell.
    #[derive(Default)]
    pub struct Sink {
        st: Mutex<SinkState>,
        cv: Condvar,
        flusher: AtomicBool,
    }

    impl Sink {
        /// Reads evcxr's output channels. Lines are only ever taken out of a channel under the
        /// sink's lock (the reader threads wait for readiness, then drain), so once evcxr says
        /// the cell is over and its stdout channel is empty, every line is in `pending`.
        pub fn start(self: &Arc<Self>, outputs: evcxr::EvalContextOutputs) {
            for (name, rx) in [("stdout", outputs.stdout), ("stderr", outputs.stderr)] {
                lock(&self.st).channels.push((name, rx.clone()));
                let sink = self.clone();
                let _ = std::thread::Builder::new().name(format!("beamtime-rust-{name}")).spawn(move || {
                    loop {
                        let mut sel = crossbeam_channel::Select::new();
                        sel.recv(&rx);
                        sel.ready();
                        let mut st = lock(&sink.st);
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
                    let mut st = lock(&sink.st);
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

        pub fn begin(&self, ctx: &CellContext) {
            let mut st = lock(&self.st);
            st.drain();
            st.flush();
            st.target = Some(Target { publisher: ctx.publisher.clone(), parent: ctx.parent.clone(), silent: ctx.silent });
            st.panics = PanicScan::default();
        }

        /// Waits for stderr lines still on their way (evcxr forwards them on its own thread),
        /// flushes, and returns the panics seen during the cell.
        pub fn finish(&self, started: Instant) -> Vec<Panic> {
            let t0 = Instant::now();
            loop {
                let quiet_since = lock(&self.st).last_stderr.filter(|t| *t > started).map_or(t0, |t| t.max(t0));
                let now = Instant::now();
                if now >= quiet_since + Duration::from_millis(15) || now >= t0 + Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut st = lock(&self.st);
            st.drain();
            if std::mem::take(&mut st.held_blank) {
                st.push("stderr", "");
            }
            st.flush();
            st.panics.take()
        }

        pub fn flush(&self) {
            let mut st = lock(&self.st);
            st.drain();
            st.flush();
        }

        pub fn note(&self, text: &str) {
            let mut st = lock(&self.st);
            for l in text.lines() {
                st.push("stderr", l);
            }
            st.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
