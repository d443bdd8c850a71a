//! The Rust toolchain Rust cells need: finding `cargo` and `rust-src`, the error when there is
//! none, and evcxr's hook for the processes it runs as this executable.

use std::path::PathBuf;

use crate::cell::CellError;

/// Runs evcxr's runtime child or rustc wrapper when this process is one; call first in `main`.
pub fn runtime_hook() {
    #[cfg(feature = "rust-cells")]
    evcxr::runtime_hook();
}

/// Where `cargo` would be found for Rust cells: PATH, then next to this executable (as evcxr
/// looks). `None` when there is no toolchain.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let in_dir = |d: &std::path::Path| {
        let p = d.join(name);
        is_executable(&p).then_some(p)
    };
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(p) = std::env::split_paths(&path).find_map(|d| in_dir(&d)) {
            return Some(p);
        }
    }
    std::env::current_exe().ok().and_then(|e| e.parent().and_then(in_dir))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg_attr(not(feature = "rust-cells"), allow(dead_code))]
pub fn no_toolchain() -> CellError {
    let path = std::env::var("PATH").unwrap_or_default();
    CellError::new(
        "RustUnavailable",
        format!(
            "Rust cells need a Rust toolchain, and `cargo` is not on this kernel's PATH ({path}). \
             Install one (https://rustup.rs, plus `rustup component add rust-src`), make sure the \
             Jupyter server's environment has it on PATH, and restart the kernel. Magics work \
             without it: %help lists them."
        ),
    )
}

#[cfg_attr(not(feature = "rust-cells"), allow(dead_code))]
pub fn rust_src_installed() -> bool {
    let Ok(out) = std::process::Command::new("rustc").args(["--print", "sysroot"]).output() else { return false };
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    root.join("lib/rustlib/src/rust/library/core").exists()
}
