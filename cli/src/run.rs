//! `beamtime run`: one live query over a whole source, through the job, followed over the same
//! contract the kernel uses (`contract::launch` starts it, `JobEndpoint` hears its frames and
//! its end): the final result is written to a file or printed, and any error a rank met is
//! this command's error.

use std::process::{Child, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use contract::{Command, FrameHeader, JobEndpoint, JobMessage, JobSpec, Outcome};
use polars::prelude::DataFrame;

use crate::RunArgs;

/// How long the job may take to exit after its last message (its ranks leave within 3 s
/// even when MPI_Finalize waits for a lost one).
const EXIT_PATIENCE: Duration = Duration::from_secs(5);
/// How long the job's rank 0 may take to connect (launcher and MPI start-up).
const START_PATIENCE: Duration = Duration::from_secs(60);
/// How long a stopped job may take to send its last message.
const STOP_PATIENCE: Duration = Duration::from_secs(10);
/// How long messages may still arrive after the job's process is gone.
const LAST_MESSAGES: Duration = Duration::from_millis(500);

/// `beamtime run`: prints the error, if any, and exits with the job's outcome (0 complete,
/// 1 error, 2 usage, 3 source error, 4 rank lost, 5 stopped).
pub fn main(a: RunArgs) -> ExitCode {
    match run(a) {
        Ok(Outcome::Complete) => ExitCode::SUCCESS,
        Ok(o) => ExitCode::from(o.exit_code()),
        Err((o, e)) => {
            eprintln!("beamtime: error: {e}");
            ExitCode::from(o.exit_code())
        }
    }
}

/// Ctrl-C or SIGTERM: the job is stopped cleanly (its ranks are in their own process group
/// and do not see the terminal's signal) and the partial result still written.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
}

fn run(a: RunArgs) -> Result<Outcome, (Outcome, String)> {
    let usage = |e: String| (Outcome::Error, e);
    let sql = match (&a.sql, &a.sql_file) {
        (Some(s), _) => s.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| usage(format!("{}: {e}", f.display())))?,
        (None, None) => return Err(usage("give --sql or --sql-file".into())),
    };
    if a.ranks == 0 {
        return Err(usage("--ranks must be at least 1".into()));
    }
    if let Some(o) = &a.output {
        query::FileFormat::from_path(o).map_err(|e| usage(e.to_string()))?;
    }
    if let Some(s) = &a.save {
        smalldata::Format::of(s).map_err(|e| usage(format!("--save {e}")))?;
    }
    xtc::Source::parse(&a.source).map_err(|e| (Outcome::SourceError, format!("--source: {e}")))?;
    start(a, sql).map_err(|e| (Outcome::Error, e))?
}

fn start(a: RunArgs, sql: String) -> Result<Result<Outcome, (Outcome, String)>, String> {
    // A launcher other than the local mpirun may place rank 0 on another node.
    let remote = contract::launch::remote(a.launcher.as_deref(), a.ranks);
    let endpoint = JobEndpoint::bind_for(remote).map_err(|e| e.to_string())?;
    let mut spec = JobSpec::new(&a.source);
    // Absolute: the workers write it, wherever the launcher started them.
    let save = match &a.save {
        Some(s) => Some(std::path::absolute(s).map_err(|e| format!("--save {}: {e}", s.display()))?.to_string_lossy().into_owned()),
        None => None,
    };
    spec.queries = vec![Command::Set { name: "result".into(), sql, mode: a.mode.clone(), generation: 0, save }];
    spec.batch_events = a.batch_events;
    spec.merge_fan_in = a.fan_in;
    let libraries = compile_functions(&a.functions)?;
    spec.functions = libraries.iter().filter_map(|c| match c {
        Command::Library { hash, .. } => Some(hash.clone()),
        _ => None,
    }).collect();
    // Absolute: rank 0 writes it, wherever the launcher started it.
    spec.output = match &a.output {
        Some(o) => Some(std::path::absolute(o).map_err(|e| format!("-o {}: {e}", o.display()))?),
        None => None,
    };
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
    // Killed outright, this command cannot stop the job: its collector watches for that.
    spec.driver = Some(contract::spec::Driver::this_process());
    // Only the final frame matters here.
    spec.frame_rate = 1.0;
    let tmp = tempfile::Builder::new().prefix("beamtime-run").tempdir().map_err(|e| e.to_string())?;
    let mut cmd = contract::launch::command(a.launcher.as_deref(), a.ranks, &spec, &tmp.path().join("job.json")).map_err(|e| e.to_string())?;
    cmd.stdout(Stdio::null());
    // Killed (a batch system's time limit, a test's timeout), this command takes the job along.
    if contract::launch::remote(a.launcher.as_deref(), a.ranks) {
        contract::launch::end_with_starter(&mut cmd);
    }
    let started = Instant::now();
    catch_signals();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start the job ({cmd:?}): {e}"))?;
    let deadline = a.timeout.map(|s| started + Duration::from_secs_f64(s));
    let outcome = follow(&endpoint, &mut child, deadline, libraries);
    let status = wait_or_stop(&mut child);
    let Outcome_ { result, events, error, finished, end, lost, events_lost, stopped_by, printed, .. } = outcome?;
    for l in lost.iter().filter(|l| !printed.contains(l)) {
        eprintln!("beamtime: {l}");
    }
    if let Some(e) = error {
        // A query's error comes in its frames; the job's outcome may not say it.
        return Ok(Err((if end == Outcome::Complete { Outcome::Error } else { end }, e)));
    }
    if !finished {
        let status = status.map_or("killed".to_string(), |s| s.to_string());
        // No last message: its collector died (the other ranks said so above) or was killed.
        return Ok(Err((Outcome::RankLost, format!("the job exited ({status}) before finishing; its ranks' messages are above"))));
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
    match end {
        Outcome::RankLost => eprintln!("beamtime: incomplete: the job lost ranks (said above); {events_lost} events handed to them are not in the result (in flight, or in the states a lost combiner held), nor are any after a lost reader"),
        Outcome::Stopped => eprintln!("beamtime: stopped {}: the result is partial ({events} events)", stopped_by.unwrap_or("by the user")),
        _ => {}
    }
    Ok(Ok(end))
}

/// What the job said by the time it ended.
struct Outcome_ {
    /// The final (whole) result.
    result: Option<DataFrame>,
    events: u64,
    /// The query's or the job's error (the first one reported).
    error: Option<String>,
    /// The job sent its last message.
    finished: bool,
    /// Notices printed so far (the job's list only grows).
    notices: usize,
    printed: Vec<String>,
    /// How the job said it ended, the ranks it lost and the events they held.
    end: Outcome,
    lost: Vec<String>,
    events_lost: u64,
    /// What stopped it, when this command did.
    stopped_by: Option<&'static str>,
}

/// Hears the job until its last message, or until its process is gone; stops it at the
/// deadline (`--timeout`) or on Ctrl-C.
/// `--function` files compiled (or found in the cache), as the commands that ship them.
fn compile_functions(files: &[std::path::PathBuf]) -> Result<Vec<Command>, String> {
    let cache = functions::default_cache();
    let mut out = Vec::new();
    for f in files {
        let source = std::fs::read_to_string(f).map_err(|e| format!("--function {}: {e}", f.display()))?;
        let c = functions::compile(&source, &cache).map_err(|e| format!("--function {}: {e}", f.display()))?;
        let bytes = std::fs::read(&c.path).map_err(|e| format!("{}: {e}", c.path.display()))?;
        let names: Vec<&str> = c.signatures.iter().map(|s| s.name.as_str()).collect();
        eprintln!("beamtime: {} {} from {} ({:.2} s)", if c.cached { "found" } else { "compiled" }, names.join(", "), f.display(), c.seconds);
        out.push(Command::Library { hash: c.hash, library: hex::encode(bytes) });
    }
    Ok(out)
}

fn follow(endpoint: &JobEndpoint, child: &mut Child, deadline: Option<Instant>, mut libraries: Vec<Command>) -> Result<Outcome_, String> {
    let mut outcome = Outcome_ { result: None, events: 0, error: None, finished: false, notices: 0, printed: Vec::new(), end: Outcome::Complete, lost: Vec::new(), events_lost: 0, stopped_by: None };
    let mut gone: Option<Instant> = None;
    let mut stop_sent: Option<Instant> = None;
    let started = Instant::now();
    let mut heard = false;
    loop {
        let message = endpoint.recv_timeout(Duration::from_millis(100));
        heard |= message.is_some();
        if !heard && started.elapsed() > START_PATIENCE {
            contract::launch::stop(child, Duration::from_secs(2));
            return Err(format!(
                "the job's rank 0 did not connect to {} within {START_PATIENCE:?} (could its node reach this one? set BEAMTIME_LINK_ADDRESS); the launcher's messages are above",
                endpoint.endpoint()
            ));
        }
        match message {
            Some(Ok(JobMessage::Frame(h, body))) => take_frame(&mut outcome, &h, &body)?,
            Some(Ok(JobMessage::Finished(f))) => {
                outcome.events = f.events;
                outcome.finished = true;
                outcome.end = f.outcome;
                outcome.lost = f.lost;
                outcome.events_lost = f.events_lost;
                if outcome.error.is_none() {
                    outcome.error = f.error;
                }
                return Ok(outcome);
            }
            Some(Ok(JobMessage::Hello(_))) => {
                // The job waits for its event functions before it starts.
                for l in libraries.drain(..) {
                    endpoint.send(l);
                }
            }
            Some(Ok(JobMessage::Ack(_))) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
        if stop_sent.is_none() {
            let why = if INTERRUPTED.load(Ordering::SeqCst) {
                Some("by an interrupt")
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                Some("by --timeout")
            } else {
                None
            };
            if let Some(why) = why {
                endpoint.send(Command::Stop);
                outcome.stopped_by = Some(why);
                stop_sent = Some(Instant::now());
            }
        }
        // A job that does not end within a few seconds of its stop is ended.
        if stop_sent.is_some_and(|t| t.elapsed() > STOP_PATIENCE) {
            eprintln!("beamtime: the job did not end within {STOP_PATIENCE:?} of its stop: ending its processes");
            contract::launch::stop(child, Duration::from_secs(2));
            return Ok(outcome);
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

fn take_frame(outcome: &mut Outcome_, h: &FrameHeader, body: &[u8]) -> Result<(), String> {
    for n in h.notices.iter().skip(outcome.notices) {
        eprintln!("beamtime: {n}");
        outcome.printed.push(n.clone());
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

/// The job's exit status, waiting up to [`EXIT_PATIENCE`]; a job that does not end is ended
/// (its whole process group). Nothing of it outlives this command.
fn wait_or_stop(child: &mut Child) -> Option<ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < EXIT_PATIENCE {
        if let Ok(Some(s)) = child.try_wait() {
            // Whatever the launcher left behind on this host.
            contract::launch::signal_group(child.id(), libc::SIGKILL);
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("beamtime: the job did not exit within {EXIT_PATIENCE:?} of its end: ending its processes");
    contract::launch::stop(child, Duration::from_secs(2))
}
