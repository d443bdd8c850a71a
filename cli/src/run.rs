//! `beamtime run`: one live query over a whole source, through the job (in process, or under
//! a launcher such as mpirun or srun), written to a file or printed.

use std::time::Instant;

use job::inproc::{run_inprocess, JobSpec};
use job::wire::Command;

use crate::RunArgs;

pub fn run(a: RunArgs) -> Result<(), String> {
    let sql = match (&a.sql, &a.sql_file) {
        (Some(s), _) => s.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?,
        (None, None) => return Err("give --sql or --sql-file".into()),
    };
    if a.ranks == 0 {
        return Err("--ranks must be at least 1".into());
    }
    if let Some(o) = &a.output {
        query::FileFormat::from_path(o).map_err(|e| e.to_string())?;
    }
    let mut spec = JobSpec::new(&a.source);
    spec.source().map_err(|e| format!("--source: {e}"))?;
    spec.queries = vec![Command::Set { name: "result".into(), sql, mode: a.mode.clone(), generation: 0 }];
    spec.batch_events = a.batch_events;
    spec.output = a.output.clone();
    let started = Instant::now();
    let events;
    let printed;
    if a.ranks == 1 {
        let c = run_inprocess(&spec, &mut |_| {})?;
        if let Some(e) = &c.error {
            return Err(e.clone());
        }
        events = c.events_read();
        printed = c.result("result").cloned();
    } else {
        let tmp = tempfile::Builder::new().prefix("beamtime-run").tempdir().map_err(|e| e.to_string())?;
        let printing = a.output.is_none();
        if printing {
            spec.output = Some(tmp.path().join("result.arrow"));
        }
        let template = a.launcher.clone().unwrap_or_else(job::launch::default_template);
        let mut cmd = job::launch::command(&template, a.ranks, &spec, &tmp.path().join("job.json"))?;
        let status = cmd.status().map_err(|e| format!("cannot start the launcher ({template}): {e}"))?;
        if !status.success() {
            return Err(format!("the job failed ({status}); its ranks' messages are above"));
        }
        let out = spec.output.as_ref().unwrap();
        let df = query::read_file(out).map_err(|e| e.to_string())?;
        events = 0;
        printed = printing.then_some(df);
    }
    let secs = started.elapsed().as_secs_f64();
    match (&a.output, printed) {
        (Some(o), _) => eprintln!("wrote {} ({:.2} s)", o.display(), secs),
        (None, Some(df)) => println!("{df}"),
        (None, None) => {}
    }
    if events > 0 {
        eprintln!("{events} events in {secs:.2} s ({:.0} events/s)", events as f64 / secs);
    }
    Ok(())
}
