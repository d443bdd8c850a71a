//! What to simulate: [`SimConfig`], its defaults and its validation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SimError;

/// The experiment name runs get unless told otherwise (instrument `tst`, as LCLS test
/// experiments are named).
pub const DEFAULT_EXP: &str = "tstx00117";

/// The DAQ's bigdata chunk threshold, `DefaultChunkThresh` = 500 GiB (spec §13.4).
pub const DAQ_CHUNK_BYTES: u64 = 500 << 30;

/// Event rate the timestamps show when events are written as fast as possible
/// (`rate_hz == 0`): with SlowUpdates at 1 Hz this gives one SlowUpdate per 1000 events.
pub const DEFAULT_TIMESTAMP_RATE_HZ: f64 = 1000.0;

/// A Jungfrau frame every 5th event: 200 Hz of the 1 kHz timestamps, an area detector's rate at
/// a 1 kHz LCLS-II beamline. Odd, so that its frames fall on laser-off shots (every 4th) too.
pub const DEFAULT_JUNGFRAU_EVERY: u64 = 5;

fn default_jungfrau_every() -> u64 {
    DEFAULT_JUNGFRAU_EVERY
}

// Settings added after the truth format was fixed are left out of it at their defaults, so the
// truth of a run without them does not change.
fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// One simulated run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// The xtc directory: bigdata files go here, smd files into `smalldata/`.
    pub dir: PathBuf,
    pub exp: String,
    pub run: u32,
    /// L1Accepts in the run (stream 0 holds all of them), spread evenly over the steps.
    pub events: u64,
    /// Scan steps (BeginStep … EndStep), at least 1.
    pub steps: u32,
    /// Streams (DRP nodes, files `sNNN`), at least 1.
    pub streams: u32,
    /// Real-time pacing: events per second of wall time. 0 = as fast as possible.
    pub rate_hz: f64,
    /// The event rate the timestamps show when `rate_hz` is 0.
    pub timestamp_rate_hz: f64,
    /// Seeds every random draw and the model parameters: equal configs give equal files.
    pub seed: u64,
    /// Start a new bigdata chunk at the next Enable once a chunk holds more than this.
    pub chunk_bytes: u64,
    /// SlowUpdates per second of data time (timestamps); 0 = none.
    pub slow_update_hz: f64,
    /// Optional camera frames (width, height) of u16 pixels.
    pub image: Option<(u32, u32)>,
    /// Jungfrau modules of 512×1024 pixels (0 = no Jungfrau, up to 8 = a 4M), in their own
    /// stream after the others ([`crate::jungfrau`]).
    #[serde(default)]
    pub jungfrau: u32,
    /// The Jungfrau records events whose index is a multiple of this (1 = every event).
    #[serde(default = "default_jungfrau_every")]
    pub jungfrau_every: u64,
    /// epix10ka panels of 352×384 pixels (0 = none, 4 = a quad `epixquad`, up to 16 = a 2M), in
    /// a stream of their own ([`crate::area`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epix10ka: u32,
    /// An epixM320 (`epixm`) in a stream of its own.
    #[serde(default, skip_serializing_if = "is_false")]
    pub epixm320: bool,
    /// Rows of an Archon (`archon`, 4800 columns; 0 = none), in a stream of its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub archon: u32,
    /// The camera (`image`) gets per-pixel dark levels and gains, and its constants go into
    /// the calib dir.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cam_calib: bool,
    /// Where the area detectors' constants go; `None` = `<dir>/calib`.
    #[serde(default)]
    pub calib_dir: Option<PathBuf>,
    /// Run start in seconds since the EPICS epoch (1990-01-01 UTC); `None` = now for a paced
    /// run (`rate_hz` > 0), else derived from the seed (a time in 2025), so runs are reproducible.
    pub start_epics_sec: Option<u32>,
    /// Replace the files of an existing run with the same experiment and number even when the
    /// simulator did not write it (a simulated run, recognised by its truth file, is always
    /// replaced).
    pub overwrite: bool,
}

impl SimConfig {
    /// The defaults of `beamtime sim`, writing into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SimConfig {
            dir: dir.into(),
            exp: DEFAULT_EXP.into(),
            run: 1,
            events: 10_000,
            steps: 10,
            streams: 2,
            rate_hz: 0.0,
            timestamp_rate_hz: DEFAULT_TIMESTAMP_RATE_HZ,
            seed: 1,
            chunk_bytes: DAQ_CHUNK_BYTES,
            slow_update_hz: 1.0,
            image: None,
            jungfrau: 0,
            jungfrau_every: DEFAULT_JUNGFRAU_EVERY,
            epix10ka: 0,
            epixm320: false,
            archon: 0,
            cam_calib: false,
            calib_dir: None,
            start_epics_sec: None,
            overwrite: false,
        }
    }

    /// The event rate of the data (timestamps, pulse ids).
    pub fn data_rate_hz(&self) -> f64 {
        if self.rate_hz > 0.0 { self.rate_hz } else { self.timestamp_rate_hz }
    }

    /// The psana source string that reads this run.
    pub fn source(&self) -> String {
        format!("exp={}:run={}:dir={}", self.exp, self.run, self.dir.display())
    }

    /// `<exp>-r<RRRR>`, the prefix of every file of the run.
    pub fn run_prefix(&self) -> String {
        format!("{}-r{:04}", self.exp, self.run)
    }

    /// The calib dir the area detectors' constants go into.
    pub fn calib_dir(&self) -> PathBuf {
        self.calib_dir.clone().unwrap_or_else(|| self.dir.join("calib"))
    }

    pub fn truth_path(&self) -> PathBuf {
        self.dir.join(format!("{}.truth.json", self.run_prefix()))
    }

    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: String| Err(SimError::Config(m));
        if self.exp.is_empty() || !self.exp.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return bad(format!("experiment name '{}' must be letters, digits and '_'", self.exp));
        }
        if self.run > 9999 {
            return bad(format!("run {} does not fit the 4-digit rRRRR of file names", self.run));
        }
        if !(1..=1000).contains(&self.streams) {
            return bad(format!("streams = {}: 1 to 1000 (3-digit sSSS)", self.streams));
        }
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if !(self.rate_hz.is_finite() && self.rate_hz >= 0.0) {
            return bad(format!("rate {} Hz: a rate ≥ 0 is expected", self.rate_hz));
        }
        if !(self.timestamp_rate_hz.is_finite() && self.timestamp_rate_hz > 0.0) {
            return bad(format!("timestamp rate {} Hz must be > 0", self.timestamp_rate_hz));
        }
        if !(0.0..=1000.0).contains(&self.slow_update_hz) {
            return bad(format!("SlowUpdate rate {} Hz: 0 to 1000 Hz (they are slow updates)", self.slow_update_hz));
        }
        if let Some((w, h)) = self.image
            && !((1..=4096).contains(&w) && (1..=4096).contains(&h))
        {
            return bad(format!("image {w}x{h}: each side must be 1 to 4096 pixels"));
        }
        if self.jungfrau > crate::jungfrau::MAX_MODULES {
            return bad(format!("jungfrau {} modules: 0 to {} (a 4M)", self.jungfrau, crate::jungfrau::MAX_MODULES));
        }
        if self.epix10ka > crate::area::EPIX_MAX_SEGMENTS {
            return bad(format!("epix10ka {} panels: 0 to {} (a 2M)", self.epix10ka, crate::area::EPIX_MAX_SEGMENTS));
        }
        if self.archon > crate::area::ARCHON_MAX_ROWS {
            return bad(format!("archon {} rows: 0 to {}", self.archon, crate::area::ARCHON_MAX_ROWS));
        }
        if self.cam_calib && self.image.is_none() {
            return bad("cam-calib needs a camera (--image WxH)".into());
        }
        if self.jungfrau_every == 0 {
            return bad("jungfrau-every must be at least 1 (1 = every event)".into());
        }
        Ok(())
    }
}

/// The files of run `run` of `exp` that exist in `dir` (bigdata, smd, truth), in any state.
pub fn existing_run_files(dir: &Path, exp: &str, run: u32) -> Vec<PathBuf> {
    let prefix = format!("{exp}-r{run:04}");
    let mut found = Vec::new();
    for d in [dir.to_path_buf(), dir.join("smalldata")] {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if run_of(name, exp) == Some(run) && name[prefix.len()..].starts_with(['-', '.']) {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// The run number after the highest run of `exp` found in `dir` (1 when there is none).
pub fn next_free_run(dir: &Path, exp: &str) -> u32 {
    let highest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| run_of(n, exp)))
        .max();
    highest.map_or(1, |r| r + 1)
}

/// The run number of a file named `<exp>-r<RRRR>…`.
fn run_of(name: &str, exp: &str) -> Option<u32> {
    let rest = name.strip_prefix(exp)?.strip_prefix("-r")?;
    let digits = rest.get(..4)?;
    digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_numbers_from_file_names() {
        assert_eq!(run_of("tst-r0012-s000-c000.xtc2", "tst"), Some(12));
        assert_eq!(run_of("tst-r0012.truth.json", "tst"), Some(12));
        assert_eq!(run_of("tstx-r0012-s000-c000.xtc2", "tst"), None);
        assert_eq!(run_of("tst-r12-s000.xtc2", "tst"), None);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = SimConfig::new("/tmp/x");
        assert!(c.validate().is_ok());
        c.steps = 0;
        assert!(c.validate().unwrap_err().to_string().contains("steps"));
        c.steps = 1;
        c.exp = "a/b".into();
        assert!(c.validate().unwrap_err().to_string().contains("a/b"));
    }
}
