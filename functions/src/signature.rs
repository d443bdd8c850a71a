//! Which functions of a source are event functions, and over which values.
//!
//! Every top-level `fn` is one (helpers go in a `mod` block): its parameters are event values
//! (scalars, `Option`s of them, slices for arrays) and it returns a scalar, an `Option` of one
//! (null), or a `Vec` (an array per event). Anything else is an error naming the function,
//! the parameter and its line, before anything is compiled.

use serde::{Deserialize, Serialize};

/// A numeric or boolean element type, with its Arrow C Data Interface format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scalar {
    F64,
    F32,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl Scalar {
    pub const ALL: [Scalar; 11] = [
        Scalar::F64,
        Scalar::F32,
        Scalar::I64,
        Scalar::I32,
        Scalar::I16,
        Scalar::I8,
        Scalar::U64,
        Scalar::U32,
        Scalar::U16,
        Scalar::U8,
        Scalar::Bool,
    ];

    pub fn rust(self) -> &'static str {
        match self {
            Scalar::F64 => "f64",
            Scalar::F32 => "f32",
            Scalar::I64 => "i64",
            Scalar::I32 => "i32",
            Scalar::I16 => "i16",
            Scalar::I8 => "i8",
            Scalar::U64 => "u64",
            Scalar::U32 => "u32",
            Scalar::U16 => "u16",
            Scalar::U8 => "u8",
            Scalar::Bool => "bool",
        }
    }

    fn from_rust(name: &str) -> Option<Scalar> {
        Scalar::ALL.into_iter().find(|s| s.rust() == name)
    }
}

/// A parameter: one value of the event, `None` for a missing one only with `Option`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    Value(Scalar),
    Optional(Scalar),
    /// `&[T]`: an array column's elements for the event (a waveform, a flattened image).
    Slice(Scalar),
    OptionalSlice(Scalar),
}

impl Param {
    pub fn scalar(self) -> Scalar {
        match self {
            Param::Value(s) | Param::Optional(s) | Param::Slice(s) | Param::OptionalSlice(s) => s,
        }
    }

    pub fn optional(self) -> bool {
        matches!(self, Param::Optional(_) | Param::OptionalSlice(_))
    }

    pub fn slice(self) -> bool {
        matches!(self, Param::Slice(_) | Param::OptionalSlice(_))
    }
}

/// What a function returns per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Returns {
    Value(Scalar),
    Optional(Scalar),
    Vec(Scalar),
    OptionalVec(Scalar),
}

impl Returns {
    pub fn scalar(self) -> Scalar {
        match self {
            Returns::Value(s) | Returns::Optional(s) | Returns::Vec(s) | Returns::OptionalVec(s) => s,
        }
    }

    pub fn is_vec(self) -> bool {
        matches!(self, Returns::Vec(_) | Returns::OptionalVec(_))
    }

    pub fn optional(self) -> bool {
        matches!(self, Returns::Optional(_) | Returns::OptionalVec(_))
    }
}

/// One event function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub name: String,
    pub params: Vec<Param>,
    pub returns: Returns,
    /// Line of the `fn` in the source (1-based).
    pub line: usize,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let params: Vec<String> = self.params.iter().map(|p| param_text(*p)).collect();
        write!(f, "{}({}) -> {}", self.name, params.join(", "), returns_text(self.returns))
    }
}

fn param_text(p: Param) -> String {
    match p {
        Param::Value(s) => s.rust().into(),
        Param::Optional(s) => format!("Option<{}>", s.rust()),
        Param::Slice(s) => format!("&[{}]", s.rust()),
        Param::OptionalSlice(s) => format!("Option<&[{}]>", s.rust()),
    }
}

fn returns_text(r: Returns) -> String {
    match r {
        Returns::Value(s) => s.rust().into(),
        Returns::Optional(s) => format!("Option<{}>", s.rust()),
        Returns::Vec(s) => format!("Vec<{}>", s.rust()),
        Returns::OptionalVec(s) => format!("Option<Vec<{}>>", s.rust()),
    }
}

/// Why a source holds no usable event functions (line 1-based, in the source; 0 when the
/// source does not parse: rustc's diagnostics say where).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SignatureError {
    pub line: usize,
    pub message: String,
}

const WHAT_FITS: &str = "an event function takes f64, f32, i64, i32, i16, i8, u64, u32, u16, u8 or bool, \
an Option of one, or a slice of one (&[f32]: an array column), and returns one of these, an Option of \
one, or a Vec of one; helpers with other types go in a `mod` block";

/// The event functions of `source`: its top-level `fn`s, in order.
pub fn read(source: &str) -> Result<Vec<Signature>, SignatureError> {
    let file = syn::parse_file(source).map_err(|e| SignatureError { line: 0, message: e.to_string() })?;
    let mut out: Vec<Signature> = Vec::new();
    for item in &file.items {
        let syn::Item::Fn(f) = item else { continue };
        let name = f.sig.ident.to_string();
        let line = line_of_fn(source, &name);
        let bad = |what: String| SignatureError { line, message: format!("fn {name}: {what}; {WHAT_FITS}") };
        if !f.sig.generics.params.is_empty() || f.sig.asyncness.is_some() || f.sig.unsafety.is_some() || f.sig.variadic.is_some() {
            return Err(bad("generic, async, unsafe or variadic".into()));
        }
        if out.iter().any(|s| s.name == name) {
            return Err(bad("defined twice".into()));
        }
        let mut params = Vec::new();
        for input in &f.sig.inputs {
            let syn::FnArg::Typed(pt) = input else {
                return Err(bad("takes self".into()));
            };
            let p = param(&pt.ty).ok_or_else(|| bad(format!("parameter `{}: {}` is not an event value", tokens(&pt.pat), tokens(&pt.ty))))?;
            params.push(p);
        }
        if params.is_empty() {
            return Err(bad("takes no event value".into()));
        }
        let returns = match &f.sig.output {
            syn::ReturnType::Default => return Err(bad("returns nothing".into())),
            syn::ReturnType::Type(_, ty) => returns(ty).ok_or_else(|| bad(format!("returns `{}`, not an event value", tokens(ty))))?,
        };
        out.push(Signature { name, params, returns, line });
    }
    if out.is_empty() {
        return Err(SignatureError { line: 1, message: format!("no top-level `fn`: {WHAT_FITS}") });
    }
    Ok(out)
}

/// The line (1-based) where `fn name` starts an item: spans carry no lines outside a proc
/// macro, so the text is searched.
fn line_of_fn(source: &str, name: &str) -> usize {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    for (i, line) in source.lines().enumerate() {
        let mut rest = line.trim_start();
        for prefix in ["pub(crate) ", "pub(super) ", "pub ", "const ", "extern \"C\" "] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest).trim_start();
        }
        if let Some(after) = rest.strip_prefix("fn ").map(str::trim_start).and_then(|r| r.strip_prefix(name)) {
            if !after.starts_with(is_ident) {
                return i + 1;
            }
        }
    }
    0
}

fn tokens(t: &impl quote::ToTokens) -> String {
    t.to_token_stream().to_string().replace(" ,", ",").replace("& [", "&[").replace(" < ", "<").replace(" >", ">").replace("< ", "<")
}

fn scalar(ty: &syn::Type) -> Option<Scalar> {
    let syn::Type::Path(p) = ty else { return None };
    if p.qself.is_some() || p.path.segments.len() != 1 {
        return None;
    }
    let seg = &p.path.segments[0];
    if !seg.arguments.is_empty() {
        return None;
    }
    Scalar::from_rust(&seg.ident.to_string())
}

/// `Option<T>` → T; `Vec<T>` → T (by the segment's name).
fn generic_of<'a>(ty: &'a syn::Type, wrapper: &str) -> Option<&'a syn::Type> {
    let syn::Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != wrapper {
        return None;
    }
    let syn::PathArguments::AngleBracketed(a) = &seg.arguments else { return None };
    match a.args.first()? {
        syn::GenericArgument::Type(t) if a.args.len() == 1 => Some(t),
        _ => None,
    }
}

fn slice(ty: &syn::Type) -> Option<Scalar> {
    let syn::Type::Reference(r) = ty else { return None };
    if r.mutability.is_some() {
        return None;
    }
    let syn::Type::Slice(s) = &*r.elem else { return None };
    scalar(&s.elem).filter(|s| *s != Scalar::Bool)
}

fn param(ty: &syn::Type) -> Option<Param> {
    if let Some(s) = scalar(ty) {
        return Some(Param::Value(s));
    }
    if let Some(s) = slice(ty) {
        return Some(Param::Slice(s));
    }
    let inner = generic_of(ty, "Option")?;
    scalar(inner).map(Param::Optional).or_else(|| slice(inner).map(Param::OptionalSlice))
}

fn returns(ty: &syn::Type) -> Option<Returns> {
    if let Some(s) = scalar(ty) {
        return Some(Returns::Value(s));
    }
    let vec = |t: &syn::Type| generic_of(t, "Vec").and_then(scalar).filter(|s| *s != Scalar::Bool);
    if let Some(s) = vec(ty) {
        return Some(Returns::Vec(s));
    }
    let inner = generic_of(ty, "Option")?;
    scalar(inner).map(Returns::Optional).or_else(|| vec(inner).map(Returns::OptionalVec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_fns_are_read_with_their_event_types() {
        let src = "use std::f64::consts::PI;\n\
                   fn ratio(a: f64, b: f64) -> f64 { a / b }\n\
                   fn com(img: &[f32], w: Option<u16>) -> Option<f64> { None }\n\
                   fn spectrum(x: Option<&[u16]>) -> Vec<f32> { vec![] }\n\
                   mod helpers { pub fn name(s: String) -> String { s } }\n";
        let sigs = read(src).unwrap();
        let text: Vec<String> = sigs.iter().map(|s| format!("{}:{s}", s.line)).collect();
        assert_eq!(
            text,
            [
                "2:ratio(f64, f64) -> f64",
                "3:com(&[f32], Option<u16>) -> Option<f64>",
                "4:spectrum(Option<&[u16]>) -> Vec<f32>",
            ]
        );
    }

    #[test]
    fn a_wrong_signature_names_the_function_the_parameter_and_its_line() {
        let e = read("fn ok(x: f64) -> f64 { x }\n\nfn bad(x: f64, s: String) -> f64 { x }").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.starts_with("fn bad: parameter `s: String` is not an event value; an event function takes"), "{}", e.message);
        let e = read("fn v(x: &[f64]) -> Vec<String> { vec![] }").unwrap_err();
        assert!(e.message.contains("returns `Vec<String>`"), "{}", e.message);
        let e = read("fn n(x: f64) { }").unwrap_err();
        assert!(e.message.contains("fn n: returns nothing"), "{}", e.message);
        let e = read("fn g<T>(x: T) -> f64 { 0.0 }").unwrap_err();
        assert!(e.message.contains("generic"), "{}", e.message);
        let e = read("fn f(x: f64) -> f64 { x ").unwrap_err();
        assert_eq!(e.line, 0);
        assert!(read("mod m { fn f(x: f64) -> f64 { x } }").unwrap_err().message.starts_with("no top-level `fn`"));
    }
}
