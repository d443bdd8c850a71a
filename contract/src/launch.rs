//! Starting the job: the one function the kernel and `beamtime run` use. One rank runs
//! `beamtime-job --in-process` (reader, worker and collector in that one process); more go
//! through a launcher template (`mpirun -n {n} {job}`, `srun -n {n} {job}`, or any command)
//! filled with the rank count and the `beamtime-job` command line.

use std::path::{Path, PathBuf};
use std::process::Command;

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
/// [`default_template`], only for more than one); the spec goes into `spec_file`.
pub fn command(launcher: Option<&str>, ranks: usize, spec: &JobSpec, spec_file: &Path) -> Result<Command, ContractError> {
    let text = serde_json::to_vec_pretty(spec).expect("job descriptions serialize");
    std::fs::write(spec_file, text).map_err(|e| ContractError::Launch(format!("{}: {e}", spec_file.display())))?;
    let job = job_executable();
    if ranks <= 1 {
        let mut cmd = Command::new(job);
        cmd.arg("--in-process").arg("--spec-file").arg(spec_file);
        return Ok(cmd);
    }
    let template = launcher.map(str::to_string).unwrap_or_else(default_template);
    let job = format!("{} --spec-file {}", job.display(), spec_file.display());
    let mut line = template.replace("{n}", &ranks.to_string());
    if line.contains("{job}") {
        line = line.replace("{job}", &job);
    } else {
        line = format!("{line} {job}");
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let (prog, args) = words.split_first().ok_or_else(|| ContractError::Launch("the launcher template is empty".into()))?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    Ok(cmd)
}
