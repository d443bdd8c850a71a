//! Rich display of tables: `text/html` (head and tail, shape, types) and `text/plain`.

use polars::prelude::*;
use serde_json::{json, Value};

/// Rows shown before eliding the middle of a long table.
pub const DEFAULT_ROWS: usize = 20;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn cell(v: AnyValue) -> String {
    match v {
        AnyValue::Null => "null".into(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Float64(x) => format_float(x),
        AnyValue::Float32(x) => format_float(x as f64),
        other => {
            let s = other.to_string();
            if s.len() > 80 { format!("{}…", &s[..s.char_indices().nth(79).map_or(s.len(), |(i, _)| i)]) } else { s }
        }
    }
}

fn format_float(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e7 || x.abs() < 1e-4) { format!("{x:.6e}") } else { format!("{}", (x * 1e6).round() / 1e6) }
}

/// Row indices to show: all, or the first and last `rows / 2`.
fn shown_rows(height: usize, rows: usize) -> (Vec<usize>, bool) {
    if height <= rows {
        ((0..height).collect(), false)
    } else {
        let half = rows / 2;
        ((0..half).chain(height - half..height).collect(), true)
    }
}

/// A numeric column as f64 values (None: absent or not numeric); nulls are NaN.
fn numbers(df: &DataFrame, name: &str) -> Option<Vec<f64>> {
    let c = df.column(name).ok()?;
    if !c.dtype().is_primitive_numeric() {
        return None;
    }
    let f = c.cast(&DataType::Float64).ok()?;
    Some(f.f64().ok()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// An inline SVG of a plot (`line`, `scatter` or `hist` bars) of `y` against `x` (by default
/// the first numeric column and the next one), for viewers without widgets (nbconvert,
/// GitHub): the static twin of the live plot. None when the table has nothing to plot.
pub fn svg_plot(df: &DataFrame, kind: &str, x: Option<&str>, y: Option<&str>) -> Option<String> {
    if !matches!(kind, "line" | "scatter" | "hist") || df.height() == 0 {
        return None;
    }
    let numeric: Vec<String> = df.columns().iter().filter(|c| c.dtype().is_primitive_numeric()).map(|c| c.name().to_string()).collect();
    let xname = x.map(str::to_string).or_else(|| numeric.first().cloned())?;
    let yname = y.map(str::to_string).or_else(|| numeric.iter().find(|c| **c != xname).cloned())?;
    let (xs, ys) = (numbers(df, &xname)?, numbers(df, &yname)?);
    let pts: Vec<(f64, f64)> = xs.into_iter().zip(ys).filter(|(a, b)| a.is_finite() && b.is_finite()).take(5000).collect();
    if pts.is_empty() {
        return None;
    }
    let (w, h, m) = PLOT;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(a, b) in &pts {
        (x0, x1, y0, y1) = (x0.min(a), x1.max(a), y0.min(b), y1.max(b));
    }
    if kind == "hist" {
        y0 = y0.min(0.0);
    }
    let (dx, dy) = ((x1 - x0).max(f64::MIN_POSITIVE), (y1 - y0).max(f64::MIN_POSITIVE));
    let sx = |a: f64| m + (a - x0) / dx * (w - 2.0 * m);
    let sy = |b: f64| h - m - (b - y0) / dy * (h - 2.0 * m);
    let mut marks = String::new();
    match kind {
        "line" => {
            let mut sorted = pts.clone();
            sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
            let path: Vec<String> = sorted.iter().map(|&(a, b)| format!("{:.1},{:.1}", sx(a), sy(b))).collect();
            marks.push_str(&format!("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>", path.join(" ")));
            for &(a, b) in &sorted {
                marks.push_str(&format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"#1f77b4\"/>", sx(a), sy(b)));
            }
        }
        "scatter" => {
            for &(a, b) in &pts {
                marks.push_str(&format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.5\" fill=\"#1f77b4\" fill-opacity=\"0.6\"/>", sx(a), sy(b)));
            }
        }
        _ => {
            let bw = ((w - 2.0 * m) / pts.len() as f64 * 0.9).max(1.0);
            for &(a, b) in &pts {
                let (top, base) = (sy(b), sy(0.0_f64.max(y0)));
                marks.push_str(&format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"#1f77b4\"/>",
                    sx(a),
                    top.min(base),
                    (base - top).abs()
                ));
            }
        }
    }
    Some(svg_frame("beamtime-plot", &marks, (x0, x1, y0, y1), &xname, &yname))
}

/// Width, height and margin of the inline plots (px).
const PLOT: (f64, f64, f64) = (480.0, 240.0, 36.0);

/// The frame every inline plot shares: 480×240, a grey box, the x and y ranges at its corners,
/// the x label below and the title above, `marks` drawn inside.
fn svg_frame(class: &str, marks: &str, (x0, x1, y0, y1): (f64, f64, f64, f64), xlabel: &str, title: &str) -> String {
    let (w, h, m) = PLOT;
    let label = |v: f64| escape(&format_float(v));
    format!(
        "<svg class=\"{class}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\
         <rect x=\"{m}\" y=\"{m}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#ccc\"/>{marks}\
         <text x=\"{m}\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text>\
         <text x=\"2\" y=\"{}\" font-size=\"10\">{}</text><text x=\"2\" y=\"{}\" font-size=\"10\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text><text x=\"{}\" y=\"12\" font-size=\"11\" text-anchor=\"middle\">{}</text></svg>",
        w - 2.0 * m,
        h - 2.0 * m,
        h - m + 12.0,
        label(x0),
        w - m,
        h - m + 12.0,
        label(x1),
        h - m,
        label(y0),
        m + 4.0,
        label(y1),
        w / 2.0,
        h - 4.0,
        escape(xlabel),
        w / 2.0,
        escape(title),
    )
}

/// The display bundle of a table: HTML and plain text.
pub fn table_bundle(title: Option<&str>, df: &DataFrame, rows: usize) -> Value {
    json!({"text/html": html(title, df, rows), "text/plain": plain(title, df, rows)})
}

pub fn html(title: Option<&str>, df: &DataFrame, rows: usize) -> String {
    let (idx, elided) = shown_rows(df.height(), rows);
    let cols = df.columns();
    let mut s = String::from("<div class=\"beamtime-table\">");
    if let Some(t) = title {
        s.push_str(&format!("<b>{}</b> ", escape(t)));
    }
    s.push_str(&format!("<small>shape: ({}, {})</small>", df.height(), df.width()));
    s.push_str("<table><thead><tr>");
    for c in cols {
        s.push_str(&format!("<th>{}</th>", escape(c.name())));
    }
    s.push_str("</tr><tr>");
    for c in cols {
        s.push_str(&format!("<td><small><i>{}</i></small></td>", escape(&c.dtype().to_string())));
    }
    s.push_str("</tr></thead><tbody>");
    for (k, &r) in idx.iter().enumerate() {
        if elided && k == idx.len() / 2 {
            s.push_str("<tr>");
            for _ in cols {
                s.push_str("<td>…</td>");
            }
            s.push_str("</tr>");
        }
        s.push_str("<tr>");
        for c in cols {
            let v = c.get(r).map(cell).unwrap_or_default();
            s.push_str(&format!("<td>{}</td>", escape(&v)));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div>");
    s
}

pub fn plain(title: Option<&str>, df: &DataFrame, rows: usize) -> String {
    let (idx, elided) = shown_rows(df.height(), rows);
    let cols = df.columns();
    let mut grid: Vec<Vec<String>> = vec![
        cols.iter().map(|c| c.name().to_string()).collect(),
        cols.iter().map(|c| c.dtype().to_string()).collect(),
    ];
    for (k, &r) in idx.iter().enumerate() {
        if elided && k == idx.len() / 2 {
            grid.push(cols.iter().map(|_| "…".to_string()).collect());
        }
        grid.push(cols.iter().map(|c| c.get(r).map(cell).unwrap_or_default()).collect());
    }
    let widths: Vec<usize> = (0..cols.len()).map(|j| grid.iter().map(|row| row[j].chars().count()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    if let Some(t) = title {
        s.push_str(t);
        s.push(' ');
    }
    s.push_str(&format!("shape: ({}, {})\n", df.height(), df.width()));
    for (i, row) in grid.iter().enumerate() {
        let line: Vec<String> = row.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        s.push_str(line.join(" │ ").trim_end());
        s.push('\n');
        if i == 1 {
            s.push_str(&widths.iter().map(|w| "─".repeat(*w)).collect::<Vec<_>>().join("─┼─"));
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_become_inline_svg() {
        let df = df!("delay" => [-1.0, 0.0, 1.0, 2.0], "signal" => [0.1, 0.1, 0.5, 0.9], "name" => ["a", "b", "c", "d"]).unwrap();
        let svg = svg_plot(&df, "line", None, None).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains(">delay<") && svg.contains(">signal<"));
        assert_eq!(svg.matches("<circle").count(), 4);
        let bars = svg_plot(&df, "hist", Some("delay"), Some("signal")).unwrap();
        assert_eq!(bars.matches("<rect").count(), 1 + 4);
        assert!(svg_plot(&df, "table", None, None).is_none());
        assert!(svg_plot(&df, "line", Some("name"), None).is_none(), "strings are not plotted");
    }

    #[test]
    fn head_and_tail_with_escaping() {
        let df = df!("a<b" => (0..30).collect::<Vec<i64>>(), "s" => (0..30).map(|i| format!("x&{i}")).collect::<Vec<_>>()).unwrap();
        let h = html(Some("t"), &df, 6);
        assert!(h.contains("<th>a&lt;b</th>"));
        assert!(h.contains("<td>x&amp;0</td>") && h.contains("<td>x&amp;29</td>"));
        assert!(!h.contains("<td>x&amp;15</td>"));
        assert!(h.contains("shape: (30, 2)"));
        let p = plain(None, &df, 6);
        assert!(p.lines().any(|l| l.starts_with("29")), "{p}");
        assert!(p.contains('…'));
    }
}

/// Inline PNGs of a result's image columns (`shapes`: column → shape), the last row of each
/// (the newest, or the last group), with the overlays drawn and the colour range said: the
/// static twin of the image widget. Empty when the result holds no image.
pub fn images_html(
    df: &DataFrame,
    shapes: &std::collections::BTreeMap<String, Vec<usize>>,
    overlays: &[query::layout::Overlay],
) -> String {
    let mut html = String::new();
    for (name, shape) in shapes {
        let (Some(&cols), true) = (shape.last(), shape.len() >= 2) else {
            continue;
        };
        let rows: usize = shape[..shape.len() - 1].iter().product();
        let Ok(c) = df.column(name) else { continue };
        let Ok(list) = c
            .as_materialized_series()
            .cast(&DataType::List(Box::new(DataType::Float32)))
        else {
            continue;
        };
        let Some(last) = list
            .list()
            .ok()
            .and_then(|l| l.len().checked_sub(1).and_then(|i| l.get_as_series(i)))
        else {
            continue;
        };
        let Ok(v) = last.f32().map(|v| {
            v.iter()
                .map(|x| x.unwrap_or(f32::NAN))
                .collect::<Vec<f32>>()
        }) else {
            continue;
        };
        if v.len() != rows * cols {
            continue;
        }
        let Some(range) = crate::png::auto_range(&v) else {
            continue;
        };
        let png = crate::png::image_png(&v, rows, cols, range, overlays);
        let which = if df.height() > 1 {
            format!(", row {} of {}", df.height(), df.height())
        } else {
            String::new()
        };
        html.push_str(&format!(
            "<figure class=\"beamtime-figure\">{}<figcaption><small>{} ({rows}×{cols}{which}), colour {} … {}</small></figcaption></figure>",
            crate::png::img_tag(&png, &escape(name)),
            escape(name),
            format_float(range.0 as f64),
            format_float(range.1 as f64)
        ));
    }
    html
}

/// An inline SVG of a result's profile columns (1-D arrays: `radial`, `projection`), one line
/// per row (the newest 12), x from the query's axis (`axes`) or the bin index: the static twin
/// of the profile widget. Empty when the result holds no profile.
pub fn profiles_svg(df: &DataFrame, shapes: &std::collections::BTreeMap<String, Vec<usize>>, axes: &std::collections::BTreeMap<String, query::layout::Axis>) -> String {
    const COLOURS: [&str; 6] = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725", "#b8de29"];
    let mut out = String::new();
    for c in df.columns() {
        let name = c.name().as_str();
        if shapes.contains_key(name) || name.to_ascii_lowercase().starts_with("hist") || !matches!(c.dtype(), DataType::List(_) | DataType::Array(..)) {
            continue;
        }
        let Ok(list) = c.as_materialized_series().cast(&DataType::List(Box::new(DataType::Float64))) else { continue };
        let Ok(ca) = list.list() else { continue };
        let first = ca.len().saturating_sub(12);
        let rows: Vec<Vec<f64>> = (first..ca.len())
            .filter_map(|i| ca.get_as_series(i))
            .filter_map(|s| s.f64().ok().map(|v| v.iter().map(|x| x.unwrap_or(f64::NAN)).collect()))
            .filter(|v: &Vec<f64>| v.len() >= 2)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let (start, step, xlabel) = axes.get(name).map_or((0.0, 1.0, "bin"), |a| (a.start, a.step, a.label.as_str()));
        let finite = rows.iter().flatten().copied().filter(|v| v.is_finite());
        let (y0, y1) = finite.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if y0 > y1 {
            continue;
        }
        let n = rows.iter().map(Vec::len).max().unwrap_or(2);
        let (x0, x1) = (start, start + (n - 1) as f64 * step);
        let (w, h, m) = PLOT;
        let sx = |x: f64| m + (x - x0) / (x1 - x0).max(f64::MIN_POSITIVE) * (w - 2.0 * m);
        let sy = |y: f64| h - m - (y - y0) / (y1 - y0).max(f64::MIN_POSITIVE) * (h - 2.0 * m);
        let mut lines = String::new();
        for (k, row) in rows.iter().enumerate() {
            // NaN bins (empty rings) break the line.
            for run in row.iter().enumerate().collect::<Vec<_>>().split(|(_, v)| !v.is_finite()) {
                let pts: Vec<String> = run.iter().map(|(i, v)| format!("{:.1},{:.1}", sx(start + *i as f64 * step), sy(**v))).collect();
                if !pts.is_empty() {
                    lines.push_str(&format!("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.2\" points=\"{}\"/>", COLOURS[k % COLOURS.len()], pts.join(" ")));
                }
            }
        }
        out.push_str(&svg_frame("beamtime-profile", &lines, (x0, x1, y0, y1), xlabel, &format!("{name} ({} rows)", rows.len())));
    }
    out
}
