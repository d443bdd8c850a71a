//! `%%function`: the user's event functions, compiled from the cell into a library (cached by
//! content), registered here (for `%%sql`) and shipped to the live job (for `%%live`); live
//! queries that call a redefined function start afresh.

use std::sync::Arc;

use serde_json::json;

use super::syntax::{Call, Session};
use crate::cell::{Bundle, CellError};
use crate::rust::diagnostics::Diagnostic;

pub fn function(call: &Call, s: &mut Session) -> Result<Option<Bundle>, CellError> {
    if call.body.trim().is_empty() {
        return Err(call.usage_error("%%function needs Rust functions on the lines below it, e.g. fn ratio(a: f64, b: f64) -> f64 { a / b }"));
    }
    let compiled = functions::compile(call.body, &functions::default_cache()).map_err(|e| compile_error(call.body, &e))?;
    let library = functions::Library::load(&compiled.path, &compiled.hash).map_err(|e| CellError::new("FunctionError", e))?;
    let bytes = std::fs::read(&compiled.path).map_err(|e| CellError::new("FunctionError", format!("{}: {e}", compiled.path.display())))?;
    let names: Vec<String> = compiled.signatures.iter().map(|s| s.name.clone()).collect();
    // Before installing: the libraries it supersedes are still found in the registry.
    let reset = s.live.define_functions(contract::Command::Library { hash: compiled.hash.clone(), library: hex::encode(bytes) }, &names);
    functions::registry::install(Arc::new(library));
    let sigs: Vec<String> = compiled.signatures.iter().map(|s| s.to_string()).collect();
    let how = if compiled.cached { "built before".to_string() } else { format!("compiled in {:.2} s", compiled.seconds) };
    let mut text = format!("defined {} ({how})", sigs.join(", "));
    if !reset.is_empty() {
        text.push_str(&format!("\nlive queries started afresh with the new definition: {}", reset.join(", ")));
    }
    Ok(Some(json!({"text/plain": text})))
}

/// A compile error as a Rust cell shows one: rustc's diagnostics drawn on the cell's lines
/// (the magic line is line 1, the source starts on line 2).
fn compile_error(body: &str, e: &functions::CompileError) -> CellError {
    let cell = format!("%%function\n{body}");
    match e {
        functions::CompileError::Rustc(diags, _) if !diags.is_empty() => {
            let mut traceback = Vec::new();
            for d in diags {
                let spans = if d.line > 0 { vec![(d.line + 1, d.column, d.end_line + 1, d.end_column, d.label.clone().unwrap_or_default(), true)] } else { Vec::new() };
                let rendered = Diagnostic { level: "error", code: d.code.as_deref(), message: d.message.clone(), spans, notes: d.notes.clone() }.render(&cell);
                traceback.extend(rendered);
                traceback.push(String::new());
            }
            let first = &diags[0];
            CellError { ename: "CompilationError".into(), evalue: format!("{}{}", first.message, if first.line > 0 { format!(" (line {})", first.line + 1) } else { String::new() }), traceback }
        }
        functions::CompileError::Signature(s) if s.line > 0 => CellError::new("FunctionError", format!("cell line {}: {}", s.line + 1, s.message)),
        other => CellError::new("FunctionError", other.to_string()),
    }
}
