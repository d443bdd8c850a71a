//! Supervising the `beamtime-job` process: starting it through the contract's launch
//! function, keeping the tail of its ranks' messages, noticing when it exits, stopping it.

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contract::JobSpec;

use super::options::LiveOptions;
use crate::cell::CellError;
use crate::lock::lock;

/// What is known of the current job, written by the frame pump (its hello, end and error) and
/// by the watcher threads (its exit, its stderr).
#[derive(Default)]
pub struct JobStatus {
    /// The job said hello.
    pub running: bool,
    /// The job said it finished (why).
    pub ended: Option<String>,
    /// The job died or failed (why): shown in every live display.
    pub died: Option<String>,
    pub stderr_tail: String,
    /// Which job is current: a watcher of an earlier job must not report on this one.
    pub job_id: u64,
}

/// Bytes of the ranks' stderr kept for error reports.
const STDERR_TAIL: usize = 4000;

/// A started `beamtime-job` (under the launcher unless it runs alone).
pub struct JobProcess {
    child: Arc<Mutex<Child>>,
    pub ranks: usize,
    pub source: String,
    /// How it was started (`%live restart` starts the next one the same way).
    pub opts: LiveOptions,
}

impl JobProcess {
    /// Starts the job of `spec` with `ranks` ranks; from now on `status` describes it.
    pub fn start(spec: &JobSpec, ranks: usize, opts: &LiveOptions, status: &Arc<Mutex<JobStatus>>) -> Result<JobProcess, CellError> {
        let job_id = {
            let mut st = lock(status);
            *st = JobStatus { job_id: st.job_id + 1, ..JobStatus::default() };
            st.job_id
        };
        let dir = std::env::temp_dir().join(format!("beamtime-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| CellError::new("OSError", e.to_string()))?;
        let mut cmd = contract::launch::command(opts.launcher.as_deref(), ranks, spec, &dir.join("job.json")).map_err(|e| CellError::new("LiveJobError", e.to_string()))?;
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        // A kernel killed outright (SIGKILL, the OOM killer) takes its job along: on this host
        // the collector sees it gone and stops the job cleanly (`spec.driver`); a launcher that
        // may place rank 0 elsewhere gets the kernel's death signal (jobs are only started from
        // the cell thread, which lives as long as the kernel).
        if contract::launch::remote(opts.launcher.as_deref(), ranks) {
            contract::launch::end_with_starter(&mut cmd);
        }
        let mut child = cmd.spawn().map_err(|e| CellError::new("LiveJobError", format!("cannot start {cmd:?}: {e}")))?;
        let err = child.stderr.take();
        let child = Arc::new(Mutex::new(child));
        if let Some(err) = err {
            keep_stderr_tail(err, status.clone());
        }
        watch_exit(child.clone(), status.clone(), job_id);
        Ok(JobProcess { child, ranks, source: spec.source.clone(), opts: opts.clone() })
    }

    /// Waits up to 3 s for the job to end after it was told to stop, then ends its whole
    /// process group (the launcher and every rank it started), SIGTERM then SIGKILL.
    pub fn stop(self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = lock(&self.child).try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        contract::launch::stop(&mut lock(&self.child), Duration::from_secs(2));
    }
}

/// Keeps the tail of the ranks' messages for error reports.
fn keep_stderr_tail(mut err: impl Read + Send + 'static, status: Arc<Mutex<JobStatus>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut st = lock(&status);
            st.stderr_tail.push_str(&String::from_utf8_lossy(&buf[..n]));
            let len = st.stderr_tail.len();
            if len > STDERR_TAIL {
                let cut = st.stderr_tail.char_indices().map(|(i, _)| i).find(|&i| i >= len - STDERR_TAIL).unwrap_or(0);
                st.stderr_tail.drain(..cut);
            }
        }
    });
}

/// Reports the job dead when its process exits before it said it finished (or exits failing).
fn watch_exit(child: Arc<Mutex<Child>>, status: Arc<Mutex<JobStatus>>, job_id: u64) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        let exited = lock(&child).try_wait();
        if let Ok(Some(s)) = exited {
            // Its last messages (a final error, stderr) are still on their way.
            std::thread::sleep(Duration::from_millis(300));
            let mut st = lock(&status);
            // A job that said why it failed (its final error) is reported with that reason.
            if st.job_id == job_id && st.died.is_none() && (st.ended.is_none() || !s.success()) {
                let tail = st.stderr_tail.trim().lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                st.died = Some(format!("the job exited ({s}) before finishing{}", if tail.is_empty() { String::new() } else { format!(":\n{tail}") }));
            }
            break;
        }
    });
}

/// Three ranks (collector, reader, one worker) where mpirun exists, else one process.
pub fn default_ranks() -> usize {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("mpirun").exists()));
    if found { 3 } else { 1 }
}
