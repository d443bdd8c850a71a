//! Real libraries compiled by rustc, loaded and called with Arrow arrays; values checked
//! against the same computation done here.

use std::sync::Arc;

use polars_arrow::array::{Array, BooleanArray, FixedSizeListArray, ListArray, PrimitiveArray};
use polars_arrow::datatypes::{ArrowDataType, Field};
use polars_arrow::offset::OffsetsBuffer;

use functions::{compile, CompileError, Library};

const SOURCE: &str = r#"
fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

fn com(img: &[f32]) -> Option<f64> {
    let total: f64 = img.iter().map(|&v| v as f64).sum();
    if total == 0.0 { return None; }
    Some(img.iter().enumerate().map(|(i, &v)| i as f64 * v as f64).sum::<f64>() / total)
}

fn doubled(x: Option<&[u16]>) -> Vec<u32> {
    x.map(|x| x.iter().map(|&v| 2 * v as u32).collect()).unwrap_or_default()
}

fn big(x: i64, flag: bool) -> bool {
    flag && x > 10
}

fn boom(x: i64) -> i64 {
    if x == 7 { panic!("seven is not allowed"); }
    x
}

mod helpers {
    pub fn unused(s: String) -> String { s }
}
"#;

fn library(source: &str) -> (Arc<Library>, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let c = compile(source, cache.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.cached);
    let again = compile(source, cache.path()).unwrap();
    assert!(again.cached && again.path == c.path, "the second build comes from the cache");
    (Arc::new(Library::load(&c.path, &c.hash).unwrap()), cache)
}

fn f64s(v: &[Option<f64>]) -> Box<dyn Array> {
    Box::new(PrimitiveArray::<f64>::from(v.to_vec()))
}

#[test]
fn scalars_slices_options_and_vecs_come_back_exact() {
    let (lib, _cache) = library(SOURCE);
    let names: Vec<&str> = lib.signatures.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ratio", "com", "doubled", "big", "boom"]);

    // ratio: a null argument gives a null result.
    let out = lib.call(0, vec![f64s(&[Some(1.0), Some(3.0), None]), f64s(&[Some(4.0), Some(2.0), Some(1.0)])]).unwrap();
    let out = out.as_any().downcast_ref::<PrimitiveArray<f64>>().unwrap();
    assert_eq!(out.iter().map(|v| v.copied()).collect::<Vec<_>>(), [Some(0.25), Some(1.5), None]);

    // com over fixed-size lists of f32 (an image per event), a sliced array.
    let values: Vec<f32> = vec![1.0, 0.0, 0.0, 0.0, 1.0, 3.0, 0.0, 0.0, 2.0, 2.0];
    let dtype = ArrowDataType::FixedSizeList(Box::new(Field::new("item".into(), ArrowDataType::Float32, true)), 2);
    let images = FixedSizeListArray::new(dtype, 5, Box::new(PrimitiveArray::<f32>::from_vec(values.clone())), None);
    let sliced = images.sliced(1, 4);
    let out = lib.call(1, vec![Box::new(sliced)]).unwrap();
    let out = out.as_any().downcast_ref::<PrimitiveArray<f64>>().unwrap();
    let want: Vec<Option<f64>> = (1..5)
        .map(|e| {
            let v = &values[2 * e..2 * e + 2];
            let t = (v[0] + v[1]) as f64;
            (t != 0.0).then(|| v[1] as f64 / t)
        })
        .collect();
    assert_eq!(out.iter().map(|v| v.copied()).collect::<Vec<_>>(), want);

    // doubled over large lists of u16 with a null event.
    let offsets = OffsetsBuffer::<i64>::try_from(vec![0i64, 2, 2, 5]).unwrap();
    let dtype = ArrowDataType::LargeList(Box::new(Field::new("item".into(), ArrowDataType::UInt16, true)));
    let lists = ListArray::<i64>::new(dtype, offsets, Box::new(PrimitiveArray::<u16>::from_vec(vec![1, 2, 9, 3, 4])), Some(vec![true, false, true].into()));
    let out = lib.call(2, vec![Box::new(lists)]).unwrap();
    let out = out.as_any().downcast_ref::<ListArray<i64>>().unwrap();
    let rows: Vec<Vec<u32>> = (0..3)
        .map(|i| out.value(i).as_any().downcast_ref::<PrimitiveArray<u32>>().unwrap().values().iter().copied().collect())
        .collect();
    assert_eq!(rows, [vec![2, 4], vec![], vec![18, 6, 8]]);

    // big: booleans in and out.
    let x = Box::new(PrimitiveArray::<i64>::from_vec(vec![5, 20, 30]));
    let flag = Box::new(BooleanArray::from(vec![Some(true), Some(true), None]));
    let out = lib.call(3, vec![x, flag]).unwrap();
    let out = out.as_any().downcast_ref::<BooleanArray>().unwrap();
    assert_eq!(out.iter().collect::<Vec<_>>(), [Some(false), Some(true), None]);
}

#[test]
fn a_panic_is_an_error_naming_the_row_and_the_line_and_the_library_goes_on() {
    let (lib, _cache) = library(SOURCE);
    let x = || Box::new(PrimitiveArray::<i64>::from_vec((0..10).collect())) as Box<dyn Array>;
    let e = lib.call(4, vec![x()]).unwrap_err();
    let line = SOURCE.lines().position(|l| l.contains("seven is not allowed")).unwrap() + 1;
    assert_eq!(e, format!("panicked on row 7 of its batch: seven is not allowed (line {line} of the source)"));
    // The next batch works.
    let ok = lib.call(4, vec![Box::new(PrimitiveArray::<i64>::from_vec(vec![1, 2]))]).unwrap();
    assert_eq!(ok.len(), 2);
}

#[test]
fn compile_errors_point_at_the_users_lines() {
    let cache = tempfile::tempdir().unwrap();
    let src = "fn f(x: f64) -> f64 {\n    x + \"one\"\n}\n";
    let e = compile(src, cache.path()).unwrap_err();
    let CompileError::Rustc(d, _) = &e else { panic!("{e}") };
    assert_eq!((d[0].line, d[0].code.as_deref()), (2, Some("E0277")), "{e}");
    assert!(e.to_string().contains("--> line 2:"), "{e}");
    // Does not parse: rustc's message, in the user's lines.
    let e = compile("fn f(x: f64) -> f64 {\n    x +\n", cache.path()).unwrap_err();
    assert!(matches!(&e, CompileError::Rustc(d, _) if d.iter().any(|d| d.line >= 1)), "{e}");
    // A wrong signature: before rustc.
    let e = compile("fn f(x: String) -> f64 { 0.0 }", cache.path()).unwrap_err();
    assert!(matches!(e, CompileError::Signature(_)) && e.to_string().starts_with("line 1: fn f: parameter `x: String`"), "{e}");
}
