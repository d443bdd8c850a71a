//! A small unpickler for what psana's calibration cache holds (spec §2.5): dicts, tuples, lists,
//! strings, numbers, and numpy arrays, which pickle as reduce calls — `_reconstruct` + BUILD
//! (protocols 2–4), `_frombuffer` (protocol 5, in-band buffers), `_codecs.encode` for bytes in
//! protocol 2. Anything else becomes an opaque object; nothing is ever executed.

use std::rc::Rc;

use super::array::{Elements, NdArray};

/// A decoded pickle value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Rc<Value>>),
    List(Vec<Rc<Value>>),
    Dict(Vec<(Rc<Value>, Rc<Value>)>),
    Array(NdArray),
    /// A class or function reference `module.name`.
    Global(String),
    /// `numpy.dtype(descr)`, byte order from its BUILD state (`<`, `>`, `|`, `=`).
    Dtype { descr: String, order: char },
    /// `numpy.ndarray` awaiting its BUILD state.
    PendingArray,
    /// Any other object: its class or function name; its state is ignored.
    Object(String),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a dict with string keys.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v.as_ref()),
            _ => None,
        }
    }
}

/// Unpickles `bytes`; errors name the byte offset.
pub fn unpickle(bytes: &[u8]) -> Result<Value, (usize, String)> {
    Machine { b: bytes, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: Vec::new() }.run()
}

struct Machine<'a> {
    b: &'a [u8],
    pos: usize,
    stack: Vec<Rc<Value>>,
    marks: Vec<usize>,
    memo: Vec<Option<Rc<Value>>>,
}

type Step<T> = Result<T, String>;

impl Machine<'_> {
    fn run(mut self) -> Result<Value, (usize, String)> {
        loop {
            let at = self.pos;
            match self.step() {
                Ok(true) => {}
                Ok(false) => {
                    let top = self.pop().map_err(|m| (at, m))?;
                    return Ok(Rc::try_unwrap(top).unwrap_or_else(|rc| (*rc).clone()));
                }
                Err(message) => return Err((at, message)),
            }
        }
    }

    fn take(&mut self, n: usize) -> Step<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or("pickle ends early (truncated?)")?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Step<u64> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64))
    }

    fn line(&mut self) -> Step<String> {
        let rest = &self.b[self.pos..];
        let end = rest.iter().position(|&c| c == b'\n').ok_or("pickle ends inside a text line")?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Rc::new(v));
    }

    fn pop(&mut self) -> Step<Rc<Value>> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("pop below a MARK".into());
        }
        self.stack.pop().ok_or_else(|| "pop from an empty stack".into())
    }

    fn pop_mark(&mut self) -> Step<Vec<Rc<Value>>> {
        let mark = self.marks.pop().ok_or("no MARK on the stack")?;
        Ok(self.stack.split_off(mark))
    }

    fn top_mut(&mut self) -> Step<&mut Value> {
        let top = self.stack.last_mut().ok_or("empty stack")?;
        Ok(Rc::make_mut(top))
    }

    fn memo_put(&mut self, index: usize) -> Step<()> {
        let top = self.stack.last().ok_or("MEMOIZE on an empty stack")?.clone();
        // Picklers number memo entries in order; a far index is a corrupt file, not a reason
        // to allocate gigabytes.
        if index > self.memo.len() + (1 << 16) {
            return Err(format!("memo index {index} far beyond the {} entries so far", self.memo.len()));
        }
        if self.memo.len() <= index {
            self.memo.resize(index + 1, None);
        }
        self.memo[index] = Some(top);
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> Step<()> {
        let v = self.memo.get(index).cloned().flatten().ok_or_else(|| format!("memo {index} is empty"))?;
        self.stack.push(v);
        Ok(())
    }

    /// One opcode; false at STOP.
    fn step(&mut self) -> Step<bool> {
        let op = self.take(1)?[0];
        match op {
            0x80 => {
                self.take(1)?; // PROTO
            }
            0x95 => {
                self.take(8)?; // FRAME: a size hint
            }
            b'.' => return Ok(false),
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.stack.last().ok_or("DUP on an empty stack")?.clone();
                self.stack.push(top);
            }
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            b'J' => {
                let v = self.uint(4)? as u32 as i32;
                self.push(Value::Int(v as i64))
            }
            b'K' => {
                let v = self.uint(1)?;
                self.push(Value::Int(v as i64))
            }
            b'M' => {
                let v = self.uint(2)?;
                self.push(Value::Int(v as i64))
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a { self.uint(1)? } else { self.uint(4)? } as usize;
                let digits = self.take(n)?;
                if n > 8 {
                    return Err(format!("integer of {n} bytes does not fit in 64 bits"));
                }
                let mut v: i64 = 0;
                for (i, &d) in digits.iter().enumerate() {
                    v |= (d as i64) << (8 * i);
                }
                if n > 0 && n < 8 && digits[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                self.push(Value::Int(v))
            }
            b'G' => {
                let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                self.push(Value::Float(v))
            }
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => self.uint(1)?,
                    b'X' => self.uint(4)?,
                    _ => self.uint(8)?,
                } as usize;
                let s = std::str::from_utf8(self.take(n)?).map_err(|_| "string is not UTF-8")?.to_string();
                self.push(Value::Str(s))
            }
            b'C' | b'B' | 0x8e | 0x96 => {
                let n = match op {
                    b'C' => self.uint(1)?,
                    b'B' => self.uint(4)?,
                    _ => self.uint(8)?,
                } as usize;
                let bytes = self.take(n)?.to_vec();
                self.push(Value::Bytes(bytes))
            }
            b'U' | b'T' => {
                let n = if op == b'U' { self.uint(1)? } else { self.uint(4)? } as usize;
                let bytes = self.take(n)?.to_vec();
                self.push(Value::Bytes(bytes))
            }
            b'}' => self.push(Value::Dict(Vec::new())),
            b']' => self.push(Value::List(Vec::new())),
            b')' => self.push(Value::Tuple(Vec::new())),
            0x8f => self.push(Value::List(Vec::new())), // EMPTY_SET: kept as a list
            b'd' => {
                let items = self.pop_mark()?;
                let v = pairs(items)?;
                self.push(Value::Dict(v))
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(items))
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    return Err("TUPLE with too few items".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Value::Tuple(items))
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                match self.top_mut()? {
                    Value::Dict(items) => items.push((k, v)),
                    other => return Err(format!("SETITEM on {}", kind(other))),
                }
            }
            b'u' => {
                let items = pairs(self.pop_mark()?)?;
                match self.top_mut()? {
                    Value::Dict(d) => d.extend(items),
                    other => return Err(format!("SETITEMS on {}", kind(other))),
                }
            }
            b'a' => {
                let v = self.pop()?;
                match self.top_mut()? {
                    Value::List(l) => l.push(v),
                    other => return Err(format!("APPEND on {}", kind(other))),
                }
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                match self.top_mut()? {
                    Value::List(l) => l.extend(items),
                    other => return Err(format!("APPENDS on {}", kind(other))),
                }
            }
            0x94 => self.memo_put(self.memo.len())?,
            b'q' => {
                let i = self.uint(1)? as usize;
                self.memo_put(i)?
            }
            b'r' => {
                let i = self.uint(4)? as usize;
                self.memo_put(i)?
            }
            b'h' => {
                let i = self.uint(1)? as usize;
                self.memo_get(i)?
            }
            b'j' => {
                let i = self.uint(4)? as usize;
                self.memo_get(i)?
            }
            b'p' => {
                let i: usize = self.line()?.trim().parse().map_err(|_| "bad PUT index")?;
                self.memo_put(i)?
            }
            b'g' => {
                let i: usize = self.line()?.trim().parse().map_err(|_| "bad GET index")?;
                self.memo_get(i)?
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Value::Global(format!("{module}.{name}")))
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module.as_str(), name.as_str()) {
                    (Some(m), Some(n)) => self.push(Value::Global(format!("{m}.{n}"))),
                    _ => return Err("STACK_GLOBAL without two strings".into()),
                }
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = reduce(&callable, &args)?;
                self.push(v)
            }
            0x81 => {
                let _args = self.pop()?;
                let class = self.pop()?;
                let name = match class.as_ref() {
                    Value::Global(g) => g.clone(),
                    other => kind(other).to_string(),
                };
                self.push(Value::Object(name))
            }
            b'b' => {
                let state = self.pop()?;
                let top = self.top_mut()?;
                build(top, &state)?;
            }
            0x97 | 0x98 => return Err("out-of-band buffers (pickle protocol 5 with buffer_callback) are not supported".into()),
            other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
        }
        Ok(true)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Dict(_) => "a dict",
        Value::List(_) => "a list",
        Value::Tuple(_) => "a tuple",
        Value::Array(_) => "an array",
        _ => "a scalar",
    }
}

fn pairs(items: Vec<Rc<Value>>) -> Step<Vec<(Rc<Value>, Rc<Value>)>> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of dict items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn tuple(v: &Value) -> Option<&[Rc<Value>]> {
    match v {
        Value::Tuple(items) => Some(items),
        _ => None,
    }
}

/// The few callables a numpy pickle needs; any other call becomes an opaque object.
fn reduce(callable: &Value, args: &Value) -> Step<Value> {
    let Value::Global(name) = callable else { return Ok(Value::Object("call".into())) };
    let args = tuple(args).unwrap_or(&[]);
    let short = name.rsplit('.').next().unwrap_or("");
    let numpy = name.starts_with("numpy.");
    Ok(match (numpy, short) {
        (true, "_reconstruct") => Value::PendingArray,
        (true, "dtype") => {
            let descr = args.first().and_then(|d| d.as_str()).ok_or("numpy.dtype without a type string")?;
            Value::Dtype { descr: descr.to_string(), order: '=' }
        }
        (true, "_frombuffer") => {
            let [buffer, dtype, shape, order] = args else { return Err("_frombuffer needs 4 arguments".into()) };
            let Value::Bytes(data) = buffer.as_ref() else { return Err("_frombuffer without a buffer".into()) };
            if order.as_str() == Some("F") {
                return Err("array is in Fortran order; only C order is read".into());
            }
            Value::Array(array(dtype, &shape_of(shape)?, data)?)
        }
        (false, _) if name == "_codecs.encode" => {
            let s = args.first().and_then(|s| s.as_str()).ok_or("_codecs.encode without a string")?;
            // latin1: every char is one byte.
            Value::Bytes(s.chars().map(|c| c as u32 as u8).collect())
        }
        _ => Value::Object(name.clone()),
    })
}

/// BUILD: numpy dtype and ndarray states; other objects keep no state.
fn build(target: &mut Value, state: &Value) -> Step<()> {
    match target {
        Value::Dtype { order, .. } => {
            if let Some(o) = tuple(state).and_then(|s| s.get(1)).and_then(|o| o.as_str()).and_then(|o| o.chars().next()) {
                *order = o;
            }
        }
        Value::PendingArray => {
            let s = tuple(state).ok_or("ndarray state is not a tuple")?;
            let [_, shape, dtype, fortran, data] = s else { return Err(format!("ndarray state has {} items, expected 5", s.len())) };
            if matches!(fortran.as_ref(), Value::Bool(true)) {
                return Err("array is in Fortran order; only C order is read".into());
            }
            let Value::Bytes(bytes) = data.as_ref() else { return Err("ndarray data is not bytes (object array?)".into()) };
            *target = Value::Array(array(dtype, &shape_of(shape)?, bytes)?);
        }
        _ => {}
    }
    Ok(())
}

fn shape_of(v: &Value) -> Step<Vec<usize>> {
    let items = tuple(v).ok_or("array shape is not a tuple")?;
    items
        .iter()
        .map(|d| match d.as_ref() {
            Value::Int(n) if *n >= 0 => Ok(*n as usize),
            _ => Err("array shape holds a non-size".to_string()),
        })
        .collect()
}

fn array(dtype: &Value, shape: &[usize], bytes: &[u8]) -> Step<NdArray> {
    let Value::Dtype { descr, order } = dtype else { return Err("array dtype is not a numpy.dtype".into()) };
    let big = *order == '>';
    let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or("array shape overflows")?;
    macro_rules! read {
        ($t:ty, $variant:ident) => {{
            const SIZE: usize = std::mem::size_of::<$t>();
            if bytes.len() != n * SIZE {
                return Err(format!("array {shape:?} of {descr} needs {} bytes, has {}", n * SIZE, bytes.len()));
            }
            Elements::$variant(
                bytes
                    .chunks_exact(SIZE)
                    .map(|c| {
                        let a: [u8; SIZE] = c.try_into().unwrap();
                        if big { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }
                    })
                    .collect(),
            )
        }};
    }
    let data = match descr.as_str() {
        "f4" => read!(f32, F32),
        "f8" => read!(f64, F64),
        "u1" => read!(u8, U8),
        "b1" => read!(u8, U8),
        "u2" => read!(u16, U16),
        "u4" => read!(u32, U32),
        "u8" => read!(u64, U64),
        "i2" => read!(i16, I16),
        "i4" => read!(i32, I32),
        "i8" => read!(i64, I64),
        other => return Err(format!("array dtype '{other}' is not one of f4 f8 u1 u2 u4 u8 i2 i4 i8")),
    };
    Ok(NdArray::new(shape.to_vec(), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protocol-2 pickle assembled by hand: `{'a': (1, 'x'), 'b': [2.5]}`.
    #[test]
    fn hand_assembled() {
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b'K', 1, b'X', 1, 0, 0, 0, b'x', 0x86];
        p.extend([b'X', 1, 0, 0, 0, b'b', b']', b'G']);
        p.extend(2.5f64.to_be_bytes());
        p.extend([b'a', b'u', b'.']);
        let v = unpickle(&p).unwrap();
        assert_eq!(v.get("a"), Some(&Value::Tuple(vec![Rc::new(Value::Int(1)), Rc::new(Value::Str("x".into()))])));
        assert_eq!(v.get("b"), Some(&Value::List(vec![Rc::new(Value::Float(2.5))])));
    }

    #[test]
    fn truncated_and_unknown_are_errors() {
        assert!(unpickle(&[b'N', b'r', 0xff, 0xff, 0xff, 0xff, b'.']).unwrap_err().1.contains("memo index"));
        assert!(unpickle(&[0x80, 4, 0x8c, 10, b'a']).unwrap_err().1.contains("truncated"));
        assert!(unpickle(&[0x80, 4, 0xff]).unwrap_err().1.contains("0xff"));
        assert!(unpickle(&[]).is_err());
        assert!(unpickle(b"s.").is_err());
    }
}
