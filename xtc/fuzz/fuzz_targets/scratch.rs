//! Scratch files of the file-based targets: one per fuzzing process, in /dev/shm when there is one.

use std::path::PathBuf;

const PREFIX: &str = "beamtime-xtc-fuzz-";

/// `<tmp>/beamtime-xtc-fuzz-<kind>-<pid><ext>`, after removing the scratch files of fuzzing
/// processes that are gone (libFuzzer leaves by `exit`, and crashes, without cleaning up).
pub fn path(kind: &str, ext: &str) -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    let dir = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            let pid = rest
                .rsplit('-')
                .next()
                .unwrap_or("")
                .split('.')
                .next()
                .unwrap_or("");
            if pid.parse::<u32>().is_ok() && !std::path::Path::new("/proc").join(pid).exists() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
    dir.join(format!("{PREFIX}{kind}-{}{ext}", std::process::id()))
}
