//! A live display: one query's view in the notebook (its result, its widget and what the
//! widget holds), rendered as the static table + status line and sent to the widget.

use std::time::Instant;

use bytes::Bytes;
use contract::FrameHeader;
use polars::prelude::*;
use serde_json::{json, Value};

use super::images::{ArrayLook, for_widget};
use super::options::ViewOptions;
use crate::display;
use crate::publisher::Publisher;
use crate::transport::Message;
use crate::widgets::{OnCustom, Widgets};

/// One live query as the notebook sees it.
pub struct View {
    pub sql: String,
    pub mode: String,
    /// `--save PATH` (absolute): where the job writes the query's rows.
    pub save: Option<String>,
    pub display_id: String,
    pub parent: Message,
    pub header: Option<FrameHeader>,
    pub result: Option<DataFrame>,
    /// The frame generation this view waits for (after a replace or reset).
    pub min_generation: u64,
    /// The widget showing this result (None: plain HTML displays, `--view html`).
    pub widget: Option<String>,
    pub look: ViewOptions,
    /// The widget gets no new data while paused (status still updates).
    pub paused: bool,
    /// A result the widget has not been sent yet, and when it was last sent one.
    pub widget_dirty: bool,
    pub widget_sent: Option<Instant>,
    /// The job frame whose rows `result` holds (the base a delta frame must extend).
    pub result_seq: Option<u64>,
    /// The job was asked to send the whole result again (a delta did not fit).
    pub resend_asked: bool,
    /// The newest data message sent to the widget (its snapshot's or custom message's seq).
    pub widget_seq: u64,
    /// What the widget holds, so that it is sent only the change (None: send it all).
    pub widget_rows: Option<WidgetRows>,
    /// ROIs and rings to draw on this view's images (from every live query's functions over
    /// the same detector image), and what the widget was last sent.
    pub overlays: Value,
    pub overlays_sent: Value,
    /// What the SQL says of the result's array columns (axes, overlays), read once.
    pub layout: query::layout::Layout,
}

impl View {
    /// A view waiting for its query's first frame (from `min_generation` on).
    pub fn new(sql: &str, mode: &str, display_id: String, parent: Message, look: ViewOptions, min_generation: u64) -> Self {
        View {
            sql: sql.into(),
            mode: mode.into(),
            save: None,
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
            overlays: json!([]),
            overlays_sent: json!([]),
            layout: query::layout::layout(sql, &Default::default()),
        }
    }

    /// How the result's array columns are drawn (shapes from the job, axes from the SQL).
    pub fn array_look(&self) -> ArrayLook {
        let shapes = self.header.as_ref().map(|h| h.shapes.clone()).unwrap_or_default();
        ArrayLook::new(&shapes, &self.layout)
    }
}

/// Sets each view's overlays: the ROIs and rings any live query's array functions use on the
/// image its array columns come from (the ROI-sum query's rectangle on the mean image).
pub fn share_overlays<'a>(views: impl Iterator<Item = &'a mut View>) {
    let mut views: Vec<&mut View> = views.collect();
    let marks_of: Vec<_> = views.iter().map(|v| v.layout.overlays.clone()).collect();
    for v in views.iter_mut() {
        let mut marks = Vec::new();
        for src in v.layout.sources.values() {
            for other in &marks_of {
                for o in other.get(src).into_iter().flatten() {
                    let o = json!(o);
                    if !marks.contains(&o) {
                        marks.push(o);
                    }
                }
            }
        }
        v.overlays = Value::Array(marks);
    }
}

/// The rows a widget holds: the newest `held` of the result as it was at widget message
/// `seq`; since then `left` rows of that result are still in the view's result (the others
/// were its oldest, dropped) and `appended` rows came after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WidgetRows {
    pub seq: u64,
    pub held: usize,
    pub left: usize,
    pub appended: usize,
}

impl WidgetRows {
    /// The widget was sent the newest rows of a result of `rows` rows.
    pub fn whole(seq: u64, rows: usize) -> Self {
        WidgetRows { seq, held: rows.min(WIDGET_MAX_ROWS), left: rows, appended: 0 }
    }

    /// The view's result lost its `drop` oldest rows and gained `appended` new ones.
    pub fn changed(&mut self, drop: usize, appended: usize) {
        let from_old = drop.min(self.left);
        self.left -= from_old;
        self.appended = self.appended.saturating_sub(drop - from_old) + appended;
    }

    /// The message bringing the widget up to date: its oldest rows to drop and how many of
    /// the result's newest rows to append (None: nothing changed).
    pub fn catch_up(&self) -> Option<(usize, usize)> {
        if self.appended >= WIDGET_MAX_ROWS {
            return Some((self.held, WIDGET_MAX_ROWS));
        }
        let drop = self.held - self.held.min(self.left);
        (drop > 0 || self.appended > 0).then_some((drop, self.appended))
    }
}

/// Widget updates per second at most (the display's rate; frames in between are coalesced).
pub fn display_rate_hz() -> f64 {
    std::env::var("BEAMTIME_DISPLAY_HZ").ok().and_then(|v| v.parse().ok()).filter(|r: &f64| *r > 0.0).unwrap_or(10.0)
}

/// Rows a widget snapshot holds at most (the newest): keeps comm messages and saved widget
/// state small whatever the result's size.
pub const WIDGET_MAX_ROWS: usize = 10_000;

/// Arrow IPC stream bytes for the browser: the oldest compatibility level (no view types,
/// which apache-arrow JS may not read), at most the newest `WIDGET_MAX_ROWS` rows.
pub fn widget_ipc(df: &DataFrame, look: &ArrayLook) -> Bytes {
    let df = if df.height() > WIDGET_MAX_ROWS { df.tail(Some(WIDGET_MAX_ROWS)) } else { df.clone() };
    let (mut df, metadata) = for_widget(&df, look);
    match query::df_to_ipc_stream_with(&mut df, &metadata) {
        Ok(buf) => Bytes::from(buf),
        Err(e) => {
            eprintln!("beamtime kernel: cannot encode a widget snapshot: {e}");
            Bytes::new()
        }
    }
}

/// A widget showing a finished result (`%%sql --view …`): no live query behind it.
pub fn open_result_widget(widgets: &Widgets, parent: &Message, title: &str, df: &DataFrame, look: &ViewOptions, arrays: &ArrayLook) -> String {
    let mut traits = serde_json::Map::new();
    traits.insert("kind".into(), json!(look.kind.clone().unwrap_or_else(|| "auto".into())));
    traits.insert("x".into(), json!(look.x));
    traits.insert("y".into(), json!(look.y));
    traits.insert("title".into(), json!(title));
    traits.insert("status".into(), json!({"query": title, "events": df.height(), "done": true}));
    traits.insert("max_rows".into(), json!(WIDGET_MAX_ROWS));
    widgets.open(parent, traits, vec![("snapshot".into(), widget_ipc(df, arrays))], None)
}

/// The status trait of the widget (names as the front end expects them).
fn widget_status(name: &str, h: Option<&FrameHeader>, paused: bool, note: Option<&str>) -> Value {
    match h {
        None => json!({"query": name, "paused": paused}),
        Some(h) => json!({
            "query": name, "seq": h.seq, "mode": h.mode, "events": h.events_read, "included": h.events_included,
            "dropped": h.events_dropped, "rate": h.rate_hz, "mean_rate": h.mean_rate_hz, "ranks_alive": h.ranks_alive, "ranks_total": h.ranks_total,
            "stalled": h.ranks_stalled, "dead": h.ranks_dead, "age_s": h.newest_age_s, "done": h.done,
            "error": note.map(str::to_string).or_else(|| h.error.clone()), "paused": paused, "notices": h.notices,
        }),
    }
}

/// The status trait of a live view's widget; its seq is that of the data the widget was sent.
pub fn view_status(name: &str, v: &View, note: Option<&str>) -> Value {
    let mut s = widget_status(name, v.header.as_ref(), v.paused, note);
    s["seq"] = json!(v.widget_seq);
    s
}

/// Opens the widget of live query `name`, showing its current result; front-end messages go
/// to `on_custom` (sync, pause, reset). Its id.
pub fn open_view_widget(widgets: &Widgets, name: &str, v: &View, on_custom: OnCustom) -> String {
    let mut traits = serde_json::Map::new();
    traits.insert("kind".into(), json!(v.look.kind.clone().unwrap_or_else(|| "auto".into())));
    traits.insert("x".into(), json!(v.look.x));
    traits.insert("y".into(), json!(v.look.y));
    traits.insert("title".into(), json!(name));
    traits.insert("max_rows".into(), json!(WIDGET_MAX_ROWS));
    traits.insert("status".into(), view_status(name, v, None));
    traits.insert("overlays".into(), v.overlays.clone());
    let look = v.array_look();
    let snapshot = v.result.as_ref().map(|df| widget_ipc(df, &look)).unwrap_or_default();
    widgets.open(&v.parent, traits, vec![("snapshot".into(), snapshot)], Some(on_custom))
}

pub fn status_line(h: &FrameHeader) -> String {
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
        parts.push(format!("lost {:?}", h.ranks_dead));
    }
    if let Some(a) = h.newest_age_s {
        parts.push(format!("age {a:.1} s"));
    }
    parts.push(if h.done { "done".into() } else { format!("mode {}", h.mode) });
    // psana's calibration fallbacks and the constants' origin: said with every status.
    parts.extend(h.notices.iter().map(|n| format!("note: {n}")));
    parts.join(" · ")
}

pub fn render(name: &str, view: &View, extra: Option<&str>) -> Value {
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
    // Images and profiles too: inline PNGs and SVG lines.
    let overlays: Vec<query::layout::Overlay> = serde_json::from_value(view.overlays.clone()).unwrap_or_default();
    let look = view.array_look();
    let svg = format!("{}{}{svg}", display::images_html(df, &look.shapes, &overlays), display::profiles_svg(df, &look.shapes, &look.axes));
    let html = format!("{svg}{}<div class=\"beamtime-status\"><small>{}</small></div>", b["text/html"].as_str().unwrap_or(""), display::escape(&status));
    let plain = format!("{}\n{status}", b["text/plain"].as_str().unwrap_or(""));
    json!({"text/html": html, "text/plain": plain})
}

/// Sends the view's newest rows and status to its widget (only the status while paused):
/// what changed as a custom `append` when the widget holds the rows it extends, else the whole
/// result as its snapshot (always when final, so that saved widget state is complete).
pub fn flush_widget(widgets: &Widgets, name: &str, v: &mut View) {
    let Some(id) = v.widget.clone() else {
        v.widget_dirty = false;
        return;
    };
    let done = v.header.as_ref().is_some_and(|h| h.done);
    let mut binary = Vec::new();
    let look = v.array_look();
    if let (Some(df), false) = (&v.result, v.paused) {
        // Images go whole (binned, the newest rows): appending frames would pile them up.
        match v.widget_rows.filter(|_| !done && !look.has_images()) {
            Some(w) => {
                if let Some((drop, append)) = w.catch_up() {
                    v.widget_seq += 1;
                    let rows = widget_ipc(&df.tail(Some(append)), &look);
                    widgets.custom(
                        &id,
                        json!({"type": "append", "seq": v.widget_seq, "prev": w.seq, "drop": drop}),
                        vec![rows],
                    );
                    let held = (w.held - drop + append).min(WIDGET_MAX_ROWS);
                    v.widget_rows = Some(WidgetRows { seq: v.widget_seq, held, left: df.height(), appended: 0 });
                }
            }
            None => {
                v.widget_seq += 1;
                binary.push(("snapshot".to_string(), widget_ipc(df, &look)));
                v.widget_rows = Some(WidgetRows::whole(v.widget_seq, df.height()));
            }
        }
    }
    let mut changes = serde_json::Map::new();
    changes.insert("status".into(), view_status(name, v, None));
    if v.overlays != v.overlays_sent {
        changes.insert("overlays".into(), v.overlays.clone());
        v.overlays_sent = v.overlays.clone();
    }
    widgets.update(&id, changes, binary);
    v.widget_dirty = false;
    v.widget_sent = Some(Instant::now());
}

/// Rewrites a view's display in place (update_display_data, parented to `parent`): its widget,
/// when it has one, and the static fallbacks with the view's current result.
pub fn publish_fallback(publisher: &Publisher, parent: &Message, name: &str, v: &View, extra: Option<&str>) {
    let mut b = render(name, v, extra);
    if let Some(id) = &v.widget {
        b["application/vnd.jupyter.widget-view+json"] = Widgets::view(id);
    }
    publisher.publish(Some(parent), "update_display_data", json!({"data": b, "metadata": {}, "transient": {"display_id": v.display_id}}));
}

#[cfg(test)]
mod tests {
    use super::*;

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
