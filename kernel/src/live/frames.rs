//! The frame pump: the job's messages (hello, acks, result frames, its end) taken into the
//! live views — whole results and row deltas applied — and sent on to their displays.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract::{codec, Ack, AckOutcome, Command, FrameHeader, JobEndpoint, JobMessage};

use super::job::JobStatus;
use super::view::{display_rate_hz, flush_widget, publish_fallback, view_status, View};
use crate::lock::lock;
use crate::publisher::Publisher;
use crate::widgets::Widgets;

/// The live queries' views, shared by the pump, the cell thread and widget messages.
#[derive(Default)]
pub struct Views {
    pub views: BTreeMap<String, View>,
    /// The job's answers to query commands, until the cell that sent them has read its own.
    pub acks: Vec<Ack>,
    /// The event-function libraries (`%%function`), oldest first: every job gets them when it
    /// says hello, before its queries start.
    pub libraries: Vec<contract::Command>,
}

/// Moves the job's messages into the views and the job's status, and on to the live displays:
/// widgets get the newest result at most at the display rate; the static fallback (HTML/text)
/// of a widget's display is rewritten only when the result is final (rewriting it re-creates
/// the views). Runs as long as the kernel.
pub fn pump(ep: JobEndpoint, views: Arc<Mutex<Views>>, status: Arc<Mutex<JobStatus>>, publisher: Publisher, widgets: Arc<Widgets>) {
    let mut last_died: Option<String> = None;
    let period = Duration::from_secs_f64(1.0 / display_rate_hz());
    loop {
        match ep.recv_timeout(Duration::from_millis(20)) {
            // A job of another contract version: nothing it says can be trusted.
            Some(Err(e)) => {
                lock(&status).died.get_or_insert_with(|| e.to_string());
            }
            Some(Ok(JobMessage::Hello(_))) => {
                lock(&status).running = true;
                for l in lock(&views).libraries.clone() {
                    ep.send(l);
                }
            }
            Some(Ok(JobMessage::Finished(f))) => {
                let mut st = lock(&status);
                st.ended = Some(match (&f.error, f.outcome) {
                    (Some(e), _) => format!("error: {e}"),
                    (None, contract::Outcome::RankLost) => format!("incomplete: {} events were lost with lost ranks ({})", f.events_lost, f.lost.join("; ")),
                    (None, contract::Outcome::Stopped) => "stopped".into(),
                    _ => "end of data".into(),
                });
                if let Some(e) = f.error {
                    st.died.get_or_insert_with(|| format!("the job stopped: {e}"));
                }
            }
            Some(Ok(JobMessage::Ack(a))) => {
                let mut vs = lock(&views);
                // Frames older than an acknowledged set or reset are not shown.
                if let AckOutcome::Accepted(cmd) = &a.outcome {
                    if let Some(g) = cmd.generation() {
                        for (n, v) in vs.views.iter_mut() {
                            if a.query.as_ref().is_none_or(|x| x == n) {
                                v.min_generation = v.min_generation.max(g);
                            }
                        }
                    }
                }
                vs.acks.push(a)
            }
            Some(Ok(JobMessage::Frame(h, ipc))) => {
                let mut vs = lock(&views);
                let Some(v) = vs.views.get_mut(&h.query) else { continue };
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
                    publish_fallback(&publisher, &parent, &h.query, v, None);
                }
                v.widget_dirty = true;
                if h.done {
                    flush_widget(&widgets, &h.query, v);
                }
            }
            None => {}
        }
        let died = lock(&status).died.clone();
        let mut vs = lock(&views);
        for (n, v) in vs.views.iter_mut() {
            if v.widget_dirty && v.widget_sent.is_none_or(|t| t.elapsed() >= period) {
                flush_widget(&widgets, n, v);
            }
        }
        // A dead job shows in every live display.
        if died.is_some() && died != last_died {
            last_died = died;
            let note = format!("JOB DEAD: {} (%live restart)", last_died.clone().unwrap_or_default());
            for (n, v) in vs.views.iter_mut() {
                publish_fallback(&publisher, &v.parent, n, v, Some(&note));
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
pub fn take_rows(v: &mut View, h: &FrameHeader, ipc: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::options::ViewOptions;
    use crate::live::view::WidgetRows;
    use crate::transport::Message;
    use polars::prelude::*;
    use serde_json::json;
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

}
