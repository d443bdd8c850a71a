//! Event functions (the user's compiled Rust, see the `functions` crate) as SQL functions:
//! each batch's argument columns cast to the declared types and lent to the library in one
//! call. In live queries the planner also passes each event's timestamp (a hidden last
//! argument), so that a panic names the event it happened on.

use functions::registry::{self, Function};
use functions::{Param, Returns, Scalar};
use polars::prelude::*;

/// The SQL function for a registered event function.
pub(crate) fn udf(name: &str) -> Option<UserDefinedFunction> {
    let f = registry::lookup(name)?;
    let returns = f.signature.returns;
    let out_name = f.signature.name.clone();
    let call = move |s: &mut [Column]| -> PolarsResult<Column> { call(&f, s) };
    let output = move |_: &Schema, _: &[Field]| -> PolarsResult<Field> { Ok(Field::new(out_name.as_str().into(), returns_dtype(returns))) };
    Some(UserDefinedFunction::new(name.to_ascii_lowercase().into(), BaseColumnUdf::new(call, output)))
}

pub(crate) fn is_event_function(name: &str) -> bool {
    registry::lookup(name).is_some()
}

/// How many parameters an event function takes (the planner adds the timestamp after them).
pub(crate) fn arity(name: &str) -> Option<usize> {
    registry::lookup(name).map(|f| f.signature.params.len())
}

fn scalar_dtype(s: Scalar) -> DataType {
    match s {
        Scalar::F64 => DataType::Float64,
        Scalar::F32 => DataType::Float32,
        Scalar::I64 => DataType::Int64,
        Scalar::I32 => DataType::Int32,
        Scalar::I16 => DataType::Int16,
        Scalar::I8 => DataType::Int8,
        Scalar::U64 => DataType::UInt64,
        Scalar::U32 => DataType::UInt32,
        Scalar::U16 => DataType::UInt16,
        Scalar::U8 => DataType::UInt8,
        Scalar::Bool => DataType::Boolean,
    }
}

fn returns_dtype(r: Returns) -> DataType {
    let s = scalar_dtype(r.scalar());
    if r.is_vec() { DataType::List(Box::new(s)) } else { s }
}

/// The type an argument is cast to before the call.
fn param_dtype(name: &str, k: usize, p: Param, given: &DataType) -> PolarsResult<DataType> {
    let s = scalar_dtype(p.scalar());
    match (p.slice(), given) {
        (true, DataType::Array(_, w)) => Ok(DataType::Array(Box::new(s), *w)),
        (true, DataType::List(_)) => Ok(DataType::List(Box::new(s))),
        (true, other) => polars_bail!(InvalidOperation: "{name}(): argument {} is {other}, the function takes &[{}] (an array column)", k + 1, p.scalar().rust()),
        (false, DataType::Array(..) | DataType::List(_)) => {
            polars_bail!(InvalidOperation: "{name}(): argument {} is an array ({given}), the function takes one {} per event", k + 1, p.scalar().rust())
        }
        (false, _) => Ok(s),
    }
}

fn call(f: &Function, s: &mut [Column]) -> PolarsResult<Column> {
    let sig = &f.signature;
    let name = sig.name.as_str();
    let n_params = sig.params.len();
    // The planner's hidden timestamp, when there.
    let timestamps = (s.len() == n_params + 1).then(|| s[n_params].clone());
    if s.len() != n_params && timestamps.is_none() {
        polars_bail!(InvalidOperation: "{name}() takes {n_params} argument{} ({sig}), got {}", if n_params == 1 { "" } else { "s" }, s.len());
    }
    let n = s[..n_params].iter().map(|c| c.len()).max().unwrap_or(0);
    if n == 0 {
        // A batch that WHERE emptied: nothing to call the library for.
        return Ok(Column::new_empty(name.into(), &returns_dtype(sig.returns)));
    }
    let mut args = Vec::with_capacity(n_params);
    for (k, (c, p)) in s[..n_params].iter().zip(&sig.params).enumerate() {
        // A literal argument is one value for every event.
        let c = if c.len() == 1 && n != 1 { c.new_from_index(0, n) } else { c.clone() };
        let target = param_dtype(name, k, *p, c.dtype())?;
        let series = c.as_materialized_series().cast(&target)?.rechunk();
        args.push(series.to_arrow(0, CompatLevel::oldest()));
    }
    let out = f.library.call(f.index, args).map_err(|e| polars_err!(ComputeError: "{name}: {}", name_the_event(&e, timestamps.as_ref())))?;
    Ok(Series::from_arrow(name.into(), out)?.into_column())
}

/// "panicked on row 17 of its batch: …" → "panicked on the event at 2026-…": the timestamp of
/// that row, when the planner passed them.
fn name_the_event(message: &str, timestamps: Option<&Column>) -> String {
    let (Some(ts), Some(rest)) = (timestamps, message.strip_prefix("panicked on row ")) else { return message.to_string() };
    let Some((row, tail)) = rest.split_once(" of its batch") else { return message.to_string() };
    let Ok(row) = row.parse::<usize>() else { return message.to_string() };
    // `get` asserts its index: a row the column does not have is left as it was said.
    match ts.u64().ok().filter(|t| row < t.len()).and_then(|t| t.get(row)) {
        Some(t) => format!("panicked on the event with timestamp {t} ({}){tail}", lcls_time(t)),
        None => message.to_string(),
    }
}

/// An LCLS timestamp (seconds since 1990 << 32 | nanoseconds) as UTC.
fn lcls_time(ts: u64) -> String {
    const EPICS_EPOCH: i64 = 631_152_000;
    match chrono::DateTime::from_timestamp((ts >> 32) as i64 + EPICS_EPOCH, (ts & 0xffff_ffff) as u32) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.9f UTC").to_string(),
        None => format!("{ts:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panics_row_becomes_its_events_timestamp() {
        // 2020-01-01 00:00:00 UTC: Unix 1 577 836 800 s, 946 684 800 s after the EPICS epoch.
        let t = ((1_577_836_800u64 - 631_152_000) << 32) + 5;
        let ts = Column::new("timestamp".into(), [1u64, t]);
        let m = name_the_event("panicked on row 1 of its batch: boom (line 3 of the source)", Some(&ts));
        assert_eq!(m, format!("panicked on the event with timestamp {t} (2020-01-01 00:00:00.000000005 UTC): boom (line 3 of the source)"));
        assert_eq!(name_the_event("panicked on row 9 of its batch: x", Some(&ts)), "panicked on row 9 of its batch: x");
        assert_eq!(name_the_event("other", None), "other");
    }
}
