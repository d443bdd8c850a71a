//! `%%sql`: SQL over the kernel's tables and files, shown as a table (and a widget with --view).

use serde_json::json;

use super::syntax::{Call, Session};
use crate::cell::{Bundle, CellError};
use crate::display;
use crate::live::images::ArrayLook;
use crate::live::view::open_result_widget;
use crate::widgets::Widgets;

pub fn sql(call: &Call, s: &mut Session) -> Result<Option<Bundle>, CellError> {
    let (view, extra) = call.view_options()?;
    if let Some(a) = extra.first() {
        return Err(call.usage_error(format!("unexpected `{a}` (options: --name T, --rows N, --view KIND, x=COL, y=COL)")));
    }
    let rows = match call.args.opt("--rows") {
        Some(r) => r.parse::<usize>().map_err(|_| call.usage_error(format!("--rows {r}: a number of rows expected")))?,
        None => display::DEFAULT_ROWS,
    };
    if call.body.trim().is_empty() {
        return Err(call.usage_error("%%sql needs a query on the lines below it"));
    }
    let ctx = call.ctx;
    let df = ctx.interruptible("the query", {
        let cat = s.catalog.clone();
        let q = call.body.to_string();
        move || cat.sql(&q)
    })?;
    let title = call.args.opt("--name").map(str::to_string);
    if let Some(n) = &title {
        s.catalog.insert(n, df.clone())?;
    }
    let mut bundle = display::table_bundle(title.as_deref(), &df, rows);
    // Image and profile columns (a mean image over a run) drawn inline: the table alone shows numbers.
    let layout = query::layout::layout(&call.body, s.catalog.shapes());
    let overlays: Vec<query::layout::Overlay> = layout.overlays.values().flatten().cloned().collect();
    let images = display::images_html(&df, &layout.shapes, &overlays) + &display::profiles_svg(&df, &layout.shapes, &layout.axes);
    if !images.is_empty() {
        bundle["text/html"] = json!(format!("{images}{}", bundle["text/html"].as_str().unwrap_or("")));
    }
    // `--view KIND`: the result as a widget (a plot, or the sortable table), with the static
    // table beside it for viewers without widgets.
    if let Some(kind) = view.kind.as_deref().filter(|k| *k != "html") {
        let arrays = ArrayLook::new(&Default::default(), &layout);
        let id = open_result_widget(s.widgets, ctx.parent, title.as_deref().unwrap_or("sql"), &df, &view, &arrays);
        bundle["application/vnd.jupyter.widget-view+json"] = Widgets::view(&id);
        let y = view.y.as_ref().and_then(|y| y.first()).map(String::as_str);
        if let Some(svg) = display::svg_plot(&df, kind, view.x.as_deref(), y) {
            bundle["text/html"] = json!(format!("{svg}{}", bundle["text/html"].as_str().unwrap_or("")));
        }
    }
    Ok(Some(bundle))
}
