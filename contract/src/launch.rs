//! Starting the job: the one function the kernel and `beamtime run` use. One rank runs
//! `beamtime-job --in-process` (reader, worker and collector in that one process); more go
//! through a launcher template (`mpirun -n {n} {job}`, `srun -n {n} {job}`, or any command)
//! filled with the rank count and the `beamtime-job` command line.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::{ContractError, JobSpec};

/// The default template: OpenMPI's mpirun, oversubscribing (more ranks than cores is normal
/// on a laptop or a 2-core VM), with recovery on (a dead worker must not take the job down:
/// the collector reports it and goes on), and allowed to run as root where containers need it.
pub fn default_template() -> String {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut t = String::from("mpirun -n {n} --oversubscribe --enable-recovery");
    if root {
        t.push_str(" --allow-run-as-root");
    }
    t.push_str(" {job}");
    t
}

/// Slurm's launcher: one task per rank in the current allocation (or a new one). OpenMPI
/// under srun needs PMIx (Debian's has no PMI-2).
pub const SLURM_TEMPLATE: &str = "srun -n {n} --mpi=pmix {job}";

/// The template a `--launcher` value names: `mpirun` and `slurm` are presets, anything else is
/// a template itself.
pub fn template(launcher: Option<&str>) -> String {
    match launcher {
        None | Some("mpirun") => default_template(),
        Some("slurm" | "srun") => SLURM_TEMPLATE.to_string(),
        Some(t) => t.to_string(),
    }
}

/// `$BEAMTIME_JOB`, else `beamtime-job` beside this executable (an install or a cargo target
/// dir), else on PATH.
pub fn job_executable() -> PathBuf {
    if let Some(p) = std::env::var_os("BEAMTIME_JOB") {
        return PathBuf::from(p);
    }
    let beside = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("beamtime-job")));
    match beside {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("beamtime-job"),
    }
}

/// The command that runs `spec` on `ranks` ranks (the launcher template, default
/// [`default_template`], only for more than one); the spec goes into `spec_file`. It starts in
/// a process group of its own, so that [`stop`] reaches the launcher and everything it started
/// on this host (the launcher forwards the signal to the ranks on other hosts).
pub fn command(launcher: Option<&str>, ranks: usize, spec: &JobSpec, spec_file: &Path) -> Result<Command, ContractError> {
    let text = serde_json::to_vec_pretty(spec).expect("job descriptions serialize");
    std::fs::write(spec_file, &text).map_err(|e| ContractError::Launch(format!("{}: {e}", spec_file.display())))?;
    let job = job_executable();
    if ranks <= 1 {
        let mut cmd = Command::new(job);
        cmd.arg("--in-process").arg("--spec-file").arg(spec_file).process_group(0);
        return Ok(cmd);
    }
    let template = template(launcher);
    // On the command line itself where it fits: ranks on other nodes may not see this host's
    // temporary directory (node-local /tmp). Hex has no character a shell or a launcher splits.
    let inline = hex::encode(serde_json::to_vec(spec).expect("job descriptions serialize"));
    let job = if inline.len() <= MAX_INLINE_SPEC {
        format!("{} --spec-hex {inline}", job.display())
    } else {
        format!("{} --spec-file {}", job.display(), spec_file.display())
    };
    let mut line = template.replace("{n}", &ranks.to_string());
    if line.contains("{job}") {
        line = line.replace("{job}", &job);
    } else {
        line = format!("{line} {job}");
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let (prog, args) = words.split_first().ok_or_else(|| ContractError::Launch("the launcher template is empty".into()))?;
    let mut cmd = Command::new(prog);
    cmd.args(args).process_group(0);
    Ok(cmd)
}

/// The longest job description passed inline (one argument may hold 128 KiB on Linux).
const MAX_INLINE_SPEC: usize = 100_000;

/// Ends a job started from [`command`]: SIGTERM to its whole process group (the launcher
/// forwards it to every rank), SIGKILL to the group after `patience`; waits for the child.
pub fn stop(child: &mut Child, patience: Duration) -> Option<ExitStatus> {
    if let Ok(Some(s)) = child.try_wait() {
        signal_group(child.id(), libc::SIGKILL); // anything it left behind
        return Some(s);
    }
    signal_group(child.id(), libc::SIGTERM);
    let t = Instant::now();
    while t.elapsed() < patience {
        if let Ok(Some(s)) = child.try_wait() {
            signal_group(child.id(), libc::SIGKILL);
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group(child.id(), libc::SIGKILL);
    child.wait().ok()
}

/// True when the job's rank 0 may run on another host (a launcher other than the local
/// `mpirun`): its collector cannot watch the driver there, so [`end_with_starter`] is the way.
/// A local job is stopped by its collector instead, which lets every rank end cleanly (a
/// signalled mpirun kills its ranks and leaves their shared-memory segments behind).
pub fn remote(launcher: Option<&str>, ranks: usize) -> bool {
    ranks > 1 && launcher.is_some_and(|l| l != "mpirun")
}

/// The job started by `cmd` gets SIGTERM when the thread that starts it ends (the driver
/// killed or crashed): its launcher then ends its ranks. For drivers that start the job from a
/// thread that lives as long as they do (`beamtime run`'s main thread, the kernel's cell thread).
pub fn end_with_starter(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// Signals the process group led by `pid` (what [`command`]'s process_group(0) made).
pub fn signal_group(pid: u32, signal: i32) {
    // SAFETY: kill has no memory preconditions; a negative pid names the group.
    unsafe { libc::kill(-(pid as libc::pid_t), signal) };
}
