//! `beamtime-job`: the live-analysis job. Started by `beamtime run` or the kernel through
//! `contract::launch`: `beamtime-job --in-process --spec-file job.json` for one rank, under a
//! launcher (`mpirun -n N beamtime-job --spec-file job.json`) for more.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use job::inproc::{report_failure, JobSpec};

/// Batches of area-detector frames are megabytes each: mimalloc reuses the freed pages where the
/// system allocator would unmap them and fault them in again for the next batch.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "beamtime-job", about = "The beamtime live-analysis job (run it under mpirun or srun, or with --in-process)")]
struct Args {
    /// The job description as JSON (what `beamtime run` writes).
    #[arg(long, conflicts_with = "spec_file")]
    spec: Option<String>,
    /// A file holding the job description.
    #[arg(long, conflicts_with = "spec_hex")]
    spec_file: Option<std::path::PathBuf>,
    /// The job description as hex-encoded JSON (what launchers pass: no file to share).
    #[arg(long, conflicts_with = "spec")]
    spec_hex: Option<String>,
    /// Reader, worker and collector in this one process, without MPI (also the default when
    /// no MPI launcher started this process).
    #[arg(long)]
    in_process: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let from_hex = args.spec_hex.as_ref().map(|h| hex::decode(h).map_err(|e| e.to_string()).and_then(|b| String::from_utf8(b).map_err(|e| e.to_string())));
    let text = match (&args.spec, &args.spec_file) {
        _ if from_hex.is_some() => match from_hex.unwrap() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("beamtime-job: --spec-hex: {e}");
                return ExitCode::from(contract::EXIT_USAGE);
            }
        },
        (Some(s), _) => s.clone(),
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("beamtime-job: {}: {e}", f.display());
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("beamtime-job: give --spec JSON, --spec-hex HEX or --spec-file FILE");
            return ExitCode::from(2);
        }
    };
    let spec = match JobSpec::from_json(&text) {
        Ok(s) => s,
        Err(e) => {
            // Whoever wrote it still hears why, when it can be reached.
            if let Ok(lenient) = serde_json::from_str::<JobSpec>(&text) {
                report_failure(&lenient, &e.to_string(), contract::Outcome::Error);
            }
            eprintln!("beamtime-job: {e}");
            return ExitCode::from(contract::EXIT_USAGE);
        }
    };
    let ranks = !(args.in_process || !under_mpi_launcher());
    let outcome = if !ranks {
        end_with_parent();
        job::inproc::run_inprocess(&spec, &mut |_| {}).map(Some)
    } else {
        run_ranks(&spec)
    };
    // Ranks linked to a driver end 0: the driver has the outcome (the job's last message), and
    // OpenMPI's mpirun with --enable-recovery waits forever when a rank on another host exits
    // non-zero.
    if ranks && spec.connect.is_some() {
        if let Ok(Some(c)) = &outcome {
            if let Some(e) = &c.error {
                eprintln!("beamtime-job: {e}");
            }
        }
        return ExitCode::SUCCESS;
    }
    // The collector's rank (or the one process) says how the job ended; other ranks end 0.
    match outcome {
        Ok(Some(c)) => {
            if let Some(e) = &c.error {
                eprintln!("beamtime-job: {e}");
            }
            ExitCode::from(c.outcome().exit_code())
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("beamtime-job: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "mpi")]
fn run_ranks(spec: &JobSpec) -> Result<Option<job::Collector>, String> {
    // ranks::run prints its rank's error itself.
    job::ranks::run(spec).map_err(|_| String::new())
}

#[cfg(not(feature = "mpi"))]
fn run_ranks(spec: &JobSpec) -> Result<Option<job::Collector>, String> {
    let e = "this beamtime-job was built without MPI: use one rank (--ranks 1)".to_string();
    report_failure(spec, &e, contract::Outcome::Error);
    Err(e)
}

/// Whether mpirun, srun or another PMI launcher started this process.
fn under_mpi_launcher() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID", "MPI_LOCALNRANKS"].iter().any(|v| std::env::var_os(v).is_some())
}

/// A job in one process has no launcher to end it: when its driver (the kernel, `beamtime
/// run`) goes away without stopping it, it ends too instead of reading on forever.
fn end_with_parent() {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            eprintln!("beamtime-job: the process that started it is gone: exiting");
            std::process::exit(1);
        }
    });
}
