//! Starting the MPI job: a launcher template (`mpirun -n {n} {job}`, `srun -n {n} {job}`, or
//! any command) filled with the rank count and the `beamtime-job` command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::inproc::JobSpec;

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

/// The command that runs `spec` on `ranks` ranks; the spec goes into `spec_file`.
pub fn command(template: &str, ranks: usize, spec: &JobSpec, spec_file: &Path) -> Result<Command, String> {
    std::fs::write(spec_file, serde_json::to_vec_pretty(spec).unwrap()).map_err(|e| format!("{}: {e}", spec_file.display()))?;
    let job = format!("{} --spec-file {}", job_executable().display(), spec_file.display());
    let mut line = template.replace("{n}", &ranks.to_string());
    if line.contains("{job}") {
        line = line.replace("{job}", &job);
    } else {
        line = format!("{line} {job}");
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let (prog, args) = words.split_first().ok_or("the launcher template is empty")?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    Ok(cmd)
}
