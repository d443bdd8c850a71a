//! `beamtime run`: one live query over a whole source, through the job, followed over the same
//! contract the kernel uses (`contract::launch` starts it, `JobEndpoint` hears its frames and
//! its end): the final result is written to a file or printed, and any error a rank met is
//! this command's error.

use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use contract::{Command, FrameHeader, JobEndpoint, JobMessage, JobSpec};
use polars::prelude::DataFrame;

use crate::RunArgs;

/// How long the job may take to exit after its last message.
const EXIT_PATIENCE: Duration = Duration::from_secs(15);
/// How long messages may still arrive after the job's process is gone.
const LAST_MESSAGES: Duration = Duration::from_millis(500);

pub fn run(a: RunArgs) -> Result<(), String> {
    let sql = match (&a.sql, &a.sql_file) {
        (Some(s), _) => s.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?,
        (None, None) => return Err("give --sql or --sql-file".into()),
    };
    if a.ranks == 0 {
        return Err("--ranks must be at least 1".into());
    }
    if let Some(o) = &a.output {
        query::FileFormat::from_path(o).map_err(|e| e.to_string())?;
    }
    xtc::Source::parse(&a.source).map_err(|e| format!("--source: {e}"))?;
    let endpoint = JobEndpoint::bind().map_err(|e| e.to_string())?;
    let mut spec = JobSpec::new(&a.source);
    spec.queries = vec![Command::Set { name: "result".into(), sql, mode: a.mode.clone(), generation: 0 }];
    spec.batch_events = a.batch_events;
    spec.output = a.output.clone();
    if let Some(dir) = &a.calib_dir {
        // Absolute: the ranks may start elsewhere (srun).
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("--calib-dir {}: {e}", dir.display()))?;
        if !dir.is_dir() {
            return Err(format!("--calib-dir {}: not a directory", dir.display()));
        }
        spec.calib_dir = Some(dir.to_string_lossy().into_owned());
    }
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    spec.calib = contract::CalibSetting::parse_all(&a.calib, &cwd)?.iter().map(|s| s.to_arg()).collect();
    spec.connect = Some(endpoint.endpoint().to_string());
    // Only the final frame matters here.
    spec.frame_rate = 1.0;
    let tmp = tempfile::Builder::new().prefix("beamtime-run").tempdir().map_err(|e| e.to_string())?;
    let mut cmd = contract::launch::command(a.launcher.as_deref(), a.ranks, &spec, &tmp.path().join("job.json")).map_err(|e| e.to_string())?;
    cmd.stdout(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start the job ({cmd:?}): {e}"))?;
    let outcome = follow(&endpoint, &mut child);
    let status = wait_or_kill(&mut child);
    let Outcome { result, events, error, finished, .. } = outcome?;
    if let Some(e) = error {
        return Err(e);
    }
    if !finished {
        let status = status.map_or("killed".to_string(), |s| s.to_string());
        return Err(format!("the job exited ({status}) before finishing; its ranks' messages are above"));
    }
    let secs = started.elapsed().as_secs_f64();
    match (&a.output, result) {
        (Some(o), _) => eprintln!("wrote {} ({:.2} s)", o.display(), secs),
        (None, Some(df)) => println!("{df}"),
        (None, None) => {}
    }
    if events > 0 {
        eprintln!("{events} events in {secs:.2} s ({:.0} events/s)", events as f64 / secs);
    }
    Ok(())
}

/// What the job said by the time it ended.
struct Outcome {
    /// The final (whole) result.
    result: Option<DataFrame>,
    events: u64,
    /// The query's or the job's error (the first one reported).
    error: Option<String>,
    /// The job sent its last message.
    finished: bool,
    /// Notices printed so far (the job's list only grows).
    notices: usize,
}

/// Hears the job until its last message, or until its process is gone.
fn follow(endpoint: &JobEndpoint, child: &mut Child) -> Result<Outcome, String> {
    let mut outcome = Outcome { result: None, events: 0, error: None, finished: false, notices: 0 };
    let mut gone: Option<Instant> = None;
    loop {
        match endpoint.recv_timeout(Duration::from_millis(100)) {
            Some(Ok(JobMessage::Frame(h, body))) => take_frame(&mut outcome, &h, &body)?,
            Some(Ok(JobMessage::Finished(f))) => {
                outcome.events = f.events;
                outcome.finished = true;
                if outcome.error.is_none() {
                    outcome.error = f.error;
                }
                return Ok(outcome);
            }
            Some(Ok(JobMessage::Ack(_) | JobMessage::Hello(_))) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
        match gone {
            Some(t) if t.elapsed() > LAST_MESSAGES => return Ok(outcome),
            Some(_) => {}
            None => {
                if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                    gone = Some(Instant::now());
                }
            }
        }
    }
}

fn take_frame(outcome: &mut Outcome, h: &FrameHeader, body: &[u8]) -> Result<(), String> {
    for n in h.notices.iter().skip(outcome.notices) {
        eprintln!("beamtime: {n}");
    }
    outcome.notices = outcome.notices.max(h.notices.len());
    if let Some(e) = &h.error {
        outcome.error.get_or_insert_with(|| e.clone());
    }
    // The final frame is always whole; earlier ones may be deltas.
    if h.done && h.error.is_none() {
        outcome.result = Some(contract::codec::decode(body).map_err(|e| e.to_string())?);
    }
    Ok(())
}

/// The job's exit status, waiting up to [`EXIT_PATIENCE`]; a job that does not end is killed.
fn wait_or_kill(child: &mut Child) -> Option<ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < EXIT_PATIENCE {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("beamtime: the job did not exit within {EXIT_PATIENCE:?} of its end: killing it");
    let _ = child.kill();
    let _ = child.wait();
    None
}
