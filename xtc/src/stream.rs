//! Per-stream decoding state (spec §10): the NamesLookup of the latest Configure, and the
//! values of its configuration records (what calibration needs, e.g. epix10ka gain bits).

use std::sync::Arc;

use crate::decode::{ShapesData, Value};
use crate::dgram::{type_id, walk, Dgram, TransitionId};
use crate::error::FormatError;
use crate::names::{DataType, Names, NamesLookup};

/// A configuration record larger than this is not kept (calibration needs a few 100 kB).
const MAX_CONFIG_FIELD_BYTES: usize = 64 << 20;

/// One field of a configuration record, copied out of the Configure.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigField {
    pub name: String,
    pub dtype: DataType,
    /// Empty for a scalar.
    pub dims: Vec<u32>,
    /// Little-endian values, C order.
    pub bytes: Vec<u8>,
}

impl ConfigField {
    /// The values as u8 when the field is an 8-bit integer array or scalar.
    pub fn as_u8(&self) -> Option<&[u8]> {
        matches!(self.dtype, DataType::U8 | DataType::I8).then_some(&self.bytes[..])
    }

    /// Integer values widened to i64 (`None` for floats and strings).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let size = self.dtype.size();
        if self.dtype.is_float() || self.dtype == DataType::CharStr || size == 0 {
            return None;
        }
        let n = self.bytes.len() / size;
        (0..n).map(|i| crate::decode::read_scalar(self.dtype, &self.bytes, i * size).as_int().map(|v| v as i64)).collect()
    }
}

/// A configuration record (alg `config`, `tsConfig`, …) of one detector segment.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigRecord {
    pub det_name: String,
    pub det_type: String,
    pub segment: u32,
    pub alg_name: String,
    pub alg_version: u32,
    pub fields: Vec<ConfigField>,
}

impl ConfigRecord {
    pub fn field(&self, name: &str) -> Option<&ConfigField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// What one stream knows: the schema of its latest Configure.
#[derive(Clone, Debug, Default)]
pub struct StreamState {
    lookup: Arc<NamesLookup>,
    configs: Arc<Vec<ConfigRecord>>,
    configures: u32,
}

impl StreamState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The schema of the latest Configure (empty before the first).
    pub fn lookup(&self) -> &Arc<NamesLookup> {
        &self.lookup
    }

    /// How many Configures this stream has seen.
    pub fn configures(&self) -> u32 {
        self.configures
    }

    /// Takes the schema from a Configure (first pass of spec §10); other datagrams are ignored.
    /// Returns true when `dg` was a Configure.
    pub fn observe(&mut self, dg: &Dgram<'_>) -> Result<bool, FormatError> {
        if dg.service() != TransitionId::Configure {
            return Ok(false);
        }
        let mut lookup = NamesLookup::new();
        walk(dg.bytes(), &mut |node| {
            if node.header.type_id() == type_id::NAMES {
                lookup.insert(Names::parse(&node)?, node.at)?;
            }
            Ok::<_, FormatError>(())
        })?;
        self.lookup = Arc::new(lookup);
        self.configs = Arc::new(self.config_records(dg)?);
        self.configures += 1;
        Ok(true)
    }

    /// The configuration records of the latest Configure.
    pub fn configs(&self) -> &Arc<Vec<ConfigRecord>> {
        &self.configs
    }

    /// Copies the values of the Configure's configuration records (small: read once per run).
    fn config_records(&self, dg: &Dgram<'_>) -> Result<Vec<ConfigRecord>, FormatError> {
        let mut out = Vec::new();
        self.for_each_shapes_data(dg, |names, sd| {
            if !names.alg_name.to_ascii_lowercase().contains("config") {
                return Ok(());
            }
            let mut fields = Vec::new();
            sd.for_each_field(names, |_, name, value| {
                let (dims, bytes) = match value {
                    Value::Array(a) if a.bytes.len() <= MAX_CONFIG_FIELD_BYTES => (a.dims().to_vec(), a.bytes.to_vec()),
                    Value::Array(_) => return,
                    Value::Str(s) => (vec![s.len() as u32], s.to_vec()),
                    scalar => (Vec::new(), scalar_bytes(scalar)),
                };
                let dtype = if matches!(value, Value::Str(_)) { DataType::CharStr } else { name.dtype };
                fields.push(ConfigField { name: name.name.clone(), dtype, dims, bytes });
            })?;
            out.push(ConfigRecord {
                det_name: names.det_name.clone(),
                det_type: names.det_type.clone(),
                segment: names.segment,
                alg_name: names.alg_name.clone(),
                alg_version: names.alg_version,
                fields,
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` for every ShapesData of `dg` with the Names it refers to.
    #[inline]
    pub fn for_each_shapes_data<'a>(
        &self,
        dg: &Dgram<'a>,
        mut f: impl FnMut(&Arc<Names>, ShapesData<'a>) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        walk(dg.bytes(), &mut |node| {
            if node.header.type_id() != type_id::SHAPES_DATA {
                return Ok(());
            }
            let names = self.names_for(node.header.src, node.at)?;
            f(names, ShapesData::parse(&node)?)
        })
    }

    /// The Names a ShapesData refers to; a missing one is a corrupt datagram (spec §10).
    pub fn names_for(&self, names_id: u32, at: usize) -> Result<&Arc<Names>, FormatError> {
        self.lookup.get(names_id).ok_or_else(|| {
            let hint = if self.configures == 0 {
                " (no Configure seen in this stream yet: a chunk after c000 must be read through its run)"
            } else {
                ""
            };
            FormatError::new(at, format!("invalid NamesId 0x{names_id:x}: no such Names in the stream's Configure{hint}"))
        })
    }
}

fn scalar_bytes(v: Value<'_>) -> Vec<u8> {
    match v {
        Value::U8(x) => vec![x],
        Value::I8(x) => vec![x as u8],
        Value::U16(x) => x.to_le_bytes().to_vec(),
        Value::I16(x) => x.to_le_bytes().to_vec(),
        Value::U32(x) => x.to_le_bytes().to_vec(),
        Value::I32(x) | Value::Enum(x) | Value::EnumDict(x) => x.to_le_bytes().to_vec(),
        Value::U64(x) => x.to_le_bytes().to_vec(),
        Value::I64(x) => x.to_le_bytes().to_vec(),
        Value::F32(x) => x.to_le_bytes().to_vec(),
        Value::F64(x) => x.to_le_bytes().to_vec(),
        Value::Str(s) => s.to_vec(),
        Value::Array(a) => a.bytes.to_vec(),
    }
}
