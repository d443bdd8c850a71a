//! Live queries from the notebook (`%source`, `%%live`, `%live`): the kernel starts the job as
//! a process (`job`) and talks to it only through the contract (ZeroMQ): it sends query
//! commands; the frame pump (`frames`) turns the job's frames into the views (`view`), which
//! become kernel tables here. A dead job or rank shows in the live displays and in
//! `%live status`, and the kernel stays up.

pub mod frames;
pub mod images;
pub mod job;
pub mod options;
pub mod view;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contract::{AckOutcome, Command, JobEndpoint, JobSpec};
use serde_json::{json, Value};

use crate::cell::CellError;
use crate::display;
use crate::lock::lock;
use crate::publisher::Publisher;
use crate::transport::Message;
use crate::widgets::{OnCustom, Widgets};
use frames::Views;
use job::{default_ranks, JobProcess, JobStatus};
use options::{LiveCommand, LiveOptions};
use view::{flush_widget, open_view_widget, publish_fallback, render, status_line, view_status, widget_ipc, View, WidgetRows};

/// How long a `%%live` cell waits for its first result.
const FIRST_FRAME: Duration = Duration::from_secs(120);
/// How long it waits for a first frame holding data (then an empty one will do).
const FIRST_RESULT: Duration = Duration::from_secs(15);

/// The notebook's live queries and the job that computes them.
pub struct LiveQueries {
    source: Option<String>,
    calib_dir: Option<String>,
    /// `--calib` settings, checked, paths absolute.
    calib: Vec<String>,
    /// The source's `--launcher` and `--ranks`: what its jobs use unless `%%live` says.
    launch: LiveOptions,
    views: Arc<Mutex<Views>>,
    status: Arc<Mutex<JobStatus>>,
    commands: Option<tokio::sync::mpsc::UnboundedSender<Command>>,
    endpoint: Option<String>,
    job: Option<JobProcess>,
    publisher: Publisher,
    widgets: Arc<Widgets>,
    /// Tables already holding the newest result (by frame seq).
    synced: BTreeMap<String, u64>,
}

impl LiveQueries {
    pub fn new(publisher: Publisher, widgets: Arc<Widgets>) -> Self {
        LiveQueries {
            source: None,
            calib_dir: None,
            calib: Vec::new(),
            launch: LiveOptions::default(),
            views: Arc::default(),
            status: Arc::default(),
            commands: None,
            endpoint: None,
            job: None,
            publisher,
            widgets,
            synced: BTreeMap::new(),
        }
    }

    /// `%source <psana string> [--calib-dir D] [--calib S]… [--launcher T] [--ranks N]`.
    pub fn set_source(&mut self, source: &str, calib_dir: Option<String>, calib: Vec<String>, launch: LiveOptions) -> Result<String, CellError> {
        xtc::Source::parse(source).map_err(|e| CellError::new("SourceError", e.to_string()))?;
        let cwd = std::env::current_dir().map_err(|e| CellError::new("SourceError", e.to_string()))?;
        // A calib dir that is not there yet is accepted (a DAQ or simulator may deploy it when
        // the run starts) and said; the queries that need it fail then, naming it.
        let mut calib_note = String::new();
        let calib_dir = calib_dir.map(|d| {
            let dir = cwd.join(&d);
            if !dir.is_dir() {
                calib_note = format!("\nnote: --calib-dir {}: no such directory yet", dir.display());
            }
            dir.to_string_lossy().into_owned()
        });
        let settings = contract::CalibSetting::parse_all(&calib, &cwd).map_err(|e| CellError::new("SourceError", e))?;
        self.source = Some(source.to_string());
        self.calib_dir = calib_dir;
        self.calib = settings.iter().map(|s| s.to_arg()).collect();
        self.launch = launch;
        let note = match &self.job {
            Some(j) if j.source != source && self.job_alive() => " (the running job still reads the old source: %live restart switches)",
            _ => "",
        };
        Ok(format!("source: {source}{note}{calib_note}"))
    }

    /// The latest live results into the catalog, so that %%sql and %save see them.
    pub fn sync(&mut self, catalog: &mut query::Catalog) {
        let vs = lock(&self.views);
        for (name, v) in &vs.views {
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

    /// Binds the endpoint jobs connect to, and starts the frame pump on it (once): on this
    /// host's address when the first job's launcher may place rank 0 elsewhere
    /// (`$BEAMTIME_LINK_ADDRESS` chooses for every job).
    fn ensure_endpoint(&mut self, remote_ranks: bool) -> Result<(), CellError> {
        if self.endpoint.is_some() {
            return Ok(());
        }
        let ep = JobEndpoint::bind_for(remote_ranks).map_err(|e| CellError::new("LiveError", e.to_string()))?;
        self.endpoint = Some(ep.endpoint().to_string());
        self.commands = Some(ep.commander());
        let (views, status, publisher, widgets) = (self.views.clone(), self.status.clone(), self.publisher.clone(), self.widgets.clone());
        std::thread::Builder::new()
            .name("beamtime-live".into())
            .spawn(move || frames::pump(ep, views, status, publisher, widgets))
            .map_err(|e| CellError::new("LiveError", e.to_string()))?;
        Ok(())
    }

    fn job_alive(&self) -> bool {
        let st = lock(&self.status);
        self.job.is_some() && st.died.is_none() && st.ended.is_none()
    }

    /// `%%live NAME [--ranks N] [--rate HZ] [--mode M] [--window W]` with the SQL below.
    pub fn start_query(&mut self, name: &str, sql: &str, opts: &LiveOptions, parent: &Message, interrupted: &dyn Fn() -> bool) -> Result<(), CellError> {
        // The source's launcher and ranks, unless this cell says.
        let opts = &LiveOptions { ranks: opts.ranks.or(self.launch.ranks), launcher: opts.launcher.clone().or_else(|| self.launch.launcher.clone()), ..opts.clone() };
        query::validate_name(name).map_err(|e| CellError::new("UsageError", e.to_string()))?;
        let source = self.source.clone().ok_or_else(|| {
            CellError::new("LiveError", "no source yet: %source exp=<exp>:run=<n>:dir=<xtc dir>:live (or shmem=…) first")
        })?;
        let mode = opts.mode.clone().unwrap_or_else(|| "total".into());
        // Everything but the columns is checked here, before the job sees it.
        query::LiveQuery::check(sql, &mode).map_err(|e| CellError::new("LiveQueryError", e.to_string()))?;
        self.ensure_endpoint(opts.launcher.as_deref().is_some_and(|l| l != "mpirun"))?;
        let display_id = format!("beamtime-live-{name}-{}", uuid::Uuid::new_v4().simple());
        let save = match &opts.save {
            // Absolute: the job's ranks may start elsewhere.
            Some(p) => {
                smalldata::Format::of(std::path::Path::new(p)).map_err(|e| CellError::new("UsageError", format!("--save {e}")))?;
                Some(std::path::absolute(p).map_err(|e| CellError::new("UsageError", format!("--save {p}: {e}")))?.to_string_lossy().into_owned())
            }
            None => None,
        };
        let cmd = Command::Set { name: name.into(), sql: sql.into(), mode: mode.clone(), generation: 0, save: save.clone() };
        // Every result of the job is final (the end of a finished run): it is ending, and a
        // query sent to it would see only its last events. A new job reads the source again.
        let finishing = {
            let vs = lock(&self.views);
            !vs.views.is_empty() && vs.views.values().all(|v| v.header.as_ref().is_some_and(|h| h.done))
        };
        {
            let mut vs = lock(&self.views);
            // Raised to the command's generation when the job acknowledges it.
            let min_generation = 0;
            let mut view = View::new(sql, &mode, display_id.clone(), parent.clone(), opts.view.clone(), min_generation);
            view.save = save;
            vs.views.insert(name.to_string(), view);
            view::share_overlays(vs.views.values_mut());
            vs.acks.clear();
        }
        if self.job_alive() && !finishing {
            self.send(cmd);
        } else {
            if let Some(old) = self.job.take().filter(|_| finishing) {
                old.stop();
            }
            self.start_job(&source, opts)?;
        }
        // Wait for this query's first frame (or its error) so that a bad query fails its cell.
        let t = Instant::now();
        let mut restarted = !self.job_alive();
        loop {
            let (died, ended) = {
                let st = lock(&self.status);
                (st.died.clone(), st.ended.is_some())
            };
            {
                let mut vs = lock(&self.views);
                // This query's ack (another query's refusal is that query's cell's error).
                match vs.acks.iter().find(|a| a.query.as_deref() == Some(name)).map(|a| a.outcome.clone()) {
                    Some(AckOutcome::Rejected(e)) => {
                        vs.views.remove(name);
                        return Err(CellError::new("LiveQueryError", e));
                    }
                    Some(AckOutcome::Accepted(cmd)) => {
                        if let (Some(v), Some(g)) = (vs.views.get_mut(name), cmd.generation()) {
                            v.min_generation = g;
                        }
                    }
                    None => {}
                }
                // The first frame with a result (columns), or the final one; after a few
                // seconds without events, whatever came (the display shows it waiting).
                let patient = t.elapsed() < FIRST_RESULT;
                if let Some(v) = vs.views.get(name) {
                    let has_result = v.result.as_ref().is_some_and(|df| df.width() > 0);
                    if let Some(h) = v.header.as_ref().filter(|h| h.generation >= v.min_generation && (has_result || h.done || h.error.is_some() || !patient)) {
                        if let Some(e) = &h.error {
                            let e = e.clone();
                            vs.views.remove(name);
                            return Err(CellError::new("LiveQueryError", e));
                        }
                        let shown_seq = h.seq;
                        let mut b = render(name, v, None);
                        if !v.look.html_only() {
                            let v = vs.views.get_mut(name).expect("the view is there");
                            // The widget opens with the whole result as its snapshot.
                            v.widget_seq += 1;
                            v.widget_rows = v.result.as_ref().map(|df| WidgetRows::whole(v.widget_seq, df.height()));
                            let id = open_view_widget(&self.widgets, name, v, self.widget_messages(name));
                            b["application/vnd.jupyter.widget-view+json"] = Widgets::view(&id);
                            v.widget = Some(id);
                            v.widget_sent = Some(Instant::now());
                        }
                        drop(vs);
                        self.publisher.publish(Some(parent), "display_data", json!({"data": b, "metadata": {}, "transient": {"display_id": display_id}}));
                        // A newer frame may have come while this one was shown: show it too.
                        let vs = lock(&self.views);
                        if let Some(v) = vs.views.get(name).filter(|v| v.header.as_ref().is_some_and(|h| h.seq != shown_seq)) {
                            if v.widget.is_none() || v.header.as_ref().is_some_and(|h| h.done) {
                                publish_fallback(&self.publisher, parent, name, v, None);
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
                let unanswered = vs.views.get(name).is_some_and(|v| v.header.is_none());
                if ended && unanswered && !restarted {
                    drop(vs);
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

    /// What the widget of live query `name` asks (on the shell thread): sync (send the result
    /// again), pause, reset.
    fn widget_messages(&self, name: &str) -> OnCustom {
        let (views, widgets, commands, query) = (self.views.clone(), self.widgets.clone(), self.commands.clone(), name.to_string());
        Arc::new(move |msg: &Value| {
            let mut vs = lock(&views);
            let Some(v) = vs.views.get_mut(&query) else { return };
            let Some(id) = v.widget.clone() else { return };
            match msg.get("type").and_then(Value::as_str) {
                Some("sync") => {
                    if let Some(df) = &v.result {
                        v.widget_seq += 1;
                        v.widget_rows = Some(WidgetRows::whole(v.widget_seq, df.height()));
                        widgets.custom(&id, json!({"type": "replace", "seq": v.widget_seq}), vec![widget_ipc(df, &v.array_look())]);
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
                        widgets.custom(&id, json!({"type": "replace", "seq": v.widget_seq}), vec![widget_ipc(&df.clear(), &v.array_look())]);
                    }
                }
                _ => {}
            }
        })
    }

    fn send(&self, cmd: Command) {
        if let Some(c) = &self.commands {
            let _ = c.send(cmd);
        }
    }

    /// Starts a job on `source` running every live query.
    fn start_job(&mut self, source: &str, opts: &LiveOptions) -> Result<(), CellError> {
        let mut spec = JobSpec::new(source);
        spec.connect = self.endpoint.clone();
        // Killed outright, the kernel cannot stop its job: the collector watches it instead.
        spec.driver = Some(contract::spec::Driver::this_process());
        spec.calib_dir = self.calib_dir.clone();
        spec.calib = self.calib.clone();
        spec.frame_rate = opts.rate.unwrap_or(5.0);
        self.synced.clear();
        {
            let mut vs = lock(&self.views);
            // A new job numbers generations from 0 again; its first frames are awaited (the
            // last results stay shown and as tables meanwhile).
            for v in vs.views.values_mut() {
                v.min_generation = 0;
                v.header = None;
            }
            spec.functions = vs.libraries.iter().filter_map(|c| match c {
                Command::Library { hash, .. } => Some(hash.clone()),
                _ => None,
            }).collect();
            spec.queries = vs
                .views
                .iter()
                .map(|(n, v)| Command::Set { name: n.clone(), sql: v.sql.clone(), mode: v.mode.clone(), generation: 0, save: v.save.clone() })
                .collect();
        }
        let ranks = opts.ranks.unwrap_or_else(default_ranks).max(1);
        self.job = Some(JobProcess::start(&spec, ranks, opts, &self.status)?);
        Ok(())
    }

    /// `%%function`: a library of event functions `names`, for every job from now on and for
    /// the running one; the live queries calling one of them start afresh (their states
    /// were computed with the old definition). Returns those queries.
    pub fn define_functions(&mut self, library: Command, names: &[String]) -> Vec<String> {
        let calls = |sql: &str| {
            let lower = sql.to_ascii_lowercase();
            names.iter().any(|n| {
                let n = n.to_ascii_lowercase();
                lower.match_indices(&n).any(|(i, _)| {
                    let before = lower[..i].chars().next_back();
                    let after = lower[i + n.len()..].trim_start().chars().next();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') && after == Some('(')
                })
            })
        };
        let mut vs = lock(&self.views);
        // A library all of whose functions are defined again is not needed any more.
        let redefined = |c: &Command| match c {
            Command::Library { hash, .. } => functions::registry::libraries().iter().find(|l| &l.hash == hash).is_some_and(|l| l.signatures.iter().all(|s| names.iter().any(|n| n.eq_ignore_ascii_case(&s.name)))),
            _ => false,
        };
        vs.libraries.retain(|c| !redefined(c));
        vs.libraries.push(library.clone());
        let reset: Vec<(String, Command)> = vs
            .views
            .iter()
            .filter(|(_, v)| calls(&v.sql))
            .map(|(n, v)| (n.clone(), Command::Set { name: n.clone(), sql: v.sql.clone(), mode: v.mode.clone(), generation: 0, save: v.save.clone() }))
            .collect();
        drop(vs);
        if self.job_alive() {
            self.send(library);
            for (_, set) in &reset {
                self.send(set.clone());
            }
        }
        reset.into_iter().map(|(n, _)| n).collect()
    }

    fn has_query(&self, name: &str) -> Result<(), CellError> {
        if lock(&self.views).views.contains_key(name) {
            Ok(())
        } else {
            Err(CellError::new("KeyError", format!("no live query named {name}")))
        }
    }

    /// `%live status|wait|stop|reset|restart`.
    pub fn command(&mut self, command: &LiveCommand, catalog: &mut query::Catalog) -> Result<Value, CellError> {
        match command {
            LiveCommand::Status => Ok(self.status()),
            LiveCommand::Stop(name) => {
                match name {
                    Some(n) => {
                        lock(&self.views).views.remove(n).ok_or_else(|| CellError::new("KeyError", format!("no live query named {n}")))?;
                        self.send(Command::Remove { name: n.clone() });
                    }
                    None => self.send(Command::Stop),
                }
                Ok(json!({"text/plain": "stopping"}))
            }
            LiveCommand::Reset(name) => {
                if let Some(n) = name {
                    self.has_query(n)?;
                }
                self.send(Command::Reset { name: name.clone(), generation: 0 });
                Ok(json!({"text/plain": "reset"}))
            }
            LiveCommand::Wait { name, timeout_s } => {
                // Until the named (or every) query has its final result: lets a notebook run
                // headless end with complete results (and their widget state saved with it).
                if let Some(n) = name {
                    self.has_query(n)?;
                }
                self.wait(name.as_deref(), *timeout_s)?;
                self.sync(catalog);
                Ok(self.status())
            }
            LiveCommand::Restart => {
                let source = self.source.clone().ok_or_else(|| CellError::new("LiveError", "no source: %source …"))?;
                let opts = self.job.as_ref().map(|j| LiveOptions { ranks: Some(j.ranks), ..j.opts.clone() }).unwrap_or_default();
                self.kill();
                // The last results stay as tables until the new job's frames replace them.
                self.sync(catalog);
                self.start_job(&source, &opts)?;
                Ok(json!({"text/plain": format!("restarted the job on {source}")}))
            }
        }
    }

    /// Waits until the named (or every) query is final, then sends the final results again in
    /// this cell (where nbclient records them): widget state and the static fallback.
    fn wait(&self, name: Option<&str>, timeout_s: f64) -> Result<(), CellError> {
        let t = Instant::now();
        loop {
            let (died, ended) = {
                let st = lock(&self.status);
                (st.died.clone(), st.ended.is_some())
            };
            if let Some(d) = died {
                return Err(CellError::new("LiveJobError", d));
            }
            {
                let mut vs = lock(&self.views);
                let finished = vs.views.iter().filter(|(n, _)| name.is_none_or(|x| x == *n)).all(|(_, v)| v.header.as_ref().is_some_and(|h| h.done));
                if finished || (ended && t.elapsed() > Duration::from_secs(2)) {
                    for (n, v) in vs.views.iter_mut() {
                        flush_widget(&self.widgets, n, v);
                        let parent = self.widgets.current().unwrap_or_else(|| v.parent.clone());
                        publish_fallback(&self.publisher, &parent, n, v, None);
                    }
                    return Ok(());
                }
            }
            if t.elapsed().as_secs_f64() > timeout_s {
                return Err(CellError::new("TimeoutError", format!("the live queries were not finished after {timeout_s} s (%live status)")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn status(&self) -> Value {
        let (died, ended) = {
            let st = lock(&self.status);
            (st.died.clone(), st.ended.clone())
        };
        let job = match (&self.job, &died, &ended) {
            (None, _, _) => "no job (a %%live cell starts one)".to_string(),
            (Some(_), Some(d), _) => format!("job DEAD: {d}"),
            (Some(j), None, Some(e)) => format!("job finished ({e}) on {} with {} rank(s)", j.source, j.ranks),
            (Some(j), None, None) => format!("job running on {} with {} rank(s)", j.source, j.ranks),
        };
        let mut names = Vec::new();
        let mut lines = Vec::new();
        for (n, v) in &lock(&self.views).views {
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

    /// Tells the job to stop, and kills it if it does not within 3 s.
    fn kill(&mut self) {
        if let Some(j) = self.job.take() {
            self.send(Command::Stop);
            j.stop();
        }
    }
}

impl Drop for LiveQueries {
    fn drop(&mut self) {
        self.kill();
    }
}
