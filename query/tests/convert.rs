//! Arrow ⇄ polars round trips on real events tables: every column type that appears, every
//! value, every null.

mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Int16Array, Int8Array, ListArray, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType as A, Field, Schema, TimeUnit};
use query::polars::prelude::{DataType as P, TimeUnit as PTimeUnit, TimeZone};
use query::{batches_to_df, df_to_ipc_stream, ipc_stream_to_batches, DfBuilder};
use xtc::table::{read_events, TableOptions};
use xtc::Source;

/// Every value of an array as text (`null` for nulls), lists recursively: a type-independent
/// way to compare Utf8 with LargeUtf8 and List with LargeList.
fn values(a: &dyn Array) -> Vec<String> {
    macro_rules! prim {
        ($t:ty) => {{
            let p = a.as_primitive::<$t>();
            (0..a.len()).map(|i| if p.is_null(i) { "null".to_string() } else { format!("{:?}", p.value(i)) }).collect()
        }};
    }
    let list = |len: usize, null: &dyn Fn(usize) -> bool, item: &dyn Fn(usize) -> ArrayRef| -> Vec<String> {
        (0..len).map(|i| if null(i) { "null".to_string() } else { format!("[{}]", values(item(i).as_ref()).join(",")) }).collect()
    };
    match a.data_type() {
        A::UInt8 => prim!(UInt8Type),
        A::UInt16 => prim!(UInt16Type),
        A::UInt32 => prim!(UInt32Type),
        A::UInt64 => prim!(UInt64Type),
        A::Int8 => prim!(Int8Type),
        A::Int16 => prim!(Int16Type),
        A::Int32 => prim!(Int32Type),
        A::Int64 => prim!(Int64Type),
        // Bits, so that NaN == NaN and -0.0 != 0.0.
        A::Float32 => {
            let p = a.as_primitive::<Float32Type>();
            (0..a.len()).map(|i| if p.is_null(i) { "null".into() } else { format!("{:#x}", p.value(i).to_bits()) }).collect()
        },
        A::Float64 => {
            let p = a.as_primitive::<Float64Type>();
            (0..a.len()).map(|i| if p.is_null(i) { "null".into() } else { format!("{:#x}", p.value(i).to_bits()) }).collect()
        },
        A::Timestamp(TimeUnit::Nanosecond, _) => prim!(TimestampNanosecondType),
        A::Utf8 => a.as_string::<i32>().iter().map(|v| v.map_or("null".into(), |s| format!("{s:?}"))).collect(),
        A::LargeUtf8 => a.as_string::<i64>().iter().map(|v| v.map_or("null".into(), |s| format!("{s:?}"))).collect(),
        A::FixedSizeList(..) => {
            let l = a.as_fixed_size_list();
            list(a.len(), &|i| l.is_null(i), &|i| l.value(i))
        },
        A::List(_) => {
            let l = a.as_list::<i32>();
            list(a.len(), &|i| l.is_null(i), &|i| l.value(i))
        },
        A::LargeList(_) => {
            let l = a.as_list::<i64>();
            list(a.len(), &|i| l.is_null(i), &|i| l.value(i))
        },
        t => panic!("the test does not know {t}"),
    }
}

/// The polars dtype an Arrow type becomes.
fn polars_type(t: &A) -> P {
    match t {
        A::UInt8 => P::UInt8,
        A::UInt16 => P::UInt16,
        A::UInt32 => P::UInt32,
        A::UInt64 => P::UInt64,
        A::Int8 => P::Int8,
        A::Int16 => P::Int16,
        A::Int32 => P::Int32,
        A::Int64 => P::Int64,
        A::Float32 => P::Float32,
        A::Float64 => P::Float64,
        A::Utf8 => P::String,
        A::Timestamp(TimeUnit::Nanosecond, Some(tz)) if tz.as_ref() == "UTC" => P::Datetime(PTimeUnit::Nanoseconds, Some(TimeZone::UTC)),
        A::FixedSizeList(f, n) => P::Array(Box::new(polars_type(f.data_type())), *n as usize),
        A::List(f) => P::List(Box::new(polars_type(f.data_type()))),
        t => panic!("the test does not know {t}"),
    }
}

/// The Arrow type polars writes back at the oldest compatibility level.
fn written_back(t: &A) -> &'static str {
    match t {
        A::Utf8 => "LargeUtf8",
        A::List(_) => "LargeList",
        A::FixedSizeList(..) => "FixedSizeList",
        A::Timestamp(..) => "Timestamp",
        _ => "same",
    }
}

/// batches → DataFrame → IPC stream → batches: names, types and every value survive.
/// Returns the set of Arrow types seen.
fn round_trip(batches: &[RecordBatch]) -> Vec<String> {
    let schema = batches[0].schema();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut df = batches_to_df(batches).unwrap();
    assert_eq!(df.height(), rows);
    assert_eq!(df.width(), schema.fields().len());
    // Dots, colons and order kept.
    let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    let arrow_names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, arrow_names);
    for f in schema.fields() {
        assert_eq!(df.column(f.name()).unwrap().dtype(), &polars_type(f.data_type()), "{}", f.name());
    }
    assert_eq!(df.first_col_n_chunks(), 1, "rechunked");

    let bytes = df_to_ipc_stream(&mut df).unwrap();
    let back = ipc_stream_to_batches(&bytes).unwrap();
    assert_eq!(back.iter().map(|b| b.num_rows()).sum::<usize>(), rows);
    let back_schema = back[0].schema();
    let mut types = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let g = back_schema.field(i);
        assert_eq!(g.name(), f.name());
        let expect = written_back(f.data_type());
        let got = g.data_type();
        match expect {
            "same" => assert_eq!(got, f.data_type(), "{}", f.name()),
            "LargeUtf8" => assert_eq!(got, &A::LargeUtf8, "{}", f.name()),
            "LargeList" => assert!(matches!(got, A::LargeList(_)), "{}: {got}", f.name()),
            "FixedSizeList" => match (got, f.data_type()) {
                (A::FixedSizeList(gi, gn), A::FixedSizeList(fi, fn_)) => {
                    assert_eq!((gi.data_type(), gn), (fi.data_type(), fn_), "{}", f.name())
                },
                _ => panic!("{}: {got}", f.name()),
            },
            "Timestamp" => assert_eq!(got, f.data_type(), "{}: tz kept", f.name()),
            _ => unreachable!(),
        }
        let orig: Vec<String> = batches.iter().flat_map(|b| values(b.column(i).as_ref())).collect();
        let rt: Vec<String> = back.iter().flat_map(|b| values(b.column(i).as_ref())).collect();
        assert_eq!(orig, rt, "values of {}", f.name());
        types.push(format!("{}", f.data_type()));
    }
    types.sort();
    types.dedup();
    types
}

#[test]
fn sim_events_table_round_trips() {
    let truth = common::sim_run();
    let opts = TableOptions { batch_size: 700, ..Default::default() };
    let batches = read_events(&Source::parse(&truth.source).unwrap(), opts).unwrap();
    assert!(batches.len() >= 5);
    let types = round_trip(&batches);
    // The types the sim's table is made of: all of them crossed the bridge.
    for t in ["UInt8", "UInt16", "UInt32", "UInt64", "Int16", "Int32", "Int64", "Float32", "Float64", "Utf8"] {
        assert!(types.contains(&t.to_string()), "{t} not in {types:?}");
    }
    assert!(types.iter().any(|t| t.starts_with("Timestamp(ns")), "{types:?}");
    assert!(types.iter().any(|t| t.starts_with("FixedSizeList")), "{types:?}");

    // Values seen through polars: the per-step diode sums of the truth file.
    let df = batches_to_df(&batches).unwrap();
    let step = common::i64s(&df, "step");
    let diode = common::f64s(&df, "diode.raw.signal");
    for s in &truth.steps {
        let sum: f64 = step.iter().zip(&diode).filter(|(st, _)| **st == s.step as i64).map(|(_, d)| d.unwrap()).sum();
        common::assert_close(sum, s.sums["diode.raw.signal"], "diode sum");
    }
    let image = df.column("cam.raw.image").unwrap();
    assert_eq!(image.dtype(), &P::Array(Box::new(P::UInt16), 32));

    // Converted one batch at a time (as `load_run` does for big runs): the same table.
    let mut b = DfBuilder::with_flush_bytes(1);
    for batch in &batches {
        b.push(batch.clone()).unwrap();
    }
    let piecewise = b.finish().unwrap();
    assert_eq!(piecewise.first_col_n_chunks(), 1);
    assert!(piecewise.equals_missing(&df));
}

#[test]
fn mixed_rate_sample_round_trips() {
    let src = Source::parse(&common::mixed_rate_source()).unwrap();
    let batches = read_events(&src, TableOptions { batch_size: 100, ..Default::default() }).unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert!(rows > 0);
    // The slower stream's columns are null on the events it does not record.
    let nulls: usize = batches.iter().flat_map(|b| b.columns().iter().map(|c| c.null_count())).sum();
    assert!(nulls > 0, "mixed rates give nulls");
    round_trip(&batches);
}

/// Types the runs above may not have: lists, i8, nulls inside lists, an empty batch.
#[test]
fn synthetic_types_and_nulls_round_trip() {
    let item = Arc::new(Field::new("item", A::Float64, true));
    let list = ListArray::from_iter_primitive::<Float64Type, _, _>([Some(vec![Some(1.0), None]), None, Some(vec![]), Some(vec![Some(-0.0)])]);
    let fixed = FixedSizeListArray::from_iter_primitive::<Int32Type, _, _>(
        [Some(vec![Some(1), Some(2)]), None, Some(vec![None, Some(4)]), Some(vec![Some(5), Some(6)])],
        2,
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("a.b.c", A::Int8, false),
        Field::new("epics.X:Y:Z", A::Int16, true),
        Field::new("big", A::UInt64, true),
        Field::new("s", A::Utf8, true),
        Field::new("l", A::List(item), true),
        Field::new("f", fixed.data_type().clone(), true),
        Field::new("t", A::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int8Array::from(vec![-128, 0, 1, 127])),
        Arc::new(Int16Array::from(vec![Some(-1), None, Some(i16::MAX), Some(i16::MIN)])),
        Arc::new(UInt64Array::from(vec![Some(u64::MAX), None, Some(0), Some(1 << 63)])),
        Arc::new(StringArray::from(vec![Some("é"), None, Some(""), Some("a\"b")])),
        Arc::new(list),
        Arc::new(fixed),
        Arc::new(arrow_array::TimestampNanosecondArray::from(vec![Some(1), None, Some(i64::MAX), Some(-5)]).with_timezone("UTC")),
    ];
    let b = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let empty = RecordBatch::new_empty(schema);
    round_trip(&[b.clone(), empty, b.slice(1, 2)]);
}

/// Batches whose schema changes mid-way (a second Configure, an array turning variable):
/// rows are concatenated under the union of the columns.
#[test]
fn changing_schemas_concatenate() {
    let s1 = Arc::new(Schema::new(vec![Field::new("x", A::Int32, false), Field::new("arr", A::FixedSizeList(Arc::new(Field::new("item", A::UInt8, true)), 2), true)]));
    let b1 = RecordBatch::try_new(
        s1,
        vec![
            Arc::new(arrow_array::Int32Array::from(vec![1, 2])),
            Arc::new(FixedSizeListArray::from_iter_primitive::<UInt8Type, _, _>([Some(vec![Some(1), Some(2)]), Some(vec![Some(3), Some(4)])], 2)),
        ],
    )
    .unwrap();
    let s2 = Arc::new(Schema::new(vec![
        Field::new("arr", A::List(Arc::new(Field::new("item", A::UInt8, true))), true),
        Field::new("x", A::Int64, false),
        Field::new("y", A::Utf8, false),
    ]));
    let b2 = RecordBatch::try_new(
        s2,
        vec![
            Arc::new(ListArray::from_iter_primitive::<UInt8Type, _, _>([Some(vec![Some(9)])])),
            Arc::new(arrow_array::Int64Array::from(vec![3])),
            Arc::new(StringArray::from(vec!["z"])),
        ],
    )
    .unwrap();
    let df = batches_to_df(&[b1, b2]).unwrap();
    assert_eq!(df.get_column_names().iter().map(|s| s.as_str()).collect::<Vec<_>>(), ["x", "arr", "y"]);
    assert_eq!(df.column("x").unwrap().dtype(), &P::Int64);
    assert_eq!(df.column("arr").unwrap().dtype(), &P::List(Box::new(P::UInt8)));
    assert_eq!(common::i64s(&df, "x"), [1, 2, 3]);
    assert_eq!(common::strs(&df, "y"), [None, None, Some("z".to_string())]);
    let arr = df.column("arr").unwrap().as_materialized_series().list().unwrap().clone();
    let lens: Vec<Option<usize>> = arr.iter().map(|s| s.map(|s| s.len())).collect();
    assert_eq!(lens, [Some(2), Some(2), Some(1)]);
}

#[test]
fn empty_input_and_bad_bytes() {
    let df = batches_to_df(&[]).unwrap();
    assert_eq!((df.height(), df.width()), (0, 0));
    let e = ipc_stream_to_batches(b"not arrow").unwrap_err();
    assert!(e.to_string().starts_with("Arrow conversion:"), "{e}");
}

#[test]
fn schema_metadata_reaches_arrow_readers() {
    let mut df = polars::prelude::df!("x" => [1i64, 2]).unwrap();
    let bytes = query::df_to_ipc_stream_with(&mut df, &[("beamtime:shapes".into(), "{\"x\":[1,2]}".into())]).unwrap();
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    assert_eq!(reader.schema().metadata().get("beamtime:shapes").map(String::as_str), Some("{\"x\":[1,2]}"));
}
