//! Writing XTC2 (spec §1, §6–§9, §13.3): datagrams with Names and ShapesData exactly as the DAQ's
//! field-by-field writers lay them out (Shapes before Data, no padding, CHARSTR rounded to 4),
//! and the smd records derived from bigdata datagrams.

use crate::dgram::{type_id, TransitionId, XtcHeader, DGRAM_HEADER_SIZE, XTC_HEADER_SIZE};
use crate::names::{DataType, NAME_SIZE};

/// One field of a [`NamesDef`].
#[derive(Clone, Debug, PartialEq)]
pub struct FieldDef {
    pub name: String,
    pub dtype: DataType,
    pub rank: u32,
}

impl FieldDef {
    pub fn new(name: &str, dtype: DataType, rank: u32) -> Self {
        FieldDef { name: name.into(), dtype, rank }
    }
}

/// A detector's schema, written into a Configure as a Names Xtc.
#[derive(Clone, Debug, PartialEq)]
pub struct NamesDef {
    pub names_id: u32,
    pub det_name: String,
    pub det_type: String,
    pub det_id: String,
    pub alg_name: String,
    /// `major << 16 | minor << 8 | micro`.
    pub alg_version: u32,
    pub segment: u32,
    pub fields: Vec<FieldDef>,
}

/// `((nodeId & 0xfff) << 8) | namesId` (spec §5).
pub fn names_id(node_id: u32, names_id: u8) -> u32 {
    ((node_id & 0xfff) << 8) | names_id as u32
}

/// A value to write; arrays carry their shape (C order).
#[derive(Clone, Copy, Debug)]
pub enum FieldValue<'a> {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Enum(i32),
    EnumDict(i32),
    Str(&'a str),
    Array(&'a [u32], ArrayData<'a>),
}

#[derive(Clone, Copy, Debug)]
pub enum ArrayData<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl ArrayData<'_> {
    fn dtype(&self) -> DataType {
        match self {
            ArrayData::U8(_) => DataType::U8,
            ArrayData::U16(_) => DataType::U16,
            ArrayData::U32(_) => DataType::U32,
            ArrayData::U64(_) => DataType::U64,
            ArrayData::I8(_) => DataType::I8,
            ArrayData::I16(_) => DataType::I16,
            ArrayData::I32(_) => DataType::I32,
            ArrayData::I64(_) => DataType::I64,
            ArrayData::F32(_) => DataType::F32,
            ArrayData::F64(_) => DataType::F64,
        }
    }
    fn len(&self) -> usize {
        match self {
            ArrayData::U8(v) => v.len(),
            ArrayData::U16(v) => v.len(),
            ArrayData::U32(v) => v.len(),
            ArrayData::U64(v) => v.len(),
            ArrayData::I8(v) => v.len(),
            ArrayData::I16(v) => v.len(),
            ArrayData::I32(v) => v.len(),
            ArrayData::I64(v) => v.len(),
            ArrayData::F32(v) => v.len(),
            ArrayData::F64(v) => v.len(),
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        macro_rules! le {
            ($v:expr) => {
                for x in $v.iter() {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            };
        }
        match self {
            ArrayData::U8(v) => out.extend_from_slice(v),
            ArrayData::U16(v) => le!(v),
            ArrayData::U32(v) => le!(v),
            ArrayData::U64(v) => le!(v),
            ArrayData::I8(v) => le!(v),
            ArrayData::I16(v) => le!(v),
            ArrayData::I32(v) => le!(v),
            ArrayData::I64(v) => le!(v),
            ArrayData::F32(v) => le!(v),
            ArrayData::F64(v) => le!(v),
        }
    }
}

impl FieldValue<'_> {
    fn dtype(&self) -> DataType {
        match self {
            FieldValue::U8(_) => DataType::U8,
            FieldValue::U16(_) => DataType::U16,
            FieldValue::U32(_) => DataType::U32,
            FieldValue::U64(_) => DataType::U64,
            FieldValue::I8(_) => DataType::I8,
            FieldValue::I16(_) => DataType::I16,
            FieldValue::I32(_) => DataType::I32,
            FieldValue::I64(_) => DataType::I64,
            FieldValue::F32(_) => DataType::F32,
            FieldValue::F64(_) => DataType::F64,
            FieldValue::Enum(_) => DataType::EnumVal,
            FieldValue::EnumDict(_) => DataType::EnumDict,
            FieldValue::Str(_) => DataType::CharStr,
            FieldValue::Array(_, d) => d.dtype(),
        }
    }
}

/// Builds one datagram in a reusable buffer: header, root Parent, then Names / ShapesData.
pub struct DgramWriter<'b> {
    buf: &'b mut Vec<u8>,
    start: usize,
}

impl<'b> DgramWriter<'b> {
    /// Starts a datagram at the end of `buf`. `env_low` is OR-ed into `env` below the service
    /// bits (readout groups, trigger byte).
    pub fn begin(buf: &'b mut Vec<u8>, service: TransitionId, timestamp: u64, env_low: u32) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&((timestamp & 0xffff_ffff) as u32).to_le_bytes());
        buf.extend_from_slice(&((timestamp >> 32) as u32).to_le_bytes());
        let env = ((service as u32) << 24) | (env_low & 0xf0ff_ffff);
        buf.extend_from_slice(&env.to_le_bytes());
        XtcHeader { src: 0, damage: 0, contains: type_id::PARENT, extent: XTC_HEADER_SIZE as u32 }.write(buf);
        DgramWriter { buf, start }
    }

    /// Sets the root Xtc's damage.
    pub fn damage(&mut self, damage: u16) {
        let at = self.start + 16;
        self.buf[at..at + 2].copy_from_slice(&damage.to_le_bytes());
    }

    /// Appends a Names Xtc.
    pub fn names(&mut self, def: &NamesDef) {
        let at = self.buf.len();
        let n_arrays = def.fields.iter().filter(|f| f.rank > 0).count() as u32;
        XtcHeader { src: def.names_id, damage: 0, contains: type_id::NAMES, extent: 0 }.write(self.buf);
        self.buf.extend_from_slice(&n_arrays.to_le_bytes());
        for s in [&def.det_type, &def.det_name, &def.det_id, &def.alg_name] {
            put_cstr(self.buf, s);
        }
        self.buf.extend_from_slice(&def.alg_version.to_le_bytes());
        self.buf.extend_from_slice(&def.segment.to_le_bytes());
        for f in &def.fields {
            let before = self.buf.len();
            put_cstr(self.buf, "");
            self.buf.extend_from_slice(&0u32.to_le_bytes());
            put_cstr(self.buf, &f.name);
            self.buf.extend_from_slice(&(f.dtype as u32).to_le_bytes());
            self.buf.extend_from_slice(&f.rank.to_le_bytes());
            debug_assert_eq!(self.buf.len() - before, NAME_SIZE);
        }
        self.close(at);
    }

    /// Appends a ShapesData (Shapes first, then Data) with one value per field of `def`.
    /// Panics when the values do not match the definition: that is a bug of the writer's caller.
    pub fn shapes_data(&mut self, def: &NamesDef, values: &[FieldValue]) {
        assert_eq!(values.len(), def.fields.len(), "{}.{}: one value per field", def.det_name, def.alg_name);
        let sd = self.buf.len();
        XtcHeader { src: def.names_id, damage: 0, contains: type_id::SHAPES_DATA, extent: 0 }.write(self.buf);
        let shapes = self.buf.len();
        XtcHeader { src: 0, damage: 0, contains: type_id::SHAPES, extent: 0 }.write(self.buf);
        for (f, v) in def.fields.iter().zip(values) {
            assert_eq!(f.dtype, v.dtype(), "{}.{}.{}: value type", def.det_name, def.alg_name, f.name);
            if f.rank == 0 {
                continue;
            }
            let mut shape = [0u32; 5];
            match v {
                FieldValue::Str(s) => shape[0] = charstr_len(s) as u32,
                FieldValue::Array(dims, data) => {
                    assert_eq!(dims.len(), f.rank as usize, "{}: rank", f.name);
                    assert_eq!(dims.iter().map(|&d| d as usize).product::<usize>(), data.len(), "{}: shape", f.name);
                    shape[..dims.len()].copy_from_slice(dims);
                }
                _ => panic!("{}: array field needs an array value", f.name),
            }
            for d in shape {
                self.buf.extend_from_slice(&d.to_le_bytes());
            }
        }
        self.close(shapes);
        let data = self.buf.len();
        XtcHeader { src: 0, damage: 0, contains: type_id::DATA, extent: 0 }.write(self.buf);
        for v in values {
            match *v {
                FieldValue::U8(x) => self.buf.push(x),
                FieldValue::U16(x) => self.buf.extend_from_slice(&x.to_le_bytes()),
                FieldValue::U32(x) => self.buf.extend_from_slice(&x.to_le_bytes()),
                FieldValue::U64(x) => self.buf.extend_from_slice(&x.to_le_bytes()),
                FieldValue::I8(x) => self.buf.extend_from_slice(&x.to_le_bytes()),
                FieldValue::I16(x) => self.buf.extend_from_slice(&x.to_le_bytes()),
                FieldValue::I32(x) | FieldValue::Enum(x) | FieldValue::EnumDict(x) => {
                    self.buf.extend_from_slice(&x.to_le_bytes())
                }
                FieldValue::I64(x) => self.buf.extend_from_slice(&x.to_le_bytes()),
                FieldValue::F32(x) => self.buf.extend_from_slice(&x.to_le_bytes()),
                FieldValue::F64(x) => self.buf.extend_from_slice(&x.to_le_bytes()),
                FieldValue::Str(s) => {
                    let n = charstr_len(s);
                    self.buf.extend_from_slice(s.as_bytes());
                    self.buf.resize(self.buf.len() + n - s.len(), 0);
                }
                FieldValue::Array(_, d) => d.write(self.buf),
            }
        }
        self.close(data);
        self.close(sd);
    }

    /// Finishes the datagram: sets the root extent. Returns its size.
    pub fn finish(mut self) -> usize {
        let root = self.start + 12;
        self.close(root);
        self.buf.len() - self.start
    }

    /// Sets the extent of the Xtc whose header starts at `at` to reach the end of the buffer.
    fn close(&mut self, at: usize) {
        let extent = (self.buf.len() - at) as u32;
        self.buf[at + 8..at + 12].copy_from_slice(&extent.to_le_bytes());
    }
}

/// Bytes a CHARSTR occupies: `strlen + 1` rounded up to a multiple of 4 (spec §9).
pub fn charstr_len(s: &str) -> usize {
    (s.len() + 1).div_ceil(4) * 4
}

fn put_cstr(buf: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(255);
    buf.extend_from_slice(&b[..n]);
    buf.resize(buf.len() + 256 - n, 0);
}

/// The `smdinfo` Names the DAQ appends to the smd Configure (spec §12–§13.3).
pub fn smdinfo_names(names_id: u32) -> NamesDef {
    NamesDef {
        names_id,
        det_name: "smdinfo".into(),
        det_type: "offset".into(),
        det_id: String::new(),
        alg_name: "offsetAlg".into(),
        alg_version: 0,
        segment: 0,
        fields: vec![FieldDef::new("intOffset", DataType::U64, 0), FieldDef::new("intDgramSize", DataType::U64, 0)],
    }
}

/// Appends the smd datagram for one bigdata datagram `dg` that sits at `offset` of its chunk:
/// a 76-byte index record for L1Accepts, a header-only EndRun, the Configure plus the smdinfo
/// Names, and a verbatim copy of every other transition (spec §13.3).
pub fn write_smd(out: &mut Vec<u8>, dg: &[u8], offset: u64, smdinfo: &NamesDef) {
    let service = TransitionId::from_env(u32::from_le_bytes(dg[8..12].try_into().unwrap()));
    let timestamp = u64::from_le_bytes(dg[0..8].try_into().unwrap());
    let env = u32::from_le_bytes(dg[8..12].try_into().unwrap());
    match service {
        s if s.is_event() => {
            let mut w = DgramWriter::begin(out, s, timestamp, env);
            w.shapes_data(smdinfo, &[FieldValue::U64(offset), FieldValue::U64(dg.len() as u64)]);
            w.finish();
        }
        TransitionId::EndRun => {
            out.extend_from_slice(&dg[..DGRAM_HEADER_SIZE]);
            let at = out.len() - 4;
            out[at..].copy_from_slice(&(XTC_HEADER_SIZE as u32).to_le_bytes());
        }
        TransitionId::Configure => {
            let start = out.len();
            out.extend_from_slice(dg);
            let mut w = DgramWriter { buf: out, start };
            w.names(smdinfo);
            w.finish();
        }
        _ => out.extend_from_slice(dg),
    }
}
