// The runtime inside every event-function library (ABI 1): reading the Arrow C Data Interface
// arrays the host lends, building the ones it hands back, and catching panics. It is compiled
// into the library from this text (no dependencies: a library builds in about a second), and
// into the host's tests as a module.
#![allow(dead_code)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};

/// The Arrow C Data Interface's structures, as the specification lays them out.
#[repr(C)]
pub struct ArrowSchema {
    pub format: *const c_char,
    pub name: *const c_char,
    pub metadata: *const c_char,
    pub flags: i64,
    pub n_children: i64,
    pub children: *mut *mut ArrowSchema,
    pub dictionary: *mut ArrowSchema,
    pub release: Option<unsafe extern "C" fn(*mut ArrowSchema)>,
    pub private_data: *mut c_void,
}

#[repr(C)]
pub struct ArrowArray {
    pub length: i64,
    pub null_count: i64,
    pub offset: i64,
    pub n_buffers: i64,
    pub n_children: i64,
    pub buffers: *mut *const c_void,
    pub children: *mut *mut ArrowArray,
    pub dictionary: *mut ArrowArray,
    pub release: Option<unsafe extern "C" fn(*mut ArrowArray)>,
    pub private_data: *mut c_void,
}

/// Element types and their Arrow formats.
pub trait Native: Copy + Default + 'static {
    const FORMAT: &'static str;
}

macro_rules! native {
    ($($t:ty => $f:literal),*) => { $(impl Native for $t { const FORMAT: &'static str = $f; })* };
}
native!(f64 => "g", f32 => "f", i64 => "l", i32 => "i", i16 => "s", i8 => "c", u64 => "L", u32 => "I", u16 => "S", u8 => "C");

fn valid(bits: *const u8, i: usize) -> bool {
    // SAFETY: the host lends a validity buffer of at least offset + length bits.
    bits.is_null() || unsafe { *bits.add(i / 8) } & (1 << (i % 8)) != 0
}

unsafe fn buffer(a: &ArrowArray, i: usize) -> *const u8 {
    if (a.n_buffers as usize) <= i {
        return std::ptr::null();
    }
    *a.buffers.add(i) as *const u8
}

/// A primitive input column.
pub struct Prim<'a, T> {
    values: &'a [T],
    validity: *const u8,
    offset: usize,
}

impl<'a, T: Native> Prim<'a, T> {
    /// # Safety
    /// `a` is a valid primitive array of `T` (the host casts every argument to its declared type).
    pub unsafe fn new(a: &'a ArrowArray) -> Self {
        let offset = a.offset as usize;
        let values = buffer(a, 1) as *const T;
        let values = if a.length == 0 || values.is_null() { &[][..] } else { std::slice::from_raw_parts(values.add(offset), a.length as usize) };
        Prim { values, validity: if a.null_count == 0 { std::ptr::null() } else { buffer(a, 0) }, offset }
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<T> {
        if valid(self.validity, self.offset + i) { Some(self.values[i]) } else { None }
    }
}

/// A boolean input column (bit-packed).
pub struct Bools {
    values: *const u8,
    validity: *const u8,
    offset: usize,
}

impl Bools {
    /// # Safety
    /// `a` is a valid boolean array.
    pub unsafe fn new(a: &ArrowArray) -> Self {
        Bools { values: buffer(a, 1), validity: if a.null_count == 0 { std::ptr::null() } else { buffer(a, 0) }, offset: a.offset as usize }
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<bool> {
        let i = self.offset + i;
        // SAFETY: i < offset + length, within the values buffer.
        valid(self.validity, i).then(|| unsafe { *self.values.add(i / 8) } & (1 << (i % 8)) != 0)
    }
}

/// An array input column: fixed-size lists (`+w:N`), lists (`+l`) or large lists (`+L`) of `T`.
pub struct Slices<'a, T> {
    values: &'a [T],
    validity: *const u8,
    offset: usize,
    /// The child's own offset: list slots index its logical elements.
    child_offset: usize,
    layout: Layout,
}

enum Layout {
    Fixed(usize),
    Small(*const i32),
    Large(*const i64),
}

impl<'a, T: Native> Slices<'a, T> {
    /// # Safety
    /// `a` and `schema` describe a valid list-like array whose child is a primitive array of `T`.
    pub unsafe fn new(a: &'a ArrowArray, schema: &ArrowSchema) -> Self {
        let format = std::ffi::CStr::from_ptr(schema.format).to_str().unwrap_or("");
        let layout = if let Some(w) = format.strip_prefix("+w:") {
            Layout::Fixed(w.parse().unwrap_or(0))
        } else if format == "+l" {
            Layout::Small(buffer(a, 1) as *const i32)
        } else {
            Layout::Large(buffer(a, 1) as *const i64)
        };
        let child = &**a.children;
        let n = child.offset as usize + child.length as usize;
        let values = buffer(child, 1) as *const T;
        let values = if n == 0 || values.is_null() { &[][..] } else { std::slice::from_raw_parts(values, n) };
        Slices { values, validity: if a.null_count == 0 { std::ptr::null() } else { buffer(a, 0) }, offset: a.offset as usize, child_offset: child.offset as usize, layout }
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&'a [T]> {
        let j = self.offset + i;
        if !valid(self.validity, j) {
            return None;
        }
        // SAFETY: offsets hold offset + length + 1 entries.
        let (start, end) = unsafe {
            match self.layout {
                Layout::Fixed(w) => (j * w, (j + 1) * w),
                Layout::Small(o) => (*o.add(j) as usize, *o.add(j + 1) as usize),
                Layout::Large(o) => (*o.add(j) as usize, *o.add(j + 1) as usize),
            }
        };
        self.values.get(self.child_offset + start..self.child_offset + end)
    }
}

/// A built output column, ready to hand over.
pub struct Output {
    array: ArrowArray,
    schema: ArrowSchema,
}

/// Validity, tracked only from the first null (a column without nulls costs a counter),
/// one byte per value (a plain store), packed into bits at the end.
struct Validity {
    mask: Option<Vec<bool>>,
    nulls: usize,
    len: usize,
    capacity: usize,
}

impl Validity {
    fn new(n: usize) -> Self {
        Validity { mask: None, nulls: 0, len: 0, capacity: n }
    }

    #[inline]
    fn push(&mut self, ok: bool) {
        if !ok && self.mask.is_none() {
            // Every value so far was valid.
            let mut mask = Vec::with_capacity(self.capacity.max(self.len + 1));
            mask.resize(self.len, true);
            self.mask = Some(mask);
        }
        if let Some(m) = self.mask.as_mut() {
            m.push(ok);
        }
        self.nulls += usize::from(!ok);
        self.len += 1;
    }

    fn pack(mask: &[bool]) -> Vec<u8> {
        mask.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |b, (i, &v)| b | (u8::from(v) << i))).collect()
    }

    /// The bits as a buffer (None: no nulls).
    fn take(self) -> Option<Buf> {
        self.mask.map(|m| buf(Self::pack(&m)))
    }

    /// Booleans' values: every bit.
    fn into_values(self) -> Vec<u8> {
        match self.mask {
            Some(m) => Self::pack(&m),
            None => Self::pack(&vec![true; self.len]),
        }
    }
}

/// What an exported array owns: freed by its release callback.
struct Owned {
    _keep: Vec<Box<dyn std::any::Any>>,
    buffers: Box<[*const c_void]>,
    children: Box<[*mut ArrowArray]>,
}

/// A buffer handed over: its address, and the Vec that holds it (moved, never copied).
pub struct Buf {
    ptr: *const c_void,
    keep: Box<dyn std::any::Any>,
}

fn buf<T: 'static>(v: Vec<T>) -> Buf {
    // An empty buffer still needs an aligned, non-null address.
    let ptr = if v.is_empty() { std::ptr::NonNull::<u64>::dangling().as_ptr() as *const c_void } else { v.as_ptr() as *const c_void };
    Buf { ptr, keep: Box::new(v) }
}

unsafe extern "C" fn release_array(a: *mut ArrowArray) {
    if a.is_null() || (*a).release.is_none() {
        return;
    }
    let owned = Box::from_raw((*a).private_data as *mut Owned);
    for &c in owned.children.iter() {
        if let Some(r) = (*c).release {
            r(c);
        }
        drop(Box::from_raw(c));
    }
    drop(owned);
    (*a).release = None;
}

struct OwnedSchema {
    _format: CString,
    _name: CString,
    children: Box<[*mut ArrowSchema]>,
}

unsafe extern "C" fn release_schema(s: *mut ArrowSchema) {
    if s.is_null() || (*s).release.is_none() {
        return;
    }
    let owned = Box::from_raw((*s).private_data as *mut OwnedSchema);
    for &c in owned.children.iter() {
        if let Some(r) = (*c).release {
            r(c);
        }
        drop(Box::from_raw(c));
    }
    drop(owned);
    (*s).release = None;
}

fn schema(format: &str, children: Vec<ArrowSchema>, nullable: bool) -> ArrowSchema {
    let format = CString::new(format).unwrap();
    let name = CString::new("").unwrap();
    let children: Box<[*mut ArrowSchema]> = children.into_iter().map(|c| Box::into_raw(Box::new(c))).collect();
    let (f, n, n_children, ptr) = (format.as_ptr(), name.as_ptr(), children.len() as i64, children.as_ptr() as *mut *mut ArrowSchema);
    let owned = Box::new(OwnedSchema { _format: format, _name: name, children });
    ArrowSchema {
        format: f,
        name: n,
        metadata: std::ptr::null(),
        flags: if nullable { 2 } else { 0 },
        n_children,
        children: ptr,
        dictionary: std::ptr::null_mut(),
        release: Some(release_schema),
        private_data: Box::into_raw(owned) as *mut c_void,
    }
}

fn array(len: usize, nulls: usize, validity: Option<Buf>, data: Vec<Buf>, children: Vec<ArrowArray>) -> ArrowArray {
    // buffers: [validity (or null), the data buffers…]
    let mut buffers: Vec<*const c_void> = vec![validity.as_ref().map_or(std::ptr::null(), |b| b.ptr)];
    buffers.extend(data.iter().map(|b| b.ptr));
    let keep: Vec<Box<dyn std::any::Any>> = validity.into_iter().chain(data).map(|b| b.keep).collect();
    let buffers = buffers.into_boxed_slice();
    let children: Box<[*mut ArrowArray]> = children.into_iter().map(|c| Box::into_raw(Box::new(c))).collect();
    let (n_buffers, bptr, n_children, cptr) = (buffers.len() as i64, buffers.as_ptr() as *mut *const c_void, children.len() as i64, children.as_ptr() as *mut *mut ArrowArray);
    let owned = Box::new(Owned { _keep: keep, buffers, children });
    ArrowArray {
        length: len as i64,
        null_count: nulls as i64,
        offset: 0,
        n_buffers,
        n_children,
        buffers: bptr,
        children: cptr,
        dictionary: std::ptr::null_mut(),
        release: Some(release_array),
        private_data: Box::into_raw(owned) as *mut c_void,
    }
}

/// A primitive output column.
pub struct PrimOut<T> {
    values: Vec<T>,
    validity: Validity,
}

impl<T: Native> PrimOut<T> {
    pub fn with_capacity(n: usize) -> Self {
        PrimOut { values: Vec::with_capacity(n), validity: Validity::new(n) }
    }

    #[inline]
    pub fn push(&mut self, v: Option<T>) {
        self.validity.push(v.is_some());
        self.values.push(v.unwrap_or_default());
    }

    pub fn finish(self) -> Output {
        let (len, nulls) = (self.validity.len, self.validity.nulls);
        let validity = self.validity.take();
        Output { array: array(len, nulls, validity, vec![buf(self.values)], Vec::new()), schema: schema(T::FORMAT, Vec::new(), true) }
    }
}

/// A boolean output column.
pub struct BoolOut {
    values: Validity,
    validity: Validity,
}

impl BoolOut {
    pub fn with_capacity(n: usize) -> Self {
        BoolOut { values: Validity::new(n), validity: Validity::new(n) }
    }

    #[inline]
    pub fn push(&mut self, v: Option<bool>) {
        self.validity.push(v.is_some());
        self.values.push(v.unwrap_or(false));
    }

    pub fn finish(self) -> Output {
        let (len, nulls) = (self.validity.len, self.validity.nulls);
        let validity = self.validity.take();
        Output { array: array(len, nulls, validity, vec![buf(self.values.into_values())], Vec::new()), schema: schema("b", Vec::new(), true) }
    }
}

/// An array output column: a large list of `T` per event.
pub struct ListOut<T> {
    offsets: Vec<i64>,
    values: Vec<T>,
    validity: Validity,
}

impl<T: Native> ListOut<T> {
    pub fn with_capacity(n: usize) -> Self {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        ListOut { offsets, values: Vec::new(), validity: Validity::new(n) }
    }

    #[inline]
    pub fn push(&mut self, v: Option<Vec<T>>) {
        self.validity.push(v.is_some());
        if let Some(v) = v {
            self.values.extend_from_slice(&v);
        }
        self.offsets.push(self.values.len() as i64);
    }

    pub fn finish(self) -> Output {
        let (len, nulls) = (self.validity.len, self.validity.nulls);
        let n = self.values.len();
        let child = array(n, 0, None, vec![buf(self.values)], Vec::new());
        let validity = self.validity.take();
        let item = {
            let mut s = schema(T::FORMAT, Vec::new(), false);
            // The child's name: "item", as Arrow names list elements.
            let owned = s.private_data as *mut OwnedSchema;
            let name = CString::new("item").unwrap();
            s.name = name.as_ptr();
            // SAFETY: private_data is the OwnedSchema made just above.
            unsafe { (*owned)._name = name };
            s
        };
        Output { array: array(len, nulls, validity, vec![buf(self.offsets)], vec![child]), schema: schema("+L", vec![item], true) }
    }
}

thread_local! {
    /// The last panic's message.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs a glue loop, catching a panic: then the row it was on (the loop keeps it in `at`).
pub fn guarded(f: impl FnOnce(&mut usize) -> Output) -> Result<Output, usize> {
    let mut at = 0usize;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut at))).map_err(|_| at)
}

/// Lines of the generated file before the user's first line.
static SOURCE_LINE_OFFSET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn install_hook(line_offset: u32) {
    SOURCE_LINE_OFFSET.store(line_offset, std::sync::atomic::Ordering::Relaxed);
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let msg = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_else(|| "a panic".into());
            let offset = SOURCE_LINE_OFFSET.load(std::sync::atomic::Ordering::Relaxed);
            let at = info.location().map(|l| {
                if l.line() > offset { format!(" (line {} of the source)", l.line() - offset) } else { format!(" ({}:{})", l.file(), l.line()) }
            });
            PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{}", at.unwrap_or_default())));
        }));
    });
}

/// A function's batch loop: its output, or the row a panic happened on.
pub type Glue = unsafe fn(&[&ArrowArray], &[&ArrowSchema], usize) -> Result<Output, usize>;

/// The library's `call`: runs function `index` over the lent arrays, hands back the output,
/// or a message (a panic names the event's row in the batch). Never unwinds into the host.
///
/// # Safety
/// The pointers are valid for `n_args` lent arrays and schemas, and two writable outputs.
pub unsafe fn call(table: &[Glue], line_offset: u32, index: u32, n_args: u32, args: *const *const ArrowArray, schemas: *const *const ArrowSchema, out: *mut ArrowArray, out_schema: *mut ArrowSchema, error: *mut *mut c_char) -> i32 {
    install_hook(line_offset);
    let fail = |msg: String| {
        *error = CString::new(msg.replace('\0', " ")).unwrap().into_raw();
        1
    };
    let Some(glue) = table.get(index as usize) else { return fail(format!("no function number {index}")) };
    let a: Vec<&ArrowArray> = (0..n_args as usize).map(|i| &**args.add(i)).collect();
    let s: Vec<&ArrowSchema> = (0..n_args as usize).map(|i| &**schemas.add(i)).collect();
    let n = a.first().map_or(0, |a| a.length as usize);
    if a.iter().any(|x| x.length as usize != n) {
        return fail("arguments of different lengths".into());
    }
    match glue(&a, &s, n) {
        Ok(o) => {
            std::ptr::write(out, o.array);
            std::ptr::write(out_schema, o.schema);
            0
        }
        Err(row) => {
            let msg = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "a panic".into());
            fail(format!("panicked on row {row} of its batch: {msg}"))
        }
    }
}

/// # Safety
/// `e` came from `call`'s error output.
pub unsafe fn free_error(e: *mut c_char) {
    if !e.is_null() {
        drop(CString::from_raw(e));
    }
}
