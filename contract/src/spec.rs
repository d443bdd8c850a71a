//! The job description: what the driver asks `beamtime-job` to read and compute (JSON, in the
//! file named by `--spec-file`).

use serde::{Deserialize, Serialize};

use crate::{Command, ContractError, CONTRACT_VERSION};

/// Events per batch a reader hands out, by default.
pub const DEFAULT_BATCH_EVENTS: usize = 16_384;
/// A batch goes out after this long even when not full (ms).
pub const DEFAULT_FLUSH_MS: u64 = 20;
/// How often a live run's growing files are polled (ms).
pub const DEFAULT_POLL_MS: u64 = 10;
/// Workers per merge in the job's merge tree, by default: up to this many workers report to
/// the collector directly; more are grouped (see the job's `tree` module).
pub const DEFAULT_MERGE_FAN_IN: usize = 8;
/// Row queries keep at most this many of their newest rows by default.
pub const DEFAULT_MAX_ROWS: usize = 1_000_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobSpec {
    /// The contract version of the driver that wrote this (0: before versioning).
    #[serde(default)]
    pub contract: u32,
    /// A psana data source string.
    pub source: String,
    /// The queries to start with (`Command::Set`).
    pub queries: Vec<Command>,
    /// Result frames per second at most.
    pub frame_rate: f64,
    /// How often a worker reports its states.
    pub report_ms: u64,
    pub batch_events: usize,
    pub flush_ms: u64,
    pub poll_ms: u64,
    /// The driver's ROUTER endpoint ([`crate::JobEndpoint`]).
    pub connect: Option<String>,
    /// Row queries keep at most this many newest rows.
    pub max_rows: usize,
    /// The calibration directory (`%source … --calib-dir`), for detector reductions on the
    /// workers.
    #[serde(default)]
    pub calib_dir: Option<String>,
    /// Calibration settings (`--calib [DET:]KEY=VALUE`, [`crate::CalibSetting`]), paths absolute.
    #[serde(default)]
    pub calib: Vec<String>,
    /// Where rank 0 writes the final result (`.parquet`, `.arrow`, `.csv`); with several
    /// queries, `<stem>.<query>.<ext>`.
    pub output: Option<std::path::PathBuf>,
    /// Event-function libraries (content hashes) the driver sends ([`crate::Command::Library`])
    /// before the job may start: the queries call them.
    #[serde(default)]
    pub functions: Vec<String>,
    /// States merged per rank in the job's merge tree (< 2: never a tree).
    #[serde(default = "default_fan_in")]
    pub merge_fan_in: usize,
    /// The process that started the job: a collector on its host stops the job when it is
    /// gone (killed outright, it cannot say so), so that the ranks end cleanly.
    #[serde(default)]
    pub driver: Option<Driver>,
}

/// A driver process: its pid on its host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Driver {
    pub pid: u32,
    pub host: String,
}

impl Driver {
    /// This process.
    pub fn this_process() -> Driver {
        Driver { pid: std::process::id(), host: hostname() }
    }

    /// False once the driver has ended (or is a zombie nobody reaped); None when it runs on
    /// another host, where this cannot be seen.
    pub fn alive(&self) -> Option<bool> {
        if self.host != hostname() {
            return None;
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid));
        // The state follows the parenthesised command name, which may hold spaces.
        let state = stat.as_deref().ok().and_then(|s| s.rsplit_once(") ")).and_then(|(_, rest)| rest.chars().next());
        Some(matches!(state, Some(c) if c != 'Z' && c != 'X'))
    }
}

/// This host's name (empty when it cannot be read).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn default_fan_in() -> usize {
    DEFAULT_MERGE_FAN_IN
}

impl JobSpec {
    pub fn new(source: &str) -> Self {
        JobSpec {
            contract: CONTRACT_VERSION,
            source: source.to_string(),
            queries: Vec::new(),
            frame_rate: 5.0,
            report_ms: 100,
            batch_events: DEFAULT_BATCH_EVENTS,
            flush_ms: DEFAULT_FLUSH_MS,
            poll_ms: DEFAULT_POLL_MS,
            connect: None,
            max_rows: DEFAULT_MAX_ROWS,
            calib_dir: None,
            calib: Vec::new(),
            output: None,
            merge_fan_in: DEFAULT_MERGE_FAN_IN,
            functions: Vec::new(),
            driver: None,
        }
    }

    /// The `--calib` settings, checked (the driver wrote them with absolute paths).
    pub fn calib_settings(&self) -> Result<Vec<crate::CalibSetting>, String> {
        self.calib.iter().map(|s| crate::CalibSetting::parse(s, std::path::Path::new("/"))).collect()
    }

    /// Reads a job description, refusing one written by another contract version.
    pub fn from_json(text: &str) -> Result<JobSpec, ContractError> {
        #[derive(Deserialize)]
        struct Versioned {
            #[serde(default)]
            contract: u32,
        }
        let v: Versioned = serde_json::from_str(text).map_err(|e| ContractError::malformed("job description", e))?;
        ContractError::check_driver_version(v.contract)?;
        serde_json::from_str(text).map_err(|e| ContractError::malformed("job description", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_from_another_version_is_refused_by_name() {
        let spec = JobSpec::new("files=a.xtc2");
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(JobSpec::from_json(&text).unwrap().source, "files=a.xtc2");
        let old = text.replacen(&format!("\"contract\":{CONTRACT_VERSION}"), "\"contract\":0", 1);
        let e = JobSpec::from_json(&old).unwrap_err();
        assert!(e.to_string().starts_with(&format!("job speaks contract v{CONTRACT_VERSION}, kernel v0: ")), "{e}");
    }
}
