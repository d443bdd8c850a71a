//! Live queries from the notebook: `%source`, `%%live`, `%live …`. The kernel starts the job
//! as a process (`beamtime-job`, alone with `--ranks 1`, else under the launcher) and talks to
//! it only through the contract (ZeroMQ): it sends query commands and turns the job's frames
//! into kernel tables and display updates. It supervises the job: a dead job or rank is
//! reported in the live displays and in `%live status`, and the kernel stays up.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contract::{codec, Ack, AckOutcome, Command, FrameHeader, JobEndpoint, JobMessage, JobSpec};
use polars::prelude::*;
use query::{LiveMode, LiveQuery};
use serde_json::{json, Value};

use crate::cells::CellError;
use crate::display;
use crate::server::Outbox;
use crate::transport::Message;
use crate::widgets::{OnCustom, Widgets};
use bytes::Bytes;

/// One live query as the notebook sees it.
struct View {
    sql: String,
    mode: String,
    display_id: String,
    parent: Message,
    header: Option<FrameHeader>,
    result: Option<DataFrame>,
    /// The frame generation this view waits for (after a replace or reset).
    min_generation: u64,
    /// The widget showing this result (None: plain HTML displays, `--view html`).
    widget: Option<String>,
    look: ViewOptions,
    /// The widget gets no new data while paused (status still updates).
    paused: bool,
    /// A result the widget has not been sent yet, and when it was last sent one.
    widget_dirty: bool,
    widget_sent: Option<Instant>,
    /// The job frame whose rows `result` holds (the base a delta frame must extend).
    result_seq: Option<u64>,
    /// The job was asked to send the whole result again (a delta did not fit).
    resend_asked: bool,
    /// The newest data message sent to the widget (its snapshot's or custom message's seq).
    widget_seq: u64,
    /// What the widget holds, so that it is sent only the change (None: send it all).
    widget_rows: Option<WidgetRows>,
}

impl View {
    /// A view waiting for its query's first frame (from `min_generation` on).
    fn new(sql: &str, mode: &str, display_id: String, parent: Message, look: ViewOptions, min_generation: u64) -> Self {
        View {
            sql: sql.into(),
            mode: mode.into(),
            display_id,
            parent,
            header: None,
            result: None,
            min_generation,
            widget: None,
            look,
            paused: false,
            widget_dirty: false,
            widget_sent: None,
            result_seq: None,
            resend_asked: false,
            widget_seq: 0,
            widget_rows: None,
        }
    }
}

/// The rows a widget holds: the newest `held` of the result as it was at widget message
/// `seq`; since then `left` rows of that result are still in the view's result (the others
/// were its oldest, dropped) and `appended` rows came after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WidgetRows {
    seq: u64,
    held: usize,
    left: usize,
    appended: usize,
}

impl WidgetRows {
    /// The widget was sent the newest rows of a result of `rows` rows.
    fn whole(seq: u64, rows: usize) -> Self {
        WidgetRows { seq, held: rows.min(WIDGET_MAX_ROWS), left: rows, appended: 0 }
    }

    /// The view's result lost its `drop` oldest rows and gained `appended` new ones.
    fn changed(&mut self, drop: usize, appended: usize) {
        let from_old = drop.min(self.left);
        self.left -= from_old;
        self.appended = self.appended.saturating_sub(drop - from_old) + appended;
    }

    /// The message bringing the widget up to date: its oldest rows to drop and how many of
    /// the result's newest rows to append (None: nothing changed).
    fn catch_up(&self) -> Option<(usize, usize)> {
        if self.appended >= WIDGET_MAX_ROWS {
            return Some((self.held, WIDGET_MAX_ROWS));
        }
        let drop = self.held - self.held.min(self.left);
        (drop > 0 || self.appended > 0).then_some((drop, self.appended))
    }
}

/// How a live result is shown: `--view KIND [x=COL] [y=COL[,COL]]`.
#[derive(Clone, Debug, Default)]
pub struct ViewOptions {
    /// auto, table, line, scatter, hist, heatmap, strip, or html (no widget).
    pub kind: Option<String>,
    pub x: Option<String>,
    pub y: Option<Vec<String>>,
}

impl ViewOptions {
    fn html_only(&self) -> bool {
        self.kind.as_deref() == Some("html")
    }
}

/// The views the widget knows (`html` = no widget, the static table only).
pub const VIEW_KINDS: &[&str] = &["auto", "table", "line", "scatter", "hist", "heatmap", "strip", "html"];

/// Widget updates per second at most (the display's rate; frames in between are coalesced).
fn display_rate_hz() -> f64 {
    std::env::var("BEAMTIME_DISPLAY_HZ").ok().and_then(|v| v.parse().ok()).filter(|r: &f64| *r > 0.0).unwrap_or(10.0)
}

/// Rows a widget snapshot holds at most (the newest): keeps comm messages and saved widget
/// state small whatever the result's size.
const WIDGET_MAX_ROWS: usize = 10_000;

/// Arrow IPC stream bytes for the browser: the oldest compatibility level (no view types,
/// which apache-arrow JS may not read), at most the newest `WIDGET_MAX_ROWS` rows.
fn widget_ipc(df: &DataFrame) -> Bytes {
    let mut df = if df.height() > WIDGET_MAX_ROWS { df.tail(Some(WIDGET_MAX_ROWS)) } else { df.clone() };
    match codec::encode_portable(&mut df) {
        Ok(buf) => Bytes::from(buf),
        Err(e) => {
            eprintln!("beamtime kernel: cannot encode a widget snapshot: {e}");
            Bytes::new()
        }
    }
}

/// A widget showing a finished result (`%%sql --view …`): no live query behind it.
pub fn open_result_widget(widgets: &Widgets, parent: &Message, title: &str, df: &DataFrame, look: &ViewOptions) -> String {
    let mut traits = serde_json::Map::new();
    traits.insert("kind".into(), json!(look.kind.clone().unwrap_or_else(|| "auto".into())));
    traits.insert("x".into(), json!(look.x));
    traits.insert("y".into(), json!(look.y));
    traits.insert("title".into(), json!(title));
    traits.insert("status".into(), json!({"query": title, "events": df.height(), "done": true}));
    traits.insert("max_rows".into(), json!(WIDGET_MAX_ROWS));
    widgets.open(parent, traits, vec![("snapshot".into(), widget_ipc(df))], None)
}

/// The status trait of the widget (names as the front end expects them).
fn widget_status(name: &str, h: Option<&FrameHeader>, paused: bool, note: Option<&str>) -> Value {
    match h {
        None => json!({"query": name, "paused": paused}),
        Some(h) => json!({
            "query": name, "seq": h.seq, "mode": h.mode, "events": h.events_read, "included": h.events_included,
            "dropped": h.events_dropped, "rate": h.rate_hz, "mean_rate": h.mean_rate_hz, "ranks_alive": h.ranks_alive, "ranks_total": h.ranks_total,
            "stalled": h.ranks_stalled, "dead": h.ranks_dead, "age_s": h.newest_age_s, "done": h.done,
            "error": note.map(str::to_string).or_else(|| h.error.clone()), "paused": paused,
        }),
    }
}

/// The status trait of a live view's widget; its seq is that of the data the widget was sent.
fn view_status(name: &str, v: &View, note: Option<&str>) -> Value {
    let mut s = widget_status(name, v.header.as_ref(), v.paused, note);
    s["seq"] = json!(v.widget_seq);
    s
}

/// What the job thread and the executor share.
#[derive(Default)]
struct State {
    views: BTreeMap<String, View>,
    /// The job said hello / end; its process (when not in-process).
    running: bool,
    ended: Option<String>,
    died: Option<String>,
    acks: Vec<Ack>,
    stderr_tail: String,
    /// Which job is current: a watcher of an earlier job must not report on this one.
    job_id: u64,
}

struct Job {
    child: Arc<Mutex<Child>>,
    ranks: usize,
    source: String,
    /// How it was started (`%live restart` starts the next one the same way).
    opts: LiveOptions,
}

pub struct Live {
    source: Option<String>,
    calib_dir: Option<String>,
    state: Arc<Mutex<State>>,
    commands: Option<tokio::sync::mpsc::UnboundedSender<Command>>,
    endpoint: Option<String>,
    job: Option<Job>,
    outbox: Outbox,
    widgets: Arc<Widgets>,
    /// Tables already holding the newest result (by frame seq).
    synced: BTreeMap<String, u64>,
}

/// How long a `%%live` cell waits for its first result.
const FIRST_FRAME: Duration = Duration::from_secs(120);
/// How long it waits for a first frame holding data (then an empty one will do).
const FIRST_RESULT: Duration = Duration::from_secs(15);

fn status_line(h: &FrameHeader) -> String {
    let mut parts = vec![format!("{} events", h.events_read)];
    if h.events_included != h.events_read {
        parts.push(format!("{} included", h.events_included));
    }
    // Once done, the rate of the last seconds is zero: the mean rate says how fast it went.
    parts.push(if h.done { format!("mean {:.0} Hz", h.mean_rate_hz) } else { format!("{:.0} Hz", h.rate_hz) });
    parts.push(format!("{} dropped", h.events_dropped));
    parts.push(format!("ranks {}/{}", h.ranks_alive, h.ranks_total));
    if !h.ranks_stalled.is_empty() {
        parts.push(format!("stalled {:?}", h.ranks_stalled));
    }
    if !h.ranks_dead.is_empty() {
        parts.push(format!("dead {:?}", h.ranks_dead));
    }
    if let Some(a) = h.newest_age_s {
        parts.push(format!("age {a:.1} s"));
    }
    parts.push(if h.done { "done".into() } else { format!("mode {}", h.mode) });
    parts.join(" · ")
}

fn bundle(name: &str, view: &View, extra: Option<&str>) -> Value {
    let empty = DataFrame::empty();
    let df = view.result.as_ref().unwrap_or(&empty);
    let mut status = view.header.as_ref().map(status_line).unwrap_or_else(|| "waiting for the first events…".into());
    if let Some(e) = extra {
        status = format!("{status} · {e}");
    }
    let b = display::table_bundle(Some(name), df, display::DEFAULT_ROWS);
    // The plot the widget shows, as an inline SVG for viewers without widgets.
    let kind = view.look.kind.as_deref().unwrap_or("auto");
    let y = view.look.y.as_ref().and_then(|y| y.first()).map(String::as_str);
    let svg = display::svg_plot(df, kind, view.look.x.as_deref(), y).unwrap_or_default();
    let html = format!("{svg}{}<div class=\"beamtime-status\"><small>{}</small></div>", b["text/html"].as_str().unwrap_or(""), display::escape(&status));
    let plain = format!("{}\n{status}", b["text/plain"].as_str().unwrap_or(""));
    json!({"text/html": html, "text/plain": plain})
}

impl Live {
    pub fn new(outbox: Outbox, widgets: Arc<Widgets>) -> Self {
        Live { source: None, calib_dir: None, state: Arc::default(), commands: None, endpoint: None, job: None, outbox, widgets, synced: BTreeMap::new() }
    }

    /// `%source <psana string> [--calib-dir D]`.
    pub fn set_source(&mut self, source: &str, calib_dir: Option<String>) -> Result<String, CellError> {
        xtc::Source::parse(source).map_err(|e| CellError::new("SourceError", e.to_string()))?;
        self.source = Some(source.to_string());
        self.calib_dir = calib_dir;
        let note = match &self.job {
            Some(j) if j.source != source && self.job_alive() => " (the running job still reads the old source: %live restart switches)",
            _ => "",
        };
        Ok(format!("source: {source}{note}"))
    }

    /// The latest live results into the catalog, so that %%sql and %save see them.
    pub fn sync(&mut self, catalog: &mut query::Catalog) {
        let st = self.state.lock().unwrap();
        for (name, v) in &st.views {
            let seq = v.header.as_ref().map(|h| h.seq).unwrap_or(0);
            // A result without columns (no events yet) does not replace a table.
            if let Some(df) = v.result.as_ref().filter(|df| df.width() > 0) {
                if self.synced.get(name) != Some(&seq) {
                    let _ = catalog.insert(name, df.clone());
                    self.synced.insert(name.clone(), seq);
                }
            }
        }
    }

    fn ensure_endpoint(&mut self) -> Result<(), CellError> {
        if self.endpoint.is_some() {
            return Ok(());
        }
        let ep = JobEndpoint::bind().map_err(|e| CellError::new("LiveError", e.to_string()))?;
        self.endpoint = Some(ep.endpoint().to_string());
        self.commands = Some(ep.commander());
        let state = self.state.clone();
        let outbox = self.outbox.clone();
        let widgets = self.widgets.clone();
        std::thread::Builder::new()
            .name("beamtime-live".into())
            .spawn(move || pump(ep, state, outbox, widgets))
            .map_err(|e| CellError::new("LiveError", e.to_string()))?;
        Ok(())
    }

    fn job_alive(&self) -> bool {
        let st = self.state.lock().unwrap();
        self.job.is_some() && st.died.is_none() && st.ended.is_none()
    }

    /// `%%live NAME [--ranks N] [--rate HZ] [--mode M] [--window W]` with the SQL below.
    pub fn start_query(&mut self, name: &str, sql: &str, opts: &LiveOptions, parent: &Message, interrupted: &dyn Fn() -> bool) -> Result<(), CellError> {
        query::validate_name(name).map_err(|e| CellError::new("UsageError", e.to_string()))?;
        let source = self.source.clone().ok_or_else(|| {
            CellError::new("LiveError", "no source yet: %source exp=<exp>:run=<n>:dir=<xtc dir>:live (or shmem=…) first")
        })?;
        let mode = opts.mode.clone().unwrap_or_else(|| "total".into());
        let live_mode = LiveMode::parse(&mode).map_err(|e| CellError::new("LiveQueryError", e.to_string()))?;
        // Everything but the columns is checked here, before the job sees it.
        let names = LiveQuery::referenced_names(sql).map_err(|e| CellError::new("LiveQueryError", e.to_string()))?;
        LiveQuery::plan_mode(sql, &names, live_mode).map_err(|e| CellError::new("LiveQueryError", e.to_string()))?;
        self.ensure_endpoint()?;
        let display_id = format!("beamtime-live-{name}-{}", uuid::Uuid::new_v4().simple());
        let cmd = Command::Set { name: name.into(), sql: sql.into(), mode: mode.clone(), generation: 0 };
        {
            let mut st = self.state.lock().unwrap();
            // Raised to the command's generation when the job acknowledges it.
            let min_generation = 0;
            st.views.insert(name.to_string(), View::new(sql, &mode, display_id.clone(), parent.clone(), opts.view.clone(), min_generation));
            st.acks.clear();
        }
        if self.job_alive() {
            self.send(cmd);
        } else {
            self.start_job(&source, opts)?;
        }
        // Wait for this query's first frame (or its error) so that a bad query fails its cell.
        let t = Instant::now();
        let mut restarted = !self.job_alive();
        loop {
            {
                let mut st = self.state.lock().unwrap();
                // This query's ack (another query's refusal is that query's cell's error).
                match st.acks.iter().find(|a| a.query.as_deref() == Some(name)).map(|a| a.outcome.clone()) {
                    Some(AckOutcome::Rejected(e)) => {
                        st.views.remove(name);
                        return Err(CellError::new("LiveQueryError", e));
                    }
                    Some(AckOutcome::Accepted(cmd)) => {
                        if let (Some(v), Some(g)) = (st.views.get_mut(name), cmd.generation()) {
                            v.min_generation = g;
                        }
                    }
                    None => {}
                }
                let died = st.died.clone();
                // The first frame with a result (columns), or the final one; after a few
                // seconds without events, whatever came (the display shows it waiting).
                let patient = t.elapsed() < FIRST_RESULT;
                if let Some(v) = st.views.get(name) {
                    let has_result = v.result.as_ref().is_some_and(|df| df.width() > 0);
                    if let Some(h) = v.header.as_ref().filter(|h| h.generation >= v.min_generation && (has_result || h.done || h.error.is_some() || !patient)) {
                        if let Some(e) = &h.error {
                            let e = e.clone();
                            st.views.remove(name);
                            return Err(CellError::new("LiveQueryError", e));
                        }
                        let shown_seq = h.seq;
                        let mut b = bundle(name, v, None);
                        if !v.look.html_only() {
                            let v = st.views.get_mut(name).expect("the view is there");
                            // The widget opens with the whole result as its snapshot.
                            v.widget_seq += 1;
                            v.widget_rows = v.result.as_ref().map(|df| WidgetRows::whole(v.widget_seq, df.height()));
                            let id = self.open_widget(name, v);
                            b["application/vnd.jupyter.widget-view+json"] = Widgets::view(&id);
                            v.widget = Some(id);
                            v.widget_sent = Some(Instant::now());
                        }
                        drop(st);
                        self.outbox.publish(Some(parent), "display_data", json!({"data": b, "metadata": {}, "transient": {"display_id": display_id}}));
                        // A newer frame may have come while this one was shown: show it too.
                        let st = self.state.lock().unwrap();
                        if let Some(v) = st.views.get(name).filter(|v| v.header.as_ref().is_some_and(|h| h.seq != shown_seq)) {
                            if v.widget.is_none() || v.header.as_ref().is_some_and(|h| h.done) {
                                publish_fallback(&self.outbox, parent, name, v, None);
                            }
                        }
                        return Ok(());
                    }
                }
                if let Some(d) = died {
                    return Err(CellError::new("LiveJobError", d));
                }
                // The job was ending when the query was sent (end of a finished run): the
                // query goes to a new job, which reads the source again.
                let unanswered = st.views.get(name).is_some_and(|v| v.header.is_none());
                if st.ended.is_some() && unanswered && !restarted {
                    drop(st);
                    restarted = true;
                    self.start_job(&source, opts)?;
                }
            }
            if interrupted() {
                return Err(CellError::new("KeyboardInterrupt", "stopped waiting for the first result; the query keeps running (%live status)"));
            }
            if t.elapsed() > FIRST_FRAME {
                return Err(CellError::new("LiveJobError", format!("no result within {FIRST_FRAME:?}: is the source producing events? (%live status)")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The widget of live query `name`, showing its current result; front-end messages act on
    /// the query: sync (send the result again), pause, reset.
    fn open_widget(&self, name: &str, v: &View) -> String {
        let mut traits = serde_json::Map::new();
        traits.insert("kind".into(), json!(v.look.kind.clone().unwrap_or_else(|| "auto".into())));
        traits.insert("x".into(), json!(v.look.x));
        traits.insert("y".into(), json!(v.look.y));
        traits.insert("title".into(), json!(name));
        traits.insert("max_rows".into(), json!(WIDGET_MAX_ROWS));
        traits.insert("status".into(), view_status(name, v, None));
        let snapshot = v.result.as_ref().map(widget_ipc).unwrap_or_default();
        let (state, widgets, commands, query) = (self.state.clone(), self.widgets.clone(), self.commands.clone(), name.to_string());
        let on_custom: OnCustom = Arc::new(move |msg: &Value| {
            let mut st = state.lock().unwrap();
            let Some(v) = st.views.get_mut(&query) else { return };
            let Some(id) = v.widget.clone() else { return };
            match msg.get("type").and_then(Value::as_str) {
                Some("sync") => {
                    if let Some(df) = &v.result {
                        v.widget_seq += 1;
                        v.widget_rows = Some(WidgetRows::whole(v.widget_seq, df.height()));
                        widgets.custom(&id, json!({"type": "replace", "seq": v.widget_seq}), vec![widget_ipc(df)]);
                    }
                }
                Some("pause") => {
                    v.paused = msg.get("paused").and_then(Value::as_bool).unwrap_or(!v.paused);
                    v.widget_dirty = !v.paused;
                    let status = view_status(&query, v, None);
                    widgets.update(&id, [("status".to_string(), status)].into_iter().collect(), Vec::new());
                }
                Some("reset") => {
                    if let Some(c) = &commands {
                        let _ = c.send(Command::Reset { name: Some(query.clone()), generation: 0 });
                    }
                    // Empty now; the job's next frames (of the new generation) refill it.
                    if let Some(df) = &v.result {
                        v.widget_seq += 1;
                        v.widget_rows = None;
                        widgets.custom(&id, json!({"type": "replace", "seq": v.widget_seq}), vec![widget_ipc(&df.clear())]);
                    }
                }
                _ => {}
            }
        });
        self.widgets.open(&v.parent, traits, vec![("snapshot".into(), snapshot)], Some(on_custom))
    }

    fn send(&self, cmd: Command) {
        if let Some(c) = &self.commands {
            let _ = c.send(cmd);
        }
    }

    fn start_job(&mut self, source: &str, opts: &LiveOptions) -> Result<(), CellError> {
        let mut spec = JobSpec::new(source);
        spec.connect = self.endpoint.clone();
        spec.calib_dir = self.calib_dir.clone();
        spec.frame_rate = opts.rate.unwrap_or(5.0);
        self.synced.clear();
        let job_id = {
            let mut st = self.state.lock().unwrap();
            st.died = None;
            st.ended = None;
            st.running = false;
            st.stderr_tail.clear();
            st.job_id += 1;
            // A new job numbers generations from 0 again; its first frames are awaited (the
            // last results stay shown and as tables meanwhile).
            for v in st.views.values_mut() {
                v.min_generation = 0;
                v.header = None;
            }
            spec.queries = st
                .views
                .iter()
                .map(|(n, v)| Command::Set { name: n.clone(), sql: v.sql.clone(), mode: v.mode.clone(), generation: 0 })
                .collect();
            st.job_id
        };
        let ranks = opts.ranks.unwrap_or_else(default_ranks).max(1);
        let dir = std::env::temp_dir().join(format!("beamtime-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| CellError::new("OSError", e.to_string()))?;
        let mut cmd = contract::launch::command(opts.launcher.as_deref(), ranks, &spec, &dir.join("job.json")).map_err(|e| CellError::new("LiveJobError", e.to_string()))?;
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| CellError::new("LiveJobError", format!("cannot start {cmd:?}: {e}")))?;
        let mut err = child.stderr.take().unwrap();
        let child = Arc::new(Mutex::new(child));
        // Keep the tail of the ranks' messages for error reports; watch the process.
        let state = self.state.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut st = state.lock().unwrap();
                st.stderr_tail.push_str(&String::from_utf8_lossy(&buf[..n]));
                let len = st.stderr_tail.len();
                if len > 4000 {
                    let cut = st.stderr_tail.char_indices().map(|(i, _)| i).find(|&i| i >= len - 4000).unwrap_or(0);
                    st.stderr_tail.drain(..cut);
                }
            }
        });
        let (state, watched) = (self.state.clone(), child.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let status = watched.lock().unwrap().try_wait();
            if let Ok(Some(s)) = status {
                std::thread::sleep(Duration::from_millis(300));
                let mut st = state.lock().unwrap();
                // A job that said why it failed (its final error) is reported with that reason.
                if st.job_id == job_id && st.died.is_none() && (st.ended.is_none() || !s.success()) {
                    let tail = st.stderr_tail.trim().lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                    st.died = Some(format!("the job exited ({s}) before finishing{}", if tail.is_empty() { String::new() } else { format!(":\n{tail}") }));
                }
                break;
            }
        });
        self.job = Some(Job { child, ranks, source: source.into(), opts: opts.clone() });
        Ok(())
    }

    /// `%live status|stop [NAME]|reset [NAME]|restart`.
    pub fn command(&mut self, words: &[String], catalog: &mut query::Catalog) -> Result<Value, CellError> {
        match words.first().map(String::as_str).unwrap_or("status") {
            "status" => Ok(self.status()),
            "stop" => {
                match words.get(1) {
                    Some(n) => {
                        self.state.lock().unwrap().views.remove(n).ok_or_else(|| CellError::new("KeyError", format!("no live query named {n}")))?;
                        self.send(Command::Remove { name: n.clone() });
                    }
                    None => self.send(Command::Stop),
                }
                Ok(json!({"text/plain": "stopping"}))
            }
            "reset" => {
                let name = words.get(1).cloned();
                if let Some(n) = &name {
                    if !self.state.lock().unwrap().views.contains_key(n) {
                        return Err(CellError::new("KeyError", format!("no live query named {n}")));
                    }
                }
                self.send(Command::Reset { name, generation: 0 });
                Ok(json!({"text/plain": "reset"}))
            }
            "wait" => {
                // Until the named (or every) query has its final result: lets a notebook run
                // headless end with complete results (and their widget state saved with it).
                let name = words.get(1).filter(|w| !w.starts_with("--")).cloned();
                let timeout = words
                    .iter()
                    .position(|w| w == "--timeout")
                    .and_then(|i| words.get(i + 1))
                    .map(|t| t.parse::<f64>().map_err(|_| CellError::new("UsageError", format!("--timeout {t}: seconds expected"))))
                    .transpose()?
                    .unwrap_or(600.0);
                if let Some(n) = &name {
                    if !self.state.lock().unwrap().views.contains_key(n) {
                        return Err(CellError::new("KeyError", format!("no live query named {n}")));
                    }
                }
                let t = Instant::now();
                loop {
                    {
                        let mut st = self.state.lock().unwrap();
                        let finished = st.views.iter().filter(|(n, _)| name.as_ref().is_none_or(|x| x == *n)).all(|(_, v)| v.header.as_ref().is_some_and(|h| h.done));
                        if let Some(d) = &st.died {
                            return Err(CellError::new("LiveJobError", d.clone()));
                        }
                        if finished || (st.ended.is_some() && t.elapsed() > Duration::from_secs(2)) {
                            // The final results, sent again in this cell (where nbclient records them):
                            // widget state and the static fallback.
                            for (n, v) in st.views.iter_mut() {
                                flush_widget(&self.widgets, n, v);
                                let parent = self.widgets.current().unwrap_or_else(|| v.parent.clone());
                                publish_fallback(&self.outbox, &parent, n, v, None);
                            }
                            break;
                        }
                    }
                    if t.elapsed().as_secs_f64() > timeout {
                        return Err(CellError::new("TimeoutError", format!("the live queries were not finished after {timeout} s (%live status)")));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                self.sync(catalog);
                Ok(self.status())
            }
            "restart" => {
                let source = self.source.clone().ok_or_else(|| CellError::new("LiveError", "no source: %source …"))?;
                let opts = self.job.as_ref().map(|j| LiveOptions { ranks: Some(j.ranks), ..j.opts.clone() }).unwrap_or_default();
                self.kill();
                // The last results stay as tables until the new job's frames replace them.
                self.sync(catalog);
                self.start_job(&source, &opts)?;
                Ok(json!({"text/plain": format!("restarted the job on {source}")}))
            }
            other => Err(CellError::new("UsageError", format!("%live {other}: use status, wait [NAME] [--timeout S], stop [NAME], reset [NAME] or restart"))),
        }
    }

    fn status(&self) -> Value {
        let st = self.state.lock().unwrap();
        let job = match (&self.job, &st.died, &st.ended) {
            (None, _, _) => "no job (a %%live cell starts one)".to_string(),
            (Some(_), Some(d), _) => format!("job DEAD: {d}"),
            (Some(j), None, Some(e)) => format!("job finished ({e}) on {} with {} rank(s)", j.source, j.ranks),
            (Some(j), None, None) => format!("job running on {} with {} rank(s)", j.source, j.ranks),
        };
        let mut names = Vec::new();
        let mut lines = Vec::new();
        for (n, v) in &st.views {
            names.push(n.clone());
            lines.push(match &v.header {
                Some(h) => match &h.error {
                    Some(e) => format!("error: {e}"),
                    None => status_line(h),
                },
                None => "waiting".into(),
            });
        }
        let mut text = job.clone();
        for (n, l) in names.iter().zip(&lines) {
            text.push_str(&format!("\n  {n}: {l}"));
        }
        let mut html = format!("<div><b>{}</b><ul>", display::escape(&job));
        for (n, l) in names.iter().zip(&lines) {
            html.push_str(&format!("<li><code>{}</code>: {}</li>", display::escape(n), display::escape(l)));
        }
        html.push_str("</ul></div>");
        json!({"text/plain": text, "text/html": html})
    }

    fn kill(&mut self) {
        if let Some(j) = self.job.take() {
            self.send(Command::Stop);
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = j.child.lock().unwrap().try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut child = j.child.lock().unwrap();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone, Debug, Default)]
pub struct LiveOptions {
    pub ranks: Option<usize>,
    pub rate: Option<f64>,
    pub mode: Option<String>,
    pub launcher: Option<String>,
    pub view: ViewOptions,
}

/// Three ranks (collector, reader, one worker) where mpirun exists, else in-process.
fn default_ranks() -> usize {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("mpirun").exists()));
    if found { 3 } else { 1 }
}

/// Moves the job's messages into the shared state and the live displays: widgets get the
/// newest result at most at the display rate; the static fallback (HTML/text) of a widget's
/// display is rewritten only when the result is final (rewriting it re-creates the views).
fn pump(ep: JobEndpoint, state: Arc<Mutex<State>>, outbox: Outbox, widgets: Arc<Widgets>) {
    let mut last_died: Option<String> = None;
    let period = Duration::from_secs_f64(1.0 / display_rate_hz());
    loop {
        let m = ep.recv_timeout(Duration::from_millis(20));
        let mut st = state.lock().unwrap();
        match m {
            // A job of another contract version: nothing it says can be trusted.
            Some(Err(e)) => {
                st.died.get_or_insert_with(|| e.to_string());
            }
            Some(Ok(JobMessage::Hello(_))) => st.running = true,
            Some(Ok(JobMessage::Ack(a))) => {
                // Frames older than an acknowledged set or reset are not shown.
                if let AckOutcome::Accepted(cmd) = &a.outcome {
                    if let Some(g) = cmd.generation() {
                        for (n, v) in st.views.iter_mut() {
                            if a.query.as_ref().is_none_or(|x| x == n) {
                                v.min_generation = v.min_generation.max(g);
                            }
                        }
                    }
                }
                st.acks.push(a)
            }
            Some(Ok(JobMessage::Finished(f))) => {
                st.ended = Some(f.error.as_ref().map(|e| format!("error: {e}")).unwrap_or_else(|| "end of data".into()));
                if let Some(e) = f.error {
                    st.died.get_or_insert_with(|| format!("the job stopped: {e}"));
                }
            }
            Some(Ok(JobMessage::Frame(h, ipc))) => {
                let Some(v) = st.views.get_mut(&h.query) else { continue };
                if h.generation < v.min_generation {
                    continue;
                }
                if !take_rows(v, &h, &ipc) && !v.resend_asked {
                    // A delta that does not extend what we hold: ask for the whole result.
                    v.resend_asked = true;
                    ep.send(Command::Resend { name: h.query.clone() });
                }
                v.header = Some(h.clone());
                if v.widget.is_none() || h.done {
                    // Parented like ipykernel's background output: to the cell running now, so
                    // headless runners (nbclient) record the final fallback too.
                    let parent = widgets.current().unwrap_or_else(|| v.parent.clone());
                    publish_fallback(&outbox, &parent, &h.query, v, None);
                }
                v.widget_dirty = true;
                if h.done {
                    flush_widget(&widgets, &h.query, v);
                }
            }
            None => {}
        }
        for (n, v) in st.views.iter_mut() {
            if v.widget_dirty && v.widget_sent.is_none_or(|t| t.elapsed() >= period) {
                flush_widget(&widgets, n, v);
            }
        }
        // A dead job shows in every live display.
        if st.died.is_some() && st.died != last_died {
            last_died = st.died.clone();
            let note = format!("JOB DEAD: {} (%live restart)", last_died.clone().unwrap());
            for (n, v) in st.views.iter_mut() {
                publish_fallback(&outbox, &v.parent, n, v, Some(&note));
                if let Some(id) = &v.widget {
                    let status = view_status(n, v, Some(&note));
                    widgets.update(id, [("status".to_string(), status)].into_iter().collect(), Vec::new());
                }
            }
        }
    }
}

/// Takes a frame's rows into the view: the whole result, or a delta on the frame before.
/// False when a delta does not extend what the view holds (the rows are then unknown until
/// a whole result comes).
fn take_rows(v: &mut View, h: &FrameHeader, ipc: &[u8]) -> bool {
    let body = codec::decode(ipc).ok();
    let Some(d) = h.delta else {
        if body.is_some() {
            v.result = body;
        }
        v.result_seq = Some(h.seq);
        v.resend_asked = false;
        v.widget_rows = None;
        return true;
    };
    let (Some(body), Some(held)) = (body, v.result.as_mut()) else {
        v.result_seq = None;
        return false;
    };
    if v.result_seq != Some(d.prev_seq) || held.height() < d.drop || held.height() - d.drop + body.height() != h.rows {
        v.result_seq = None;
        return false;
    }
    let mut next = held.slice(d.drop as i64, held.height() - d.drop);
    if next.vstack_mut(&body).is_err() {
        v.result_seq = None;
        return false;
    }
    // Appends add chunks; a few dozen at most keep slicing and encoding cheap.
    if next.first_col_n_chunks() > 32 {
        next.rechunk_mut();
    }
    *held = next;
    v.result_seq = Some(h.seq);
    if let Some(w) = v.widget_rows.as_mut() {
        w.changed(d.drop, body.height());
    }
    true
}

/// Sends the view's newest rows and status to its widget (only the status while paused):
/// what changed as a custom `append` when the widget holds the rows it extends, else the whole
/// result as its snapshot (always when final, so that saved widget state is complete).
fn flush_widget(widgets: &Widgets, name: &str, v: &mut View) {
    let Some(id) = v.widget.clone() else {
        v.widget_dirty = false;
        return;
    };
    let done = v.header.as_ref().is_some_and(|h| h.done);
    let mut binary = Vec::new();
    if let (Some(df), false) = (&v.result, v.paused) {
        match v.widget_rows.filter(|_| !done) {
            Some(w) => {
                if let Some((drop, append)) = w.catch_up() {
                    v.widget_seq += 1;
                    let rows = widget_ipc(&df.tail(Some(append)));
                    widgets.custom(&id, json!({"type": "append", "seq": v.widget_seq, "prev": w.seq, "drop": drop}), vec![rows]);
                    let held = (w.held - drop + append).min(WIDGET_MAX_ROWS);
                    v.widget_rows = Some(WidgetRows { seq: v.widget_seq, held, left: df.height(), appended: 0 });
                }
            }
            None => {
                v.widget_seq += 1;
                binary.push(("snapshot".to_string(), widget_ipc(df)));
                v.widget_rows = Some(WidgetRows::whole(v.widget_seq, df.height()));
            }
        }
    }
    let mut changes = serde_json::Map::new();
    changes.insert("status".into(), view_status(name, v, None));
    widgets.update(&id, changes, binary);
    v.widget_dirty = false;
    v.widget_sent = Some(Instant::now());
}

/// Rewrites a view's display in place (update_display_data, parented to `parent`): its widget,
/// when it has one, and the static fallbacks with the view's current result.
fn publish_fallback(outbox: &Outbox, parent: &Message, name: &str, v: &View, extra: Option<&str>) {
    let mut b = bundle(name, v, extra);
    if let Some(id) = &v.widget {
        b["application/vnd.jupyter.widget-view+json"] = Widgets::view(id);
    }
    outbox.publish(Some(parent), "update_display_data", json!({"data": b, "metadata": {}, "transient": {"display_id": v.display_id}}));
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::RowDelta;

    fn view() -> View {
        View::new("SELECT x FROM events", "total", "d".into(), Message::new("s", "execute_request", json!({})), ViewOptions::default(), 0)
    }

    fn frame(seq: u64, rows: usize, delta: Option<(u64, usize)>) -> FrameHeader {
        FrameHeader { query: "q".into(), seq, rows, delta: delta.map(|(prev_seq, drop)| RowDelta { prev_seq, drop }), ..Default::default() }
    }

    fn ipc(x: &[i64]) -> Vec<u8> {
        codec::encode(&mut df!("x" => x).unwrap()).unwrap()
    }

    fn xs(v: &View) -> Vec<i64> {
        let x = v.result.as_ref().unwrap().column("x").unwrap().i64().unwrap().clone();
        (0..x.len()).map(|i| x.get(i).unwrap()).collect()
    }

    #[test]
    fn deltas_extend_the_rows_held_and_anything_else_is_refused() {
        let mut v = view();
        assert!(take_rows(&mut v, &frame(1, 3, None), &ipc(&[1, 2, 3])));
        v.widget_rows = Some(WidgetRows::whole(7, 3));
        // Frame 2: the oldest row left, two came.
        assert!(take_rows(&mut v, &frame(2, 4, Some((1, 1))), &ipc(&[4, 5])));
        assert_eq!(xs(&v), [2, 3, 4, 5]);
        assert_eq!(v.widget_rows.unwrap().catch_up(), Some((1, 2)), "the widget drops 1, gets 4 and 5");
        // Frame 4 extends frame 3, which never came: refused, the rows stay as they were.
        assert!(!take_rows(&mut v, &frame(4, 5, Some((3, 0))), &ipc(&[6])));
        assert_eq!(xs(&v), [2, 3, 4, 5]);
        // Until a whole frame, no delta fits (the base is unknown).
        assert!(!take_rows(&mut v, &frame(5, 5, Some((4, 0))), &ipc(&[7])));
        assert!(take_rows(&mut v, &frame(6, 2, None), &ipc(&[8, 9])));
        assert!(v.widget_rows.is_none(), "the widget gets the whole result next");
        // A delta whose row count does not add up is refused too.
        assert!(!take_rows(&mut v, &frame(7, 9, Some((6, 0))), &ipc(&[10])));
    }

    #[test]
    fn the_widget_gets_only_what_it_lacks() {
        // It holds the newest 3 of 5 rows; the 3 oldest of the result left, 2 came.
        let mut w = WidgetRows { seq: 1, held: 3, left: 5, appended: 0 };
        w.changed(3, 2);
        assert_eq!(w.catch_up(), Some((1, 2)), "of the 3 it holds, 1 left");
        // More new rows than it keeps: everything it holds goes, the newest WIDGET_MAX_ROWS come.
        w.changed(0, WIDGET_MAX_ROWS + 5);
        assert_eq!(w.catch_up(), Some((3, WIDGET_MAX_ROWS)));
        // Nothing changed: nothing to send.
        assert_eq!(WidgetRows::whole(2, 10).catch_up(), None);
    }
}
