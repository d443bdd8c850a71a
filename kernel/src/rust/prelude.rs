//! The `beamtime` prelude crate (`prelude/`), embedded in the kernel: written out for evcxr, and
//! `:dep beamtime` lines pointed at it.

use std::path::PathBuf;

/// The prelude crate's sources, written out for evcxr on first use.
const PRELUDE_MANIFEST: &str = include_str!("../../../prelude/Cargo.toml");
const PRELUDE_LIB: &str = include_str!("../../../prelude/src/lib.rs");

/// Writes the embedded prelude crate to a cache directory (once per version); its path.
pub fn prelude_dir() -> std::io::Result<PathBuf> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in PRELUDE_MANIFEST.bytes().chain(PRELUDE_LIB.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join("beamtime").join(format!("prelude-{h:016x}"));
    for (rel, text) in [("Cargo.toml", PRELUDE_MANIFEST), ("src/lib.rs", PRELUDE_LIB)] {
        let p = dir.join(rel);
        if std::fs::read_to_string(&p).ok().as_deref() == Some(text) {
            continue;
        }
        std::fs::create_dir_all(p.parent().unwrap())?;
        // Write then rename: kernels starting together never see half a file.
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &p)?;
    }
    Ok(dir)
}

/// The evcxr dependency line for the prelude: `beamtime` with the given extra TOML keys.
pub fn prelude_dep(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let extra = extra.trim().trim_start_matches(',').trim();
    if extra.is_empty() {
        format!(":dep beamtime = {{ path = \"{path}\", package = \"beamtime-prelude\" }}")
    } else {
        format!(":dep beamtime = {{ path = \"{path}\", package = \"beamtime-prelude\", {extra} }}")
    }
}

/// `:dep beamtime` lines name the embedded prelude: `:dep beamtime = { features = ["polars"] }`
/// gets its path filled in. Other lines are unchanged (line numbers are kept).
pub fn rewrite_prelude_deps(code: &str, dir: &std::path::Path) -> String {
    let mut out = Vec::new();
    for line in code.split('\n') {
        let t = line.trim();
        let rest = t.strip_prefix(":dep").filter(|r| r.starts_with(char::is_whitespace)).map(str::trim_start);
        let rewritten = rest.and_then(|r| r.strip_prefix("beamtime")).and_then(|r| {
            let r = r.trim();
            if r.is_empty() {
                return Some(prelude_dep(dir, ""));
            }
            let table = r.strip_prefix('=')?.trim();
            let inner = table.strip_prefix('{')?.strip_suffix('}')?;
            // An explicit source is the user's choice.
            if ["path", "git", "version", "package"].iter().any(|k| inner.split(',').any(|kv| kv.trim_start().starts_with(k))) {
                return None;
            }
            Some(prelude_dep(dir, inner))
        });
        out.push(rewritten.unwrap_or_else(|| line.to_string()));
    }
    out.join("\n")
}

/// Whether a cell asks for the prelude's `polars` feature (`:dep beamtime = { … "polars" … }`).
pub fn wants_polars_prelude(code: &str) -> bool {
    code.lines().any(|l| {
        let t = l.trim_start();
        t.strip_prefix(":dep").is_some_and(|r| r.trim_start().starts_with("beamtime")) && t.contains("\"polars\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelude_deps_get_their_path() {
        let dir = std::path::Path::new("/p");
        assert_eq!(rewrite_prelude_deps(":dep beamtime", dir), ":dep beamtime = { path = \"/p\", package = \"beamtime-prelude\" }");
        assert_eq!(
            rewrite_prelude_deps("let a = 1;\n:dep beamtime = { features = [\"polars\"] }", dir),
            "let a = 1;\n:dep beamtime = { path = \"/p\", package = \"beamtime-prelude\", features = [\"polars\"] }"
        );
        let own = ":dep beamtime = { path = \"/mine\" }";
        assert_eq!(rewrite_prelude_deps(own, dir), own);
        assert_eq!(rewrite_prelude_deps(":dep beamtimex", dir), ":dep beamtimex");
        assert!(wants_polars_prelude(":dep beamtime = { features = [\"polars\"] }"));
        assert!(!wants_polars_prelude(":dep beamtime\nlet polars = 1;"));
    }
}
