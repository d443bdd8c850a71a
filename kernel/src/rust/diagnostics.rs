//! Compiler errors and evcxr's errors as one cell error: rustc's diagnostics drawn on the
//! cell's own lines.

use crate::cell::CellError;
#[cfg(feature = "rust-cells")]
use super::toolchain::rust_src_installed;

/// Renders one compiler diagnostic on the cell's own lines, rustc style.
pub struct Diagnostic<'a> {
    pub level: &'a str,
    pub code: Option<&'a str>,
    pub message: String,
    /// (start line, start column, end line, end column (exclusive), label, primary); 1-based,
    /// columns in characters.
    pub spans: Vec<(usize, usize, usize, usize, String, bool)>,
    pub notes: Vec<String>,
}

pub const RED: &str = "\x1b[1;31m";
pub const BLUE: &str = "\x1b[1;34m";
pub const BOLD: &str = "\x1b[1m";
pub const RESET: &str = "\x1b[0m";

impl Diagnostic<'_> {
    pub fn render(&self, source: &str) -> Vec<String> {
        let lines: Vec<&str> = source.split('\n').collect();
        let mut out = Vec::new();
        let code = self.code.map(|c| format!("[{c}]")).unwrap_or_default();
        let level = if self.level.is_empty() { "error" } else { self.level };
        out.push(format!("{RED}{level}{code}{RESET}{BOLD}: {}{RESET}", self.message));
        let width = self.spans.iter().map(|s| s.2.to_string().len()).max().unwrap_or(1);
        let pad = " ".repeat(width);
        if let Some(first) = self.spans.iter().find(|s| s.5).or(self.spans.first()) {
            out.push(format!("{pad}{BLUE}-->{RESET} cell:{}:{}", first.0, first.1));
            out.push(format!("{pad} {BLUE}|{RESET}"));
        }
        let mut spans = self.spans.clone();
        spans.sort_by_key(|s| (s.0, s.1));
        let mut shown_line = 0;
        for (l0, c0, l1, c1, label, primary) in &spans {
            let colour = if *primary { RED } else { BLUE };
            let mark = if *primary { '^' } else { '-' };
            let last = (*l1).min(*l0 + 4);
            for l in *l0..=last {
                if l > shown_line {
                    let text = lines.get(l.wrapping_sub(1)).copied().unwrap_or("");
                    out.push(format!("{BLUE}{l:>width$} |{RESET} {text}"));
                    shown_line = l;
                }
            }
            if l1 > &last {
                out.push(format!("{pad} {BLUE}|{RESET} ..."));
            }
            // Carets under the span's first line (to its end when the span goes on).
            let text = lines.get(l0.wrapping_sub(1)).copied().unwrap_or("");
            let chars: Vec<char> = text.chars().collect();
            let start = c0.saturating_sub(1).min(chars.len());
            let end = if l1 == l0 { c1.saturating_sub(1).clamp(start + 1, chars.len().max(start + 1)) } else { chars.len().max(start + 1) };
            let lead: String = chars[..start].iter().map(|&c| if c == '\t' { '\t' } else { ' ' }).collect();
            let marks: String = std::iter::repeat_n(mark, end - start).collect();
            out.push(format!("{pad} {BLUE}|{RESET} {lead}{colour}{marks} {label}{RESET}"));
        }
        if !self.spans.is_empty() {
            out.push(format!("{pad} {BLUE}|{RESET}"));
        }
        for n in &self.notes {
            let mut it = n.lines();
            if let Some(first) = it.next() {
                out.push(format!("{pad} {BLUE}={RESET} {BOLD}{first}{RESET}"));
            }
            for more in it {
                out.push(format!("{pad}   {more}"));
            }
        }
        out
    }
}

#[cfg(feature = "rust-cells")]
pub fn evcxr_error(e: evcxr::Error, code: &str) -> CellError {
    match e {
        evcxr::Error::CompilationErrors(errors) => compilation_error(&errors, code),
        evcxr::Error::SubprocessTerminated(msg) => CellError::new(
            "RuntimeDied",
            format!(
                "the Rust runtime process ended ({}); evcxr restarted it and the session's variables were lost \
                 (functions, types, `use`s and `:dep`s are kept)",
                msg.trim()
            ),
        ),
        evcxr::Error::TypeRedefinedVariablesLost(vars) => {
            CellError::new("VariablesLost", format!("a type was redefined, so these variables were lost: {}", vars.join(", ")))
        }
        evcxr::Error::Message(m) => {
            let mut e = CellError::new("EvcxrError", m.trim().to_string());
            if m.contains("Couldn't automatically determine type") && !rust_src_installed() {
                e.traceback.push("hint: `rustup component add rust-src` lets evcxr infer more types".into());
            }
            e
        }
    }
}

#[cfg(feature = "rust-cells")]
/// One `error` for all of a cell's diagnostics, spans drawn on the cell's lines.
fn compilation_error(errors: &[evcxr::CompilationError], code: &str) -> CellError {
    if errors.is_empty() {
        return CellError::new("CompilationError", "the cell did not compile (no diagnostics were reported)");
    }
    let mut traceback = Vec::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            traceback.push(String::new());
        }
        let mut spans = Vec::new();
        let mut notes = Vec::new();
        for m in e.spanned_messages().iter().chain(e.help_spanned().iter()) {
            match &m.span {
                Some(s) => spans.push((s.start_line, s.start_column, s.end_line, s.end_column, m.label.clone(), m.is_primary)),
                None if !m.label.is_empty() && !m.label.starts_with("error:") => notes.push(m.label.clone()),
                None => {}
            }
        }
        if !spans.iter().any(|s| s.5) {
            if let Some(first) = spans.first_mut() {
                first.5 = true;
            }
        }
        for h in e.help() {
            let h = format!("help: {h}");
            if !notes.contains(&h) {
                notes.push(h);
            }
        }
        if let Some(hint) = e.evcxr_extra_hint() {
            notes.push(format!("note: {hint}"));
        }
        let d = Diagnostic { level: e.level(), code: e.code(), message: e.message(), spans, notes };
        if d.spans.is_empty() && !e.is_from_user_code() {
            // Not in the cell's own code: rustc's rendering is the best we have.
            let rendered = e.rendered();
            if !rendered.trim().is_empty() {
                traceback.extend(rendered.lines().map(str::to_string));
                continue;
            }
        }
        traceback.extend(d.render(code));
    }
    let mut evalue = errors[0].message();
    if errors.len() > 1 {
        evalue = format!("{evalue} (and {} more error{})", errors.len() - 1, if errors.len() > 2 { "s" } else { "" });
    }
    CellError { ename: "CompilationError".into(), evalue, traceback }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_point_at_the_span() {
        let d = Diagnostic {
            level: "error",
            code: Some("E0308"),
            message: "mismatched types".into(),
            spans: vec![(2, 14, 2, 17, "expected `i32`, found `&str`".into(), true)],
            notes: vec![],
        };
        let out = d.render("let a = 1;\nlet x: i32 = \"a\";");
        let text = out.join("\n");
        assert!(text.contains("E0308"), "{text}");
        assert!(text.contains("cell:2:14"), "{text}");
        assert!(text.contains("let x: i32 = \"a\";"), "{text}");
        let caret = out.iter().find(|l| l.contains("^^^")).unwrap();
        assert!(caret.contains("             \x1b[1;31m^^^ expected"), "{caret:?}");
    }
}
