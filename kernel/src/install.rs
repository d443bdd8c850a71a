//! `beamtime install` / `uninstall`: the kernelspec (kernel.json and logos) in a Jupyter data
//! directory (spec §1).

use std::path::{Path, PathBuf};

use serde_json::json;

pub const DEFAULT_NAME: &str = "beamtime";
pub const DISPLAY_NAME: &str = "Beamtime (Rust)";

/// Where to install, as Jupyter's own `kernelspec install` spells it.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    /// `$JUPYTER_DATA_DIR`, else `~/.local/share/jupyter` (macOS `~/Library/Jupyter`).
    User,
    /// The active Python environment's `share/jupyter` (`$VIRTUAL_ENV`, `$CONDA_PREFIX`, or
    /// `sys.prefix` of `python3`).
    SysPrefix,
    /// `<prefix>/share/jupyter`.
    Prefix(PathBuf),
}

impl Location {
    pub fn data_dir(&self) -> Result<PathBuf, String> {
        match self {
            Location::User => {
                if let Some(d) = std::env::var_os("JUPYTER_DATA_DIR").filter(|d| !d.is_empty()) {
                    return Ok(PathBuf::from(d));
                }
                let home = std::env::var_os("HOME").ok_or("HOME is not set; use --prefix")?;
                Ok(if cfg!(target_os = "macos") {
                    PathBuf::from(home).join("Library/Jupyter")
                } else {
                    let base = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(&home).join(".local/share"));
                    base.join("jupyter")
                })
            }
            Location::SysPrefix => {
                let prefix = std::env::var_os("VIRTUAL_ENV")
                    .or_else(|| std::env::var_os("CONDA_PREFIX"))
                    .map(PathBuf::from)
                    .map(Ok)
                    .unwrap_or_else(python_prefix)?;
                Ok(prefix.join("share/jupyter"))
            }
            Location::Prefix(p) => Ok(p.join("share/jupyter")),
        }
    }
}

fn python_prefix() -> Result<PathBuf, String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .map_err(|e| format!("--sys-prefix: no active environment and python3 failed: {e}"))?;
    if !out.status.success() {
        return Err("--sys-prefix: python3 could not report sys.prefix".into());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Writes `<data dir>/kernels/<name>/{kernel.json, logo-32x32.png, logo-64x64.png}`.
pub fn install(location: &Location, name: &str, exe: &Path) -> Result<PathBuf, String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!("kernel name '{name}': use letters, digits, '.', '_' and '-'"));
    }
    let dir = location.data_dir()?.join("kernels").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let spec = json!({
        "argv": [exe.to_string_lossy(), "kernel", "-f", "{connection_file}"],
        "display_name": if name == DEFAULT_NAME { DISPLAY_NAME.to_string() } else { format!("{DISPLAY_NAME} [{name}]") },
        "language": "rust",
        "interrupt_mode": "message",
        "env": {},
        "metadata": {"debugger": false},
    });
    let write = |file: &str, bytes: &[u8]| {
        let p = dir.join(file);
        std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("kernel.json", serde_json::to_string_pretty(&spec).unwrap().as_bytes())?;
    write("logo-32x32.png", &logo_png(32))?;
    write("logo-64x64.png", &logo_png(64))?;
    Ok(dir)
}

/// Removes the kernelspec; returns the directories removed.
pub fn uninstall(locations: &[Location], name: &str) -> Result<Vec<PathBuf>, String> {
    let mut removed = Vec::new();
    for loc in locations {
        let Ok(base) = loc.data_dir() else { continue };
        let dir = base.join("kernels").join(name);
        if dir.join("kernel.json").exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            removed.push(dir);
        }
    }
    Ok(removed)
}

/// The logo: an X-ray pulse (a bright diagonal streak) crossing a dark beamline square.
pub fn logo_png(size: u32) -> Vec<u8> {
    let mut raw = Vec::with_capacity((size * (size * 4 + 1)) as usize);
    let s = size as f32;
    for y in 0..size {
        raw.push(0); // filter: none
        for x in 0..size {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let d = ((fx - fy) / std::f32::consts::SQRT_2).abs() / s; // distance to the diagonal
            let r = ((fx - s / 2.0).powi(2) + (fy - s / 2.0).powi(2)).sqrt() / s;
            let glow = (-(d * d) / 0.002).exp() + 0.8 * (-(r * r) / 0.01).exp();
            let g = glow.min(1.0);
            let px = [(20.0 + 235.0 * g) as u8, (40.0 + 200.0 * g) as u8, (90.0 + 165.0 * g) as u8, 255];
            raw.extend_from_slice(&px);
        }
    }
    png_rgba(size, size, &raw)
}

fn png_rgba(w: u32, h: u32, raw: &[u8]) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA
    // zlib stream of stored (uncompressed) deflate blocks: small logos need no compressor.
    let mut z = vec![0x78, 0x01];
    for (i, block) in raw.chunks(65535).enumerate() {
        let last = (i + 1) * 65535 >= raw.len();
        z.push(last as u8);
        z.extend_from_slice(&(block.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(block.len() as u16)).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_and_uninstalls_under_a_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = Location::Prefix(tmp.path().to_path_buf());
        let dir = install(&loc, "beamtime", Path::new("/opt/bt/beamtime")).unwrap();
        assert_eq!(dir, tmp.path().join("share/jupyter/kernels/beamtime"));
        let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("kernel.json")).unwrap()).unwrap();
        assert_eq!(spec["argv"], json!(["/opt/bt/beamtime", "kernel", "-f", "{connection_file}"]));
        assert_eq!(spec["display_name"], "Beamtime (Rust)");
        assert_eq!(spec["interrupt_mode"], "message");
        let png = std::fs::read(dir.join("logo-64x64.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 64);
        assert_eq!(uninstall(&[loc.clone()], "beamtime").unwrap(), vec![dir.clone()]);
        assert!(!dir.exists());
        assert!(install(&loc, "bad name!", Path::new("/x")).is_err());
    }

    #[test]
    fn crc_of_iend_is_the_known_value() {
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
    }
}
