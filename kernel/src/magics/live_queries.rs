//! The magics of live queries: `%source`, `%%live` and `%live`, turned into calls of
//! [`crate::live::LiveQueries`].

use super::expand::expand_env;
use super::syntax::{Call, Session};
use crate::cell::{Bundle, CellError};
use crate::live::options::{LiveCommand, LiveOptions, DEFAULT_WAIT_S};
use serde_json::json;

pub fn source(call: &Call, s: &mut Session) -> Result<Option<Bundle>, CellError> {
    let [source] = call.args.positional.as_slice() else {
        return Err(call.usage_error("%source takes one psana source string"));
    };
    let source = expand_env(source)?;
    let calib_dir = call.args.opt("--calib-dir").map(expand_env).transpose()?;
    let settings = call.args.opt_all("--calib").into_iter().map(expand_env).collect::<Result<Vec<_>, _>>()?;
    let ranks = call.args.opt("--ranks").map(|v| v.parse::<usize>().map_err(|_| call.usage_error(format!("--ranks {v}: a whole number expected")))).transpose()?;
    let launch = LiveOptions { ranks: ranks.map(|r| r.max(1)), launcher: call.args.opt("--launcher").map(str::to_string), ..LiveOptions::default() };
    let text = s.live.set_source(&source, calib_dir, settings, launch)?;
    Ok(Some(json!({"text/plain": text})))
}

/// `%%live NAME [options]` with the query below.
pub fn live_query(call: &Call, s: &mut Session) -> Result<Option<Bundle>, CellError> {
    let (view, names) = call.view_options()?;
    let [name] = names.as_slice() else {
        return Err(call.usage_error("%%live takes a name for the result (a table name), then options"));
    };
    if call.body.trim().is_empty() {
        return Err(call.usage_error("%%live needs a query on the lines below it"));
    }
    let num = |o: &str| -> Result<Option<f64>, CellError> {
        call.args.opt(o).map(|v| v.parse::<f64>().map_err(|_| call.usage_error(format!("{o} {v}: a number expected")))).transpose()
    };
    let opts = LiveOptions {
        ranks: num("--ranks")?.map(|r| r.max(1.0) as usize),
        rate: num("--rate")?,
        mode: call.args.opt("--window").or(call.args.opt("--mode")).map(str::to_string),
        launcher: call.args.opt("--launcher").map(str::to_string),
        save: call.args.opt("--save").map(expand_env).transpose()?,
        view,
    };
    let ctx = call.ctx;
    s.live.start_query(name, call.body.trim(), &opts, ctx.parent, &|| ctx.interrupted())?;
    s.live.sync(s.catalog);
    Ok(None)
}

/// `%live status | wait [NAME] [--timeout S] | stop [NAME] | reset [NAME] | restart`.
pub fn live_command(call: &Call, s: &mut Session) -> Result<Option<Bundle>, CellError> {
    let words = &call.args.positional;
    let name = words.get(1).cloned();
    let command = match words.first().map(String::as_str).unwrap_or("status") {
        "status" => LiveCommand::Status,
        "stop" => LiveCommand::Stop(name),
        "reset" => LiveCommand::Reset(name),
        "restart" => LiveCommand::Restart,
        "wait" => {
            let timeout_s = call
                .args
                .opt("--timeout")
                .map(|t| t.parse::<f64>().map_err(|_| CellError::new("UsageError", format!("--timeout {t}: seconds expected"))))
                .transpose()?
                .unwrap_or(DEFAULT_WAIT_S);
            LiveCommand::Wait { name, timeout_s }
        }
        other => {
            return Err(CellError::new("UsageError", format!("%live {other}: use status, wait [NAME] [--timeout S], stop [NAME], reset [NAME] or restart")));
        }
    };
    Ok(Some(s.live.command(&command, s.catalog)?))
}
