//! What a `%%live` cell and a `%live` line ask for, once parsed: the job's options, how a
//! result is shown, and the `%live` subcommands.

/// `%%live NAME [--ranks N] [--rate HZ] [--mode M | --window W] [--launcher T] [--save PATH] [--view …]`.
#[derive(Clone, Debug, Default)]
pub struct LiveOptions {
    pub ranks: Option<usize>,
    pub rate: Option<f64>,
    pub mode: Option<String>,
    pub launcher: Option<String>,
    /// `--save PATH`: the query's rows (an aggregate's final result) saved by the job.
    pub save: Option<String>,
    pub view: ViewOptions,
}

/// How a result is shown: `--view KIND [x=COL] [y=COL[,COL]]`.
#[derive(Clone, Debug, Default)]
pub struct ViewOptions {
    /// auto, table, line, scatter, hist, heatmap, strip, or html (no widget).
    pub kind: Option<String>,
    pub x: Option<String>,
    pub y: Option<Vec<String>>,
}

impl ViewOptions {
    pub fn html_only(&self) -> bool {
        self.kind.as_deref() == Some("html")
    }
}

/// The views the widget knows (`html` = no widget, the static table only).
pub const VIEW_KINDS: &[&str] = &["auto", "table", "line", "scatter", "hist", "heatmap", "strip", "image", "profile", "html"];

/// `%live status | wait [NAME] [--timeout S] | stop [NAME] | reset [NAME] | restart`.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveCommand {
    Status,
    /// Until the named (or every) query has its final result, at most `timeout_s`.
    Wait { name: Option<String>, timeout_s: f64 },
    /// One query, or the whole job.
    Stop(Option<String>),
    Reset(Option<String>),
    Restart,
}

/// The `%live` subcommands, as completion offers them.
pub const LIVE_SUBCOMMANDS: &[&str] = &["status", "wait", "stop", "reset", "restart"];

/// How long `%live wait` waits without `--timeout`.
pub const DEFAULT_WAIT_S: f64 = 600.0;
