//! `beamtime-job`: the live-analysis job as an MPI program. Started by `beamtime run` or the
//! kernel through a launcher (`mpirun -n N beamtime-job --spec-file job.json`).

use std::process::ExitCode;

use clap::Parser;
use job::inproc::JobSpec;

#[derive(Parser)]
#[command(name = "beamtime-job", about = "The beamtime live-analysis job (run it under mpirun or srun)")]
struct Args {
    /// The job description as JSON (what `beamtime run` writes).
    #[arg(long, conflicts_with = "spec_file")]
    spec: Option<String>,
    /// A file holding the job description.
    #[arg(long)]
    spec_file: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let text = match (&args.spec, &args.spec_file) {
        (Some(s), _) => s.clone(),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("beamtime-job: {}: {e}", f.display());
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("beamtime-job: give --spec JSON or --spec-file FILE");
            return ExitCode::from(2);
        }
    };
    let spec: JobSpec = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("beamtime-job: bad job description: {e}");
            return ExitCode::from(2);
        }
    };
    match job::ranks::run(&spec) {
        Ok(Some(c)) if c.error.is_some() => {
            eprintln!("beamtime-job: {}", c.error.unwrap());
            ExitCode::FAILURE
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
