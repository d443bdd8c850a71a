//! A compiled library, loaded: its manifest checked against this ABI, its functions called
//! once per batch over the Arrow C Data Interface (the arguments lent, the result handed over).

use std::ffi::{c_char, CStr};
use std::path::Path;

use polars_arrow::array::Array;
use polars_arrow::datatypes::Field;
use polars_arrow::ffi::{self, ArrowArray, ArrowSchema};

use crate::glue::Manifest;
use crate::signature::Signature;
use crate::ABI_VERSION;

type CallFn = unsafe extern "C" fn(u32, u32, *const *const ArrowArray, *const *const ArrowSchema, *mut ArrowArray, *mut ArrowSchema, *mut *mut c_char) -> i32;
type FreeFn = unsafe extern "C" fn(*mut c_char);

/// A loaded library. Never unloaded: arrays it handed over free their memory through it.
pub struct Library {
    call: CallFn,
    free: FreeFn,
    pub signatures: Vec<Signature>,
    pub hash: String,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Library({}, {} functions)", self.hash, self.signatures.len())
    }
}

impl Library {
    /// Loads the library at `path` (named by `hash`), refusing one of another ABI.
    pub fn load(path: &Path, hash: &str) -> Result<Library, String> {
        let what = || format!("event-function library {}", path.display());
        // SAFETY: a library beamtime generated: its initialisers are the Rust runtime's.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("{}: {e}", what()))?;
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        // SAFETY: the symbols' types are the ABI's (checked by its version first).
        unsafe {
            let abi: libloading::Symbol<unsafe extern "C" fn() -> u32> = lib.get(b"beamtime_functions_abi").map_err(|_| format!("{}: not an event-function library (no ABI version)", what()))?;
            let abi = abi();
            if abi != ABI_VERSION {
                return Err(format!("{}: built for event-function ABI v{abi}, this beamtime speaks v{ABI_VERSION}: define the functions again", what()));
            }
            let manifest: libloading::Symbol<unsafe extern "C" fn() -> *const c_char> = lib.get(b"beamtime_functions_manifest").map_err(|e| format!("{}: {e}", what()))?;
            let text = CStr::from_ptr(manifest()).to_string_lossy().into_owned();
            let manifest: Manifest = serde_json::from_str(&text).map_err(|e| format!("{}: bad manifest: {e}", what()))?;
            let call: libloading::Symbol<CallFn> = lib.get(b"beamtime_functions_call").map_err(|e| format!("{}: {e}", what()))?;
            let free: libloading::Symbol<FreeFn> = lib.get(b"beamtime_functions_free_error").map_err(|e| format!("{}: {e}", what()))?;
            Ok(Library { call: *call, free: *free, signatures: manifest.functions, hash: hash.to_string() })
        }
    }

    /// Loads a library from its bytes (shipped to a rank), written under `dir` first.
    pub fn from_bytes(bytes: &[u8], hash: &str, dir: &Path) -> Result<Library, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("libbeamtime_fn_{hash}-{}.so", std::process::id()));
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let lib = Library::load(&path, hash);
        // Mapped now: the file is not needed any more.
        let _ = std::fs::remove_file(&path);
        lib
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.signatures.iter().position(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// Function `index` over `args` (each already of its parameter's type, equal lengths).
    pub fn call(&self, index: usize, args: Vec<Box<dyn Array>>) -> Result<Box<dyn Array>, String> {
        let exported: Vec<(ArrowArray, ArrowSchema)> = args
            .into_iter()
            .map(|a| {
                let field = Field::new("".into(), a.dtype().clone(), true);
                (ffi::export_array_to_c(a), ffi::export_field_to_c(&field))
            })
            .collect();
        let arrays: Vec<*const ArrowArray> = exported.iter().map(|(a, _)| a as *const ArrowArray).collect();
        let schemas: Vec<*const ArrowSchema> = exported.iter().map(|(_, s)| s as *const ArrowSchema).collect();
        let mut out = ArrowArray::empty();
        let mut out_schema = ArrowSchema::empty();
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: lent arrays stay alive (and are released by us) after the call; the outputs
        // are written by the library, which owns their release callbacks.
        let rc = unsafe { (self.call)(index as u32, arrays.len() as u32, arrays.as_ptr(), schemas.as_ptr(), &mut out, &mut out_schema, &mut error) };
        drop(exported);
        if rc != 0 {
            // SAFETY: the library wrote a C string it frees itself.
            let msg = if error.is_null() { "failed".to_string() } else { unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned() };
            unsafe { (self.free)(error) };
            return Err(msg);
        }
        // SAFETY: a schema and array the library built by the C Data Interface.
        unsafe {
            let field = ffi::import_field_from_c(&out_schema).map_err(|e| e.to_string())?;
            ffi::import_array_from_c(out, field.dtype().clone()).map_err(|e| e.to_string())
        }
    }
}
