//! `beamtime`: the command-line entry point. Each subcommand hands over to the crate that owns it.

mod dump;

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
    /// Run the simulated DAQ: write a run in the LCLS layout (xtc2 + smd), optionally in real time.
    Sim(sim::cli::SimArgs),
}

#[derive(clap::Args)]
struct DumpArgs {
    /// A file, `files=a,b`, `exp=<exp>:run=<n>[:dir=<xtc dir>][:live]`, or `xtc://<dir>?exp=…&run=…`.
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
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {
        Command::Dump(a) => dump_source(&a)
            .and_then(|src| {
                let format = if a.json { dump::Format::Json } else { a.format };
                dump::run(&src, &dump::Options { format, max_array: a.max_array, stats: a.stats, limit: a.limit })
            })
            .map_err(|e| e.to_string()),
        Command::Sim(a) => sim::cli::run(a).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("beamtime: error: {e}");
            ExitCode::FAILURE
        }
    }
}
