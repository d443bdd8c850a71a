//! Compiling a source of event functions: `rustc` straight on the generated file (no cargo,
//! no dependencies: about a second), cached by the hash of what is compiled and with what.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::glue::{self, LINE_OFFSET};
use crate::signature::{self, Signature, SignatureError};

/// A compiled library.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub path: PathBuf,
    /// The content hash (names the library everywhere: cache, job, registry).
    pub hash: String,
    pub signatures: Vec<Signature>,
    /// Found in the cache: nothing was compiled.
    pub cached: bool,
    pub seconds: f64,
}

/// One compiler message, placed in the user's source (line 0: not in it).
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub level: String,
    pub code: Option<String>,
    pub message: String,
    pub line: usize,
    pub column: usize,
    /// Where the span ends (column exclusive).
    pub end_line: usize,
    pub end_column: usize,
    pub label: Option<String>,
    /// rustc's notes and help (`= help: …`).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{0}")]
    Signature(SignatureError),
    #[error("{}", render(.0, .1))]
    Rustc(Vec<Diagnostic>, String),
    #[error("{0}")]
    Toolchain(String),
    #[error("{0}")]
    Io(String),
}

impl CompileError {
    /// The diagnostics in the user's source, for a notebook to show.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            CompileError::Rustc(d, _) => d,
            _ => &[],
        }
    }
}

/// Where compiled libraries are kept: `$BEAMTIME_CACHE/functions`, else the user's cache dir.
pub fn default_cache() -> PathBuf {
    let base = std::env::var_os("BEAMTIME_CACHE").map(PathBuf::from).or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("beamtime"))).unwrap_or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("beamtime")).unwrap_or_else(std::env::temp_dir)
    });
    base.join("functions")
}

/// How every library is built: optimised, unwinding (a panic is caught, per batch), and
/// stripped of its symbol table (the dynamic symbols stay): ~0.3 MB to ship, not 4 MB.
const FLAGS: &[&str] = &["-C", "opt-level=3", "-C", "debuginfo=0", "-C", "panic=unwind", "-C", "strip=symbols"];

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())
}

/// `rustc -vV`: part of the hash (a new compiler builds anew).
fn rustc_version() -> Result<String, CompileError> {
    let out = Command::new(rustc()).arg("-vV").output().map_err(|e| {
        CompileError::Toolchain(format!("event functions need `rustc` ({e}): install a Rust toolchain (https://rustup.rs) and make sure it is on PATH"))
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Compiles `source` (or finds it compiled) under `cache`.
pub fn compile(source: &str, cache: &Path) -> Result<Compiled, CompileError> {
    let t = Instant::now();
    let read = signature::read(source);
    let sigs = match &read {
        Ok(s) => s.clone(),
        // A source that does not parse: rustc says where, on the source alone.
        Err(e) if e.line == 0 => return Err(syntax_error(source, cache, e)),
        Err(e) => return Err(CompileError::Signature(e.clone())),
    };
    let generated = glue::generate(source, &sigs);
    let mut h = Sha256::new();
    h.update(crate::ABI_VERSION.to_le_bytes());
    h.update(FLAGS.join(" ").as_bytes());
    h.update(rustc_version()?.as_bytes());
    h.update(generated.as_bytes());
    let hash = hex::encode(&h.finalize()[..12]);
    let dir = cache.join(&hash);
    let lib = dir.join(format!("libbeamtime_fn_{hash}.so"));
    if lib.exists() {
        return Ok(Compiled { path: lib, hash, signatures: sigs, cached: true, seconds: t.elapsed().as_secs_f64() });
    }
    std::fs::create_dir_all(&dir).map_err(|e| CompileError::Io(format!("{}: {e}", dir.display())))?;
    let src = dir.join("lib.rs");
    std::fs::write(&src, &generated).map_err(|e| CompileError::Io(format!("{}: {e}", src.display())))?;
    // Built under a name of its own, then renamed: two kernels building the same never collide.
    let tmp = dir.join(format!("building-{}.so", std::process::id()));
    let out = Command::new(rustc())
        .args(["--edition", "2021", "--crate-type", "cdylib", "--crate-name", &format!("beamtime_fn_{hash}")])
        .args(FLAGS)
        .args(["-A", "warnings", "--error-format=json"])
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .output()
        .map_err(|e| CompileError::Toolchain(format!("running rustc: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(CompileError::Rustc(diagnostics(&stderr, source, LINE_OFFSET), stderr.into_owned()));
    }
    std::fs::rename(&tmp, &lib).map_err(|e| CompileError::Io(format!("{}: {e}", lib.display())))?;
    Ok(Compiled { path: lib, hash, signatures: sigs, cached: false, seconds: t.elapsed().as_secs_f64() })
}

/// rustc's messages for a source syn cannot parse: checked alone, so that they fall on its
/// own lines (in the generated file an unclosed brace would pair with the glue's).
fn syntax_error(source: &str, cache: &Path, parse: &SignatureError) -> CompileError {
    let dir = cache.join("syntax");
    let src = dir.join(format!("check-{}.rs", std::process::id()));
    let run = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&src, source)).map_err(|e| e.to_string()).and_then(|_| {
        Command::new(rustc())
            .args(["--edition", "2021", "--crate-type", "lib", "--emit=metadata", "-A", "warnings", "--error-format=json", "--out-dir"])
            .arg(&dir)
            .arg(&src)
            .output()
            .map_err(|e| e.to_string())
    });
    let _ = std::fs::remove_file(&src);
    match run {
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let diags = diagnostics(&stderr, source, 0);
            if diags.is_empty() { CompileError::Signature(parse.clone()) } else { CompileError::Rustc(diags, stderr.into_owned()) }
        }
        Err(e) => CompileError::Toolchain(format!("running rustc: {e}")),
    }
}

/// rustc's JSON messages, errors only, placed in the user's source (which starts after
/// `offset` lines of the compiled file).
fn diagnostics(stderr: &str, source: &str, offset: usize) -> Vec<Diagnostic> {
    let user_lines = source.lines().count();
    let mut out = Vec::new();
    for line in stderr.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["$message_type"] != "diagnostic" || v["level"] != "error" {
            continue;
        }
        let message = v["message"].as_str().unwrap_or("").to_string();
        if message.starts_with("aborting due to") {
            continue;
        }
        let spans = v["spans"].as_array().cloned().unwrap_or_default();
        // The primary span if it is in the user's lines, else the first one that is (an
        // unclosed brace is reported at the end of the generated file, its opening in the cell).
        let in_user = |s: &&&serde_json::Value| {
            let at = s["line_start"].as_u64().unwrap_or(0) as usize;
            at > offset && at <= offset + user_lines
        };
        let mut ordered: Vec<&serde_json::Value> = spans.iter().filter(|s| s["is_primary"] == true).collect();
        ordered.extend(spans.iter().filter(|s| s["is_primary"] != true));
        let (mut l, mut c, mut el, mut ec, mut label) = (0, 0, 0, 0, None::<String>);
        if let Some(s) = ordered.iter().find(in_user) {
            let n = |k: &str| s[k].as_u64().unwrap_or(0) as usize;
            (l, c) = (n("line_start") - offset, n("column_start"));
            (el, ec) = (n("line_end").saturating_sub(offset).max(l), n("column_end"));
            label = s["label"].as_str().map(str::to_string);
        }
        let notes = v["children"].as_array().map(|cs| cs.iter().filter_map(|c| Some(format!("{}: {}", c["level"].as_str()?, c["message"].as_str()?))).collect()).unwrap_or_default();
        let code = v["code"]["code"].as_str().map(str::to_string);
        out.push(Diagnostic { level: "error".into(), code, message, line: l, column: c, end_line: el, end_column: ec, label, notes });
    }
    out
}

/// Diagnostics as rustc shows them, in the user's lines.
fn render(diags: &[Diagnostic], raw: &str) -> String {
    if diags.is_empty() {
        return format!("rustc failed:\n{raw}");
    }
    diags.iter().map(|d| {
        let code = d.code.as_ref().map(|c| format!("[{c}]")).unwrap_or_default();
        let at = if d.line > 0 { format!("\n --> line {}:{}", d.line, d.column) } else { String::new() };
        let label = d.label.as_ref().map(|l| format!(": {l}")).unwrap_or_default();
        format!("error{code}: {}{at}{label}", d.message)
    }).collect::<Vec<_>>().join("\n")
}
