//! The library's source: the user's code as written, a batch loop per event function (nulls
//! in, nulls out; the row kept for a panic's message), the runtime, and the exported C
//! functions of the ABI.

use crate::signature::{Param, Returns, Scalar, Signature};
use crate::ABI_VERSION;

/// The runtime compiled into every library.
pub const RUNTIME: &str = include_str!("runtime.rs");

/// Lines before the user's first line in the generated source.
pub const LINE_OFFSET: usize = 2;

/// What the library says of itself (`beamtime_functions_manifest`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub abi: u32,
    pub functions: Vec<Signature>,
}

/// The whole library source for `user` with its event functions `sigs`.
pub fn generate(user: &str, sigs: &[Signature]) -> String {
    let mut out = String::new();
    out.push_str("#![allow(unused, dead_code, non_snake_case, unused_unsafe, clippy::all)]\n");
    out.push_str("pub mod user {\n");
    debug_assert_eq!(out.lines().count(), LINE_OFFSET);
    out.push_str(user);
    if !user.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("\n#[doc(hidden)]\npub mod __glue {\n");
    for (k, s) in sigs.iter().enumerate() {
        out.push_str(&wrapper(k, s));
    }
    out.push_str("}\n}\n\n#[doc(hidden)]\npub mod __rt {\n");
    out.push_str(RUNTIME);
    out.push_str("}\n\n");
    let manifest = serde_json::to_string(&Manifest { abi: ABI_VERSION, functions: sigs.to_vec() }).expect("manifest");
    let table: Vec<String> = (0..sigs.len()).map(|k| format!("user::__glue::f_{k} as __rt::Glue")).collect();
    out.push_str(&format!(
        r#"static MANIFEST: &str = {manifest:?};
static MANIFEST_C: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();

#[no_mangle]
pub extern "C" fn beamtime_functions_abi() -> u32 {{
    {ABI_VERSION}
}}

#[no_mangle]
pub extern "C" fn beamtime_functions_manifest() -> *const std::ffi::c_char {{
    MANIFEST_C.get_or_init(|| std::ffi::CString::new(MANIFEST).unwrap()).as_ptr()
}}

#[no_mangle]
pub unsafe extern "C" fn beamtime_functions_call(index: u32, n_args: u32, args: *const *const __rt::ArrowArray, schemas: *const *const __rt::ArrowSchema, out: *mut __rt::ArrowArray, out_schema: *mut __rt::ArrowSchema, error: *mut *mut std::ffi::c_char) -> i32 {{
    let table: &[__rt::Glue] = &[{table}];
    __rt::call(table, {LINE_OFFSET}, index, n_args, args, schemas, out, out_schema, error)
}}

#[no_mangle]
pub unsafe extern "C" fn beamtime_functions_free_error(e: *mut std::ffi::c_char) {{
    __rt::free_error(e)
}}
"#,
        table = table.join(", ")
    ));
    out
}

fn reader(k: usize, p: Param) -> String {
    let s = p.scalar();
    if p.slice() {
        format!("crate::__rt::Slices::<{}>::new(a[{k}], s[{k}])", s.rust())
    } else if s == Scalar::Bool {
        format!("crate::__rt::Bools::new(a[{k}])")
    } else {
        format!("crate::__rt::Prim::<{}>::new(a[{k}])", s.rust())
    }
}

fn writer(r: Returns) -> String {
    let s = r.scalar();
    if r.is_vec() {
        format!("crate::__rt::ListOut::<{}>::with_capacity(n)", s.rust())
    } else if s == Scalar::Bool {
        "crate::__rt::BoolOut::with_capacity(n)".into()
    } else {
        format!("crate::__rt::PrimOut::<{}>::with_capacity(n)", s.rust())
    }
}

fn wrapper(k: usize, sig: &Signature) -> String {
    let mut body = String::new();
    for (i, p) in sig.params.iter().enumerate() {
        body.push_str(&format!("    let x{i} = {};\n", reader(i, *p)));
    }
    body.push_str(&format!("    let mut out = {};\n", writer(sig.returns)));
    // The row is kept in a local the panic guard reads: no per-event store elsewhere.
    body.push_str("    crate::__rt::guarded(move |at| {\n    for i in 0..n {\n        *at = i;\n");
    for i in 0..sig.params.len() {
        body.push_str(&format!("        let v{i} = x{i}.get(i);\n"));
    }
    // A missing value where the function takes no Option: the event's result is missing.
    let required: Vec<usize> = (0..sig.params.len()).filter(|&i| !sig.params[i].optional()).collect();
    if !required.is_empty() {
        let pats: Vec<String> = required.iter().map(|i| format!("Some(v{i})")).collect();
        let vals: Vec<String> = required.iter().map(|i| format!("v{i}")).collect();
        body.push_str(&format!("        let ({},) = ({},) else {{ out.push(None); continue; }};\n", pats.join(", "), vals.join(", ")));
    }
    let args: Vec<String> = (0..sig.params.len()).map(|i| format!("v{i}")).collect();
    let call = format!("super::{}({})", sig.name, args.join(", "));
    if sig.returns.optional() {
        body.push_str(&format!("        out.push({call});\n"));
    } else {
        body.push_str(&format!("        out.push(Some({call}));\n"));
    }
    body.push_str("    }\n    out.finish()\n    })\n");
    format!(
        "    /// {sig}\n    pub unsafe fn f_{k}(a: &[&crate::__rt::ArrowArray], s: &[&crate::__rt::ArrowSchema], n: usize) -> Result<crate::__rt::Output, usize> {{\n{body}    }}\n"
    )
}
