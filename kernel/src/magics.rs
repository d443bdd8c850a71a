//! The magics: their names, options and help (one table, used by dispatch, `%help`,
//! completion and inspection).

pub struct Magic {
    /// Without `%`; cell magics are written `%%name`.
    pub name: &'static str,
    pub cell: bool,
    pub usage: &'static str,
    pub summary: &'static str,
    pub options: &'static [&'static str],
    pub example: &'static str,
}

pub const MAGICS: &[Magic] = &[
    Magic {
        name: "sql",
        cell: true,
        usage: "%%sql [--name NAME] [--rows N] [--view table|line|scatter|hist|heatmap|strip|auto] [x=COL] [y=COL[,COL]]\n<SQL query>",
        summary: "Run SQL (polars) over the kernel's tables and over files (read_parquet('f'), read_csv('f'), read_ipc('f')). \
                  Dotted column names such as ipm2.raw.sum work unquoted. With --name the result is kept as a table; \
                  --view shows it as a widget (a sortable table or a plot) beside the static table. \
                  bin, hist, var_pop and stddev_pop work as in %%live.",
        options: &["--name", "--rows", "--view"],
        example: "%%sql --name per_step\nSELECT step, avg(diode.raw.signal) AS signal FROM events GROUP BY step ORDER BY step",
    },
    Magic {
        name: "load",
        cell: false,
        usage: "%load run NAME SOURCE [--columns a,b,…]\n%load NAME FILE",
        summary: "Load the events table of a run (psana source string, e.g. exp=xpptut15:run=14:dir=/path/xtc) \
                  or a file (.parquet, .arrow/.ipc/.feather, .arrows, .csv) as table NAME.",
        options: &["--columns"],
        example: "%load run events exp=xpptut15:run=14:dir=../shared/data/xtc2/mixed_rate",
    },
    Magic {
        name: "save",
        cell: false,
        usage: "%save NAME FILE",
        summary: "Write table NAME to FILE; the format follows the extension (.parquet, .arrow, .csv).",
        options: &[],
        example: "%save per_step per_step.parquet",
    },
    Magic {
        name: "tables",
        cell: false,
        usage: "%tables",
        summary: "List the kernel's tables with their shapes.",
        options: &[],
        example: "%tables",
    },
    Magic {
        name: "describe",
        cell: false,
        usage: "%describe NAME",
        summary: "Show the columns of table NAME with their types, null counts and ranges.",
        options: &[],
        example: "%describe events",
    },
    Magic {
        name: "drop",
        cell: false,
        usage: "%drop NAME",
        summary: "Forget table NAME.",
        options: &[],
        example: "%drop per_step",
    },
    Magic {
        name: "source",
        cell: false,
        usage: "%source SOURCE [--calib-dir DIR]",
        summary: "Set the data source of live queries: a psana string, e.g. exp=<exp>:run=<n>:dir=<xtc dir>:live \
                  (small data as the DAQ writes it) or a finished run without :live.",
        options: &["--calib-dir"],
        example: "%source exp=tstx00117:run=1:dir=/tmp/beamtime-sim:live",
    },
    Magic {
        name: "live",
        cell: true,
        usage: "%%live NAME [--ranks N] [--rate HZ] [--mode total|run|step] [--window 10s] [--launcher T] \
                [--view auto|table|line|scatter|hist|heatmap|strip|html] [x=COL] [y=COL[,COL]]\n<SQL over events>\n\
                %live status | wait [NAME] [--timeout S] | stop [NAME] | reset [NAME] | restart",
        summary: "Run SQL over every event of the source while it is taken, in parallel (MPI ranks), merged exactly; \
                  the result updates in the cell and is kept as table NAME (use it in %%sql, %save). The first %%live \
                  starts the job, later ones join it. Aggregates: count, count(DISTINCT x), sum, min, max, avg, var/stddev, first/last, \
                  bin(x, w), hist(x, lo, hi, n); GROUP BY any expression; row queries stream rows. \
                  The result shows as a live widget (table or plot chosen from its shape, or --view; needs \
                  `pip install anywidget` where Jupyter runs; --view html shows a plain table). \
                  %live status shows events, rate, drops, ranks and freshness; wait blocks until the results are final; \
                  restart starts the job again.",
        options: &["--ranks", "--rate", "--mode", "--window", "--launcher", "--view"],
        example: "%%live per_step\nSELECT step, count(*) AS n, avg(diode.raw.signal) AS signal FROM events GROUP BY step",
    },
    Magic {
        name: "help",
        cell: false,
        usage: "%help [MAGIC]",
        summary: "List the magics, or explain one. `%load?` (or Shift-Tab) works too.",
        options: &[],
        example: "%help sql",
    },
];

pub fn find(name: &str) -> Option<&'static Magic> {
    MAGICS.iter().find(|m| m.name == name)
}

impl Magic {
    pub fn spelled(&self) -> String {
        format!("{}{}", if self.cell { "%%" } else { "%" }, self.name)
    }

    pub fn help_text(&self) -> String {
        format!("{}\n\n{}\n\nExample:\n{}", self.usage, self.summary, self.example)
    }
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
