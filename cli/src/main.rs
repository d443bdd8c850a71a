//! `beamtime`: the command-line entry point. Each subcommand hands over to the crate that owns it.

mod dump;
mod dump_calib;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtc::source::RunSource;
use xtc::Source;

#[derive(Parser)]
#[command(name = "beamtime", version, about = "Live LCLS analysis in Jupyter: XTC2 reading, simulated DAQ, live queries")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the datagrams of a file, a run, or a psana source string.
    Dump(DumpArgs),
    /// Run the simulated DAQ: write a run in the LCLS layout (xtc2 + smd), optionally in real time,
    /// or serve it live through shared memory (--shmem).
    Sim(sim::cli::SimArgs),
    /// The Jupyter kernel (started by Jupyter through the kernelspec).
    Kernel {
        /// The connection file written by the Jupyter server.
        #[arg(short = 'f', long = "connection-file")]
        connection_file: PathBuf,
    },
    /// Run a live query over a whole source with the MPI job (post-run, scripting, Slurm batch).
    Run(RunArgs),
    /// Install the kernelspec "Beamtime (Rust)" so Jupyter can start this kernel.
    Install(InstallArgs),
    /// Remove the kernelspec.
    Uninstall(InstallArgs),
}

#[derive(clap::Args)]
struct InstallArgs {
    /// Into the user's Jupyter data dir ($JUPYTER_DATA_DIR or ~/.local/share/jupyter) [default].
    #[arg(long, conflicts_with_all = ["sys_prefix", "prefix"])]
    user: bool,
    /// Into the active Python environment (virtualenv/conda/sys.prefix of python3).
    #[arg(long, conflicts_with = "prefix")]
    sys_prefix: bool,
    /// Into PREFIX/share/jupyter.
    #[arg(long)]
    prefix: Option<PathBuf>,
    /// Kernelspec name.
    #[arg(long, default_value = kernel::install::DEFAULT_NAME)]
    name: String,
}

impl InstallArgs {
    fn location(&self) -> kernel::install::Location {
        use kernel::install::Location;
        match (&self.prefix, self.sys_prefix) {
            (Some(p), _) => Location::Prefix(p.clone()),
            (None, true) => Location::SysPrefix,
            _ => Location::User,
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// A psana source string: `exp=<exp>:run=<n>[:dir=<xtc dir>][:live]`, `files=…`.
    #[arg(long)]
    source: String,
    /// The query: SQL over the `events` table (see `%help live` in the kernel).
    #[arg(long, conflicts_with = "sql_file", required_unless_present = "sql_file")]
    sql: Option<String>,
    /// A file holding the query.
    #[arg(long)]
    sql_file: Option<PathBuf>,
    /// What the result covers: total, run, step, or a window of event time (10s, 500ms).
    #[arg(long, default_value = "total")]
    mode: String,
    /// MPI ranks: 1 runs the job as one process without MPI; 2 = collector + a worker that
    /// reads; more = collector, reader and N-2 workers.
    #[arg(long, default_value_t = 1)]
    ranks: usize,
    /// How to start N ranks: `mpirun` (the default), `slurm` (`srun -n {n} --mpi=pmix {job}`,
    /// inside an allocation or making one), or a template where `{n}` and `{job}` are filled in.
    #[arg(long)]
    launcher: Option<String>,
    /// Stop the job after this many seconds; the partial result is still printed or written
    /// (exit status 5).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Where the result goes: .parquet, .arrow (IPC file) or .csv; printed when omitted.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Save one row per event (timestamp, run, step and the query's columns), written by the
    /// workers while the job runs: .h5 in psana's smalldata layout (`<name>_part<N>.h5` per
    /// worker joined into PATH by virtual datasets) or .parquet (a folder of part files that
    /// reads as one table). For an aggregate query, its final result (HDF5: as summaries).
    #[arg(long, value_name = "PATH")]
    save: Option<PathBuf>,
    /// L1 events per batch handed to a worker.
    #[arg(long, default_value_t = contract::spec::DEFAULT_BATCH_EVENTS)]
    batch_events: usize,
    /// Rust event functions for the query (`fn ratio(a: f64, b: f64) -> f64 { a / b }`):
    /// compiled once (cached), shipped to every rank, called by name in --sql. Repeatable.
    #[arg(long = "function", value_name = "FILE.rs")]
    functions: Vec<PathBuf>,
    /// Workers' states merged per rank: with more workers than this, they merge in a tree
    /// (groups of this many, each combined by its first worker) before the collector; 0 never.
    #[arg(long, default_value_t = contract::spec::DEFAULT_MERGE_FAN_IN, value_name = "N")]
    fan_in: usize,
    /// Calibration constants in psana's calib-dir layout
    /// (`DIR/Jungfrau::CalibV1/<detector>/pedestals/<begin>-end.data`), for `<det>.raw.calib`.
    #[arg(long, value_name = "DIR")]
    calib_dir: Option<PathBuf>,
    /// One calibration setting, repeatable: `[DET:]KEY=VALUE` with KEY a constant type
    /// (`pedestals=FILE`, `pixel_gain=FILE`, … `geometry=FILE`; .npy or NDArrIO text), `mask=FILE`
    /// (a user mask ANDed with psana's), `cmpars=ALG,MODE,CORMAX` (psana's common mode),
    /// `cache=FILE` (psana2's calibconst.pkl) or `exports=DIR` (`cdb get` files)
    #[arg(long, value_name = "[DET:]KEY=VALUE")]
    calib: Vec<String>,
}

#[derive(clap::Args)]
struct DumpArgs {
    /// A file, `files=a,b`, `exp=<exp>:run=<n>[:dir=<xtc dir>][:live]`, `xtc://<dir>?exp=…&run=…`,
    /// or a shared-memory server: `shmem=<tag>.<index>[:stop=endrun|endstep|unconfigure|no]`,
    /// `shmem://<tag>?stop=no`.
    source: Option<String>,
    /// Experiment (with --run, instead of a source string).
    #[arg(long)]
    exp: Option<String>,
    /// Run number (with --exp).
    #[arg(long)]
    run: Option<u32>,
    /// The xtc directory of the run (holding smalldata/).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Follow growing files until EndRun.
    #[arg(long)]
    live: bool,
    /// One JSON object per datagram per line (same as --format json).
    #[arg(long)]
    json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: dump::Format,
    /// Decode every field of every datagram and print counts and throughput instead.
    #[arg(long)]
    stats: bool,
    /// How many leading values of each array to print.
    #[arg(long, default_value_t = 16)]
    max_array: usize,
    /// Stop after this many events/transitions.
    #[arg(long)]
    limit: Option<u64>,
    /// Also print each area detector's calibrated frame (`det.raw.calib`) after each event,
    /// with constants in psana's calib-dir layout
    #[arg(long, value_name = "DIR")]
    calib_dir: Option<PathBuf>,
    /// A calibration setting, repeatable, as for `beamtime run` (`[DET:]KEY=VALUE`)
    #[arg(long, value_name = "[DET:]KEY=VALUE")]
    calib: Vec<String>,
}

/// The constants `dump --calib-dir/--calib` calibrates with, checked before reading anything.
fn dump_calib_source(a: &DumpArgs) -> Result<Option<detector::setup::CalibSource>, String> {
    if a.calib_dir.is_none() && a.calib.is_empty() {
        return Ok(None);
    }
    if let Some(d) = a.calib_dir.as_ref().filter(|d| !d.is_dir()) {
        return Err(format!("--calib-dir {}: no such directory", d.display()));
    }
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    let settings = detector::settings::CalibSetting::parse_all(&a.calib, &cwd)?;
    Ok(Some(detector::setup::CalibSource::new(a.calib_dir.clone(), settings)))
}

fn dump_source(a: &DumpArgs) -> Result<Source, xtc::Error> {
    match (&a.source, &a.exp, a.run) {
        (Some(s), None, None) => {
            let mut src = Source::parse(s)?;
            if let Source::Run(r) = &mut src {
                if let Some(d) = &a.dir {
                    r.dir = d.clone();
                }
                if a.live && r.live.is_none() {
                    r.live = Some(Default::default());
                }
            }
            Ok(src)
        }
        (None, Some(exp), Some(run)) => Ok(Source::Run(RunSource {
            exp: exp.clone(),
            run,
            dir: a.dir.clone().unwrap_or_else(|| RunSource::default_dir(exp)),
            live: a.live.then(Default::default),
        })),
        _ => Err(xtc::Error::Usage("give a source (file or psana string), or --exp and --run".into())),
    }
}

fn main() -> ExitCode {
    // evcxr re-runs this executable as its runtime child: that must be caught before anything.
    kernel::runtime_hook();
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {
        Command::Dump(a) => dump_source(&a)
            .and_then(|src| {
                let format = if a.json { dump::Format::Json } else { a.format };
                let calib = dump_calib_source(&a).map_err(xtc::Error::Usage)?;
                dump::run(&src, dump::Options { format, max_array: a.max_array, stats: a.stats, limit: a.limit, calib })
            })
            .map_err(|e| e.to_string()),
        Command::Sim(a) => sim::cli::run(a).map_err(|e| e.to_string()),
        Command::Run(a) => return run::main(a),
        Command::Kernel { connection_file } => kernel::run(&connection_file),
        Command::Install(a) => std::env::current_exe()
            .map_err(|e| format!("cannot find this executable: {e}"))
            .and_then(|exe| kernel::install::install(&a.location(), &a.name, &exe))
            .map(|dir| println!("installed kernelspec {} in {}", a.name, dir.display())),
        Command::Uninstall(a) => {
            let locations = if a.user || a.sys_prefix || a.prefix.is_some() {
                vec![a.location()]
            } else {
                vec![kernel::install::Location::User, kernel::install::Location::SysPrefix]
            };
            kernel::install::uninstall(&locations, &a.name).and_then(|removed| {
                if removed.is_empty() {
                    return Err(format!("no kernelspec named {} found", a.name));
                }
                for d in removed {
                    println!("removed {}", d.display());
                }
                Ok(())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beamtime: error: {e}");
            ExitCode::FAILURE
        }
    }
}
