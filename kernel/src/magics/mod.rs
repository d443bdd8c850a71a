//! The magics: ONE table whose entries carry their names, options, help and handler. Running a
//! magic line, `%help`/`%load?`, completion and inspection all read it.

mod expand;
mod functions;
mod live_queries;
mod sql;
pub mod syntax;
mod tables;

use serde_json::json;

use crate::cell::{Bundle, CellError};
use syntax::{Args, Call, Magic, Opt, Session};

pub use expand::expand_env;

const VIEW: Opt = Opt { name: "--view", value: Some("KIND"), help: "auto, table, line, scatter, hist, heatmap, strip or html: how the result is shown" };

pub const MAGICS: &[Magic] = &[
    Magic {
        name: "sql",
        cell: true,
        usage: "%%sql [--name NAME] [--rows N] [--view table|line|scatter|hist|heatmap|strip|auto] [x=COL] [y=COL[,COL]]\n<SQL query>",
        summary: "Run SQL (polars) over the kernel's tables and over files (read_parquet('f'), read_csv('f'), read_ipc('f')). \
                  Dotted column names such as ipm2.raw.sum work unquoted. With --name the result is kept as a table; \
                  --view shows it as a widget (a sortable table or a plot) beside the static table. \
                  bin, hist, var_pop and stddev_pop work as in %%live.",
        options: &[
            Opt { name: "--name", value: Some("NAME"), help: "keep the result as table NAME" },
            Opt { name: "--rows", value: Some("N"), help: "rows shown (default 20)" },
            VIEW,
        ],
        words: &[],
        example: "%%sql --name per_step\nSELECT step, avg(diode.raw.signal) AS signal FROM events GROUP BY step ORDER BY step",
        run: sql::sql,
    },
    Magic {
        name: "load",
        cell: false,
        usage: "%load run NAME SOURCE [--columns a,b,…]\n%load NAME FILE",
        summary: "Load the events table of a run (psana source string, e.g. exp=xpptut15:run=14:dir=/path/xtc) \
                  or a file (.parquet, .arrow/.ipc/.feather, .arrows, .csv) as table NAME.",
        options: &[Opt { name: "--columns", value: Some("a,b,…"), help: "load only these columns of the run" }],
        words: &["run"],
        example: "%load run events exp=xpptut15:run=14:dir=../shared/data/xtc2/mixed_rate",
        run: tables::load,
    },
    Magic {
        name: "save",
        cell: false,
        usage: "%save NAME FILE",
        summary: "Write table NAME to FILE; the format follows the extension (.parquet, .arrow, .csv).",
        options: &[],
        words: &[],
        example: "%save per_step per_step.parquet",
        run: tables::save,
    },
    Magic {
        name: "tables",
        cell: false,
        usage: "%tables",
        summary: "List the kernel's tables with their shapes.",
        options: &[],
        words: &[],
        example: "%tables",
        run: tables::tables,
    },
    Magic {
        name: "describe",
        cell: false,
        usage: "%describe NAME",
        summary: "Show the columns of table NAME with their types, null counts and ranges.",
        options: &[],
        words: &[],
        example: "%describe events",
        run: tables::describe,
    },
    Magic {
        name: "drop",
        cell: false,
        usage: "%drop NAME",
        summary: "Forget table NAME.",
        options: &[],
        words: &[],
        example: "%drop per_step",
        run: tables::drop,
    },
    Magic {
        name: "source",
        cell: false,
        usage: "%source SOURCE [--calib-dir DIR] [--calib [DET:]KEY=VALUE]… [--launcher mpirun|slurm|T] [--ranks N]",
        summary: "Set the data source of live queries: a psana string, e.g. exp=<exp>:run=<n>:dir=<xtc dir>:live \
                  (small data as the DAQ writes it) or a finished run without :live.",
        options: &[
            Opt { name: "--calib-dir", value: Some("DIR"), help: "calibration constants in psana's calib-dir layout, for <det>.raw.calib/.raw.image" },
            Opt {
                name: "--calib",
                value: Some("[DET:]KEY=VALUE"),
                help: "one calibration setting, repeatable: pedestals=FILE (any constant type), mask=FILE, cmpars=7,1,100, cache=FILE (psana's calibconst.pkl), exports=DIR (cdb get files)",
            },
            Opt { name: "--launcher", value: Some("T"), help: "how the source's jobs start their ranks: mpirun (default), slurm (srun -n {n} --mpi=pmix {job}, in the allocation), or a template with {n} and {job}" },
            Opt { name: "--ranks", value: Some("N"), help: "ranks of the source's jobs (a %%live --ranks wins)" },
        ],
        words: &[],
        example: "%source exp=tstx00117:run=1:dir=/tmp/beamtime-sim:live",
        run: live_queries::source,
    },
    Magic {
        name: "live",
        cell: true,
        usage: "%%live NAME [--ranks N] [--rate HZ] [--mode total|run|step] [--window 10s] [--launcher T] [--save PATH] \
                [--view auto|table|line|scatter|hist|heatmap|strip|html] [x=COL] [y=COL[,COL]]\n<SQL over events>",
        summary: "Run SQL over every event of the source while it is taken, in parallel (MPI ranks), merged exactly; \
                  the result updates in the cell and is kept as table NAME (use it in %%sql, %save). The first %%live \
                  starts the job, later ones join it. Aggregates: count, count(DISTINCT x), sum, min, max, avg, var/stddev, first/last, \
                  bin(x, w), hist(x, lo, hi, n); GROUP BY any expression; row queries stream rows. \
                  The result shows as a live widget (table or plot chosen from its shape, or --view; needs \
                  `pip install anywidget` where Jupyter runs; --view html shows a plain table).",
        options: &[
            Opt { name: "--ranks", value: Some("N"), help: "MPI ranks of the job (1: one process; default 3 where mpirun exists)" },
            Opt { name: "--rate", value: Some("HZ"), help: "result frames per second at most (default 5)" },
            Opt { name: "--mode", value: Some("M"), help: "total, run or step: which events the result covers" },
            Opt { name: "--window", value: Some("W"), help: "the last W of event time (10s) or the newest W events (100000)" },
            Opt { name: "--launcher", value: Some("T"), help: "how to start the ranks, e.g. 'srun -n {n} {job}'" },
            Opt { name: "--save", value: Some("PATH"), help: "save one row per event (timestamp, run, step and the selected columns), written by the workers: .h5 in psana's smalldata layout (part files joined by virtual datasets) or .parquet (a folder of part files); an aggregate's final result is saved as summaries" },
            VIEW,
        ],
        words: &[],
        example: "%%live per_step\nSELECT step, count(*) AS n, avg(diode.raw.signal) AS signal FROM events GROUP BY step",
        run: live_queries::live_query,
    },
    Magic {
        name: "live",
        cell: false,
        usage: "%live status | wait [NAME] [--timeout S] | stop [NAME] | reset [NAME] | restart",
        summary: "%live status shows events, rate, drops, ranks and freshness; wait blocks until the results are final; \
                  restart starts the job again.",
        options: &[Opt { name: "--timeout", value: Some("S"), help: "how long `wait` waits, in seconds (default 600)" }],
        words: crate::live::options::LIVE_SUBCOMMANDS,
        example: "%live status",
        run: live_queries::live_command,
    },
    Magic {
        name: "function",
        cell: true,
        usage: "%%function\n<Rust functions over event values>",
        summary: "Define event functions: plain Rust functions over an event's values (f64, f32, i64 … u8, bool, an Option of one, \
                  or a slice &[T] for an array column such as an image) returning a value, an Option (null) or a Vec (an array). \
                  They are compiled once (cached by content), then called by name like built-ins in %%live (on every rank of the job), \
                  %%sql and `beamtime run --function FILE.rs`. A panic fails only the query, naming the event; redefining a function \
                  starts the live queries that call it afresh. Helpers with other types go in a `mod` block.",
        options: &[],
        words: &[],
        example: "%%function\nfn ratio(signal: f64, i0: f64) -> Option<f64> {\n    if i0 > 0.1 { Some(signal / i0) } else { None }\n}",
        run: functions::function,
    },
    Magic {
        name: "help",
        cell: false,
        usage: "%help [MAGIC]",
        summary: "List the magics, or explain one. `%load?` (or Shift-Tab) works too.",
        options: &[],
        words: &[],
        example: "%help sql",
        run: help,
    },
];

/// The forms of magic `name` (`%%live` and `%live` are two), cell form first.
pub fn forms(name: &str) -> Vec<&'static Magic> {
    let mut found: Vec<&'static Magic> = MAGICS.iter().filter(|m| m.name == name).collect();
    found.sort_by_key(|m| !m.cell);
    found
}

/// The entry of `%name` (`cell` false) or `%%name`.
pub fn find(name: &str, cell: bool) -> Option<&'static Magic> {
    MAGICS.iter().find(|m| m.name == name && m.cell == cell)
}

/// `%help NAME`: the usage of each form, what it does, its options and an example.
pub fn help_text(name: &str) -> Option<String> {
    let forms = forms(name);
    if forms.is_empty() {
        return None;
    }
    let usage: Vec<&str> = forms.iter().map(|m| m.usage).collect();
    let mut text = usage.join("\n");
    for m in &forms {
        text.push_str(&format!("\n\n{}", m.summary));
    }
    let options: Vec<String> = forms
        .iter()
        .flat_map(|m| m.options.iter().map(move |o| (m, o)))
        .map(|(m, o)| format!("  {:<22} {} ({})", format!("{} {}", o.name, o.value.unwrap_or("")).trim_end(), o.help, m.spelled()))
        .collect();
    if !options.is_empty() {
        text.push_str(&format!("\n\nOptions:\n{}", options.join("\n")));
    }
    let examples: Vec<&str> = forms.iter().map(|m| m.example).collect();
    text.push_str(&format!("\n\nExample:\n{}", examples.join("\n")));
    Some(text)
}

/// `%help` without argument.
pub fn overview() -> String {
    let mut s = String::from("beamtime magics (everything else in a cell is Rust):\n\n");
    for m in MAGICS {
        s.push_str(&format!("  {:<10} {}\n", m.spelled(), m.usage.lines().next().unwrap_or_default()));
    }
    s.push_str("\n%help MAGIC or MAGIC? explains one.");
    s
}

fn help(call: &Call, _s: &mut Session) -> Result<Option<Bundle>, CellError> {
    let text = match call.args.positional.first() {
        None => overview(),
        Some(m) => help_of(m, false)?,
    };
    Ok(Some(json!({"text/plain": text})))
}

/// The help of `spelled` (`%load`, `live`…), or the unknown-magic error.
fn help_of(spelled: &str, cell: bool) -> Result<String, CellError> {
    help_text(spelled.trim_start_matches('%')).ok_or_else(|| unknown_magic(spelled.trim_start_matches('%'), cell))
}

fn unknown_magic(name: &str, cell: bool) -> CellError {
    let known: Vec<String> = MAGICS.iter().map(|m| m.spelled()).collect();
    let spelled = format!("{}{name}", if cell { "%%" } else { "%" });
    CellError::new("UsageError", format!("unknown magic {spelled}; the magics are {} (see %help)", known.join(", ")))
}

/// Runs a magic line (what follows `%`) or a cell magic (`line` follows `%%`, `body` below).
pub fn run(line: &str, body: &str, cell: bool, session: &mut Session, ctx: &crate::cell::CellContext) -> Result<Option<Bundle>, CellError> {
    let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let name = name.trim();
    // `%load?`, `%%live?`: the magic's help.
    if let Some(base) = name.strip_suffix('?') {
        return Ok(Some(json!({"text/plain": help_of(base, cell)?})));
    }
    let Some(magic) = find(name, cell) else {
        if !cell && find(name, true).is_some() {
            return Err(CellError::new("UsageError", format!("%%{name} is a cell magic: put the query on the lines below `%%{name}`")));
        }
        return Err(unknown_magic(name, cell));
    };
    let call = Call { magic, args: Args::parse(magic, rest)?, body, ctx };
    (magic.run)(&call, session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_in_the_table_parses_and_no_other() {
        for m in MAGICS {
            for o in m.options {
                let line = match o.value {
                    Some(_) => format!("x {} 1", o.name),
                    None => format!("x {}", o.name),
                };
                let args = Args::parse(m, &line).unwrap_or_else(|e| panic!("{} {}: {}", m.spelled(), o.name, e.evalue));
                assert_eq!(args.opt(o.name), o.value.map(|_| "1"), "{} {}", m.spelled(), o.name);
            }
            let e = Args::parse(m, "x --no-such-option 1").err().expect("an unknown option is refused");
            assert!(e.evalue.contains("unknown option --no-such-option"), "{}", e.evalue);
        }
        // `%live wait --timeout` is in the table, so completion offers it.
        let live = find("live", false).unwrap();
        assert!(live.option("--timeout").is_some());
        assert_eq!(Args::parse(live, "wait q --timeout 5").unwrap().positional, ["wait", "q"]);
    }

    #[test]
    fn help_reads_the_table() {
        let text = help_text("live").unwrap();
        let usage = text.split("\n\n").next().unwrap();
        assert!(usage.starts_with("%%live NAME") && usage.contains("\n%live status"), "{usage}");
        for m in forms("live") {
            for o in m.options {
                assert!(text.contains(o.name), "{} missing from the help", o.name);
            }
        }
        assert!(overview().contains("  %live "), "{}", overview());
    }
}
