//! The magics of the kernel's tables: `%load`, `%save`, `%tables`, `%describe`, `%drop`.

use polars::prelude::DataFrame;
use serde_json::json;

use super::expand::expand_env;
use super::syntax::{Call, Session};
use crate::cell::{Bundle, CellError};
use crate::display;

pub fn tables(_call: &Call, s: &mut Session) -> Result<Option<Bundle>, CellError> {
    let infos = s.catalog.list();
    if infos.is_empty() {
        return Ok(Some(json!({"text/plain": "no tables yet: %load run NAME SOURCE, %load NAME FILE, or %%sql --name NAME"})));
    }
    let names: Vec<String> = infos.iter().map(|t| t.name.clone()).collect();
    let rows: Vec<u64> = infos.iter().map(|t| t.rows as u64).collect();
    let cols: Vec<u64> = infos.iter().map(|t| t.columns as u64).collect();
    let df = polars::df!("table" => names, "rows" => rows, "columns" => cols).map_err(|e| CellError::new("PolarsError", e.to_string()))?;
    Ok(Some(display::table_bundle(None, &df, usize::MAX)))
}

pub fn load(call: &Call, s: &mut Session) -> Result<Option<Bundle>, CellError> {
    let positional = call.args.positional.iter().map(|a| expand_env(a)).collect::<Result<Vec<_>, _>>()?;
    let ctx = call.ctx;
    let (cat, info) = match positional.as_slice() {
        [kind, name, source] if kind == "run" => {
            let columns = call.args.opt("--columns").map(|c| c.split(',').map(|s| s.trim().to_string()).collect());
            let opts = query::LoadOptions { columns, ..Default::default() };
            ctx.interruptible("loading the run", {
                let mut cat = s.catalog.clone();
                let (name, source) = (name.clone(), source.clone());
                move || cat.load_run(&name, &source, opts).map(|info| (cat, info))
            })?
        }
        [name, file] => ctx.interruptible("loading the file", {
            let mut cat = s.catalog.clone();
            let (name, file) = (name.clone(), file.clone());
            move || cat.load_file(&name, std::path::Path::new(&file)).map(|info| (cat, info))
        })?,
        _ => return Err(call.usage_error("%load takes `run NAME SOURCE` or `NAME FILE`")),
    };
    *s.catalog = cat;
    if let Some(df) = s.catalog.get(&info.name) {
        ctx.display(display::table_bundle(Some(&info.name), &df, display::DEFAULT_ROWS));
    }
    Ok(None)
}

pub fn save(call: &Call, s: &mut Session) -> Result<Option<Bundle>, CellError> {
    let [name, file] = call.args.positional.as_slice() else {
        return Err(call.usage_error("%save takes a table name and a file"));
    };
    s.catalog.save(name, std::path::Path::new(file))?;
    let rows = s.catalog.get(name).map(|d| d.height()).unwrap_or(0);
    Ok(Some(json!({"text/plain": format!("saved {name} ({rows} rows) to {file}")})))
}

pub fn describe(call: &Call, s: &mut Session) -> Result<Option<Bundle>, CellError> {
    let [name] = call.args.positional.as_slice() else {
        return Err(call.usage_error("%describe takes a table name"));
    };
    let df = s.catalog.get(name).ok_or_else(|| unknown_table(s.catalog, name))?;
    let summary = column_summary(&df).map_err(|e| CellError::new("PolarsError", e.to_string()))?;
    Ok(Some(display::table_bundle(Some(&format!("{name}: {} rows", df.height())), &summary, usize::MAX)))
}

pub fn drop(call: &Call, s: &mut Session) -> Result<Option<Bundle>, CellError> {
    let [name] = call.args.positional.as_slice() else {
        return Err(call.usage_error("%drop takes a table name"));
    };
    s.catalog.remove(name).ok_or_else(|| unknown_table(s.catalog, name))?;
    Ok(None)
}

fn unknown_table(catalog: &query::Catalog, name: &str) -> CellError {
    let names = catalog.names();
    let list = if names.is_empty() { "there are no tables yet".to_string() } else { format!("tables: {}", names.join(", ")) };
    CellError::new("KeyError", format!("no table named '{name}' ({list})"))
}

/// One row per column: type, nulls, min, max.
fn column_summary(df: &DataFrame) -> polars::prelude::PolarsResult<DataFrame> {
    use polars::prelude::*;
    let mut names = Vec::new();
    let mut types = Vec::new();
    let mut nulls = Vec::new();
    let mut mins = Vec::new();
    let mut maxs = Vec::new();
    for c in df.columns() {
        names.push(c.name().to_string());
        types.push(c.dtype().to_string());
        nulls.push(c.null_count() as u64);
        let s = c.as_materialized_series();
        let numeric = s.dtype().is_primitive_numeric();
        mins.push(if numeric { s.min_reduce().map(|v| v.value().to_string()).unwrap_or_default() } else { String::new() });
        maxs.push(if numeric { s.max_reduce().map(|v| v.value().to_string()).unwrap_or_default() } else { String::new() });
    }
    df!("column" => names, "type" => types, "nulls" => nulls, "min" => mins, "max" => maxs)
}
