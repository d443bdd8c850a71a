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
