//! The Names schema (spec §5–§7): NameInfo, Name entries, DataType, and the per-stream lookup.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dgram::{u32_at, Node, XTC_HEADER_SIZE};
use crate::error::FormatError;

pub const NAME_INFO_SIZE: usize = 1036;
pub const NAME_SIZE: usize = 524;
pub const NAMES_HEADER_SIZE: usize = XTC_HEADER_SIZE + NAME_INFO_SIZE;
pub const MAX_RANK: u32 = 5;
const STR_LEN: usize = 256;

/// Element types of a Name (spec §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DataType {
    U8 = 0,
    U16 = 1,
    U32 = 2,
    U64 = 3,
    I8 = 4,
    I16 = 5,
    I32 = 6,
    I64 = 7,
    F32 = 8,
    F64 = 9,
    CharStr = 10,
    EnumVal = 11,
    EnumDict = 12,
}

impl DataType {
    pub fn from_u32(v: u32) -> Option<Self> {
        use DataType::*;
        Some(match v {
            0 => U8,
            1 => U16,
            2 => U32,
            3 => U64,
            4 => I8,
            5 => I16,
            6 => I32,
            7 => I64,
            8 => F32,
            9 => F64,
            10 => CharStr,
            11 => EnumVal,
            12 => EnumDict,
            _ => return None,
        })
    }
    #[inline(always)]
    pub fn size(self) -> usize {
        const SIZES: [usize; 13] = [1, 2, 4, 8, 1, 2, 4, 8, 4, 8, 1, 4, 4];
        SIZES[self as usize]
    }
    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }
}

/// One field of a Names.
#[derive(Clone, Debug, PartialEq)]
pub struct Name {
    /// The stored field name, e.g. `expert.fex_gate` or `enumFex1:MyEnumName`.
    pub name: String,
    pub dtype: DataType,
    pub rank: u32,
    pub alg_name: String,
    pub alg_version: u32,
}

impl Name {
    /// For `var:EnumType` names, `(var, EnumType)`.
    pub fn enum_parts(&self) -> Option<(&str, &str)> {
        self.name.split_once(':')
    }
}

/// A decoded Names Xtc: who the detector is and which fields it has.
#[derive(Clone, Debug, PartialEq)]
pub struct Names {
    /// The `src` of the Names Xtc (spec §5), the key ShapesData refer to.
    pub names_id: u32,
    pub det_type: String,
    pub det_name: String,
    pub det_id: String,
    pub alg_name: String,
    /// `major << 16 | minor << 8 | micro`.
    pub alg_version: u32,
    pub segment: u32,
    pub num_arrays: u32,
    pub fields: Vec<Name>,
}

impl Names {
    /// Parses one Names Xtc (`node.bytes` includes the 12-byte header).
    pub fn parse(node: &Node<'_>) -> Result<Self, FormatError> {
        let b = node.bytes;
        let at = node.at;
        if b.len() < NAMES_HEADER_SIZE {
            return Err(FormatError::new(at + 8, format!("Names Xtc of {} bytes is smaller than its 1048-byte header", b.len())));
        }
        let body = b.len() - NAMES_HEADER_SIZE;
        if body % NAME_SIZE != 0 {
            return Err(FormatError::new(
                at + 8,
                format!("Names Xtc of {} bytes is not 1048 + n × 524 (remainder {})", b.len(), body % NAME_SIZE),
            ));
        }
        let n = body / NAME_SIZE;
        let mut fields = Vec::with_capacity(n);
        for i in 0..n {
            let o = NAMES_HEADER_SIZE + i * NAME_SIZE;
            let name = cstr(&b[o + 260..o + 260 + STR_LEN]);
            let type_raw = u32_at(b, o + 516);
            let dtype = DataType::from_u32(type_raw).ok_or_else(|| {
                FormatError::new(at + o + 516, format!("field '{name}' has unknown DataType {type_raw}"))
            })?;
            let rank = u32_at(b, o + 520);
            if rank >= MAX_RANK {
                return Err(FormatError::new(at + o + 520, format!("field '{name}' has rank {rank}, at most 4 is possible")));
            }
            if dtype == DataType::CharStr && rank != 1 {
                return Err(FormatError::new(at + o + 520, format!("CHARSTR field '{name}' has rank {rank}, must be 1")));
            }
            fields.push(Name {
                name,
                dtype,
                rank,
                alg_name: cstr(&b[o..o + STR_LEN]),
                alg_version: u32_at(b, o + 256),
            });
        }
        Ok(Names {
            names_id: node.header.src,
            num_arrays: u32_at(b, 12),
            det_type: cstr(&b[16..16 + STR_LEN]),
            det_name: cstr(&b[272..272 + STR_LEN]),
            det_id: cstr(&b[528..528 + STR_LEN]),
            alg_name: cstr(&b[784..784 + STR_LEN]),
            alg_version: u32_at(b, 1040),
            segment: u32_at(b, 1044),
            fields,
        })
    }

    /// How many fields need a Shapes entry.
    pub fn array_count(&self) -> usize {
        self.fields.iter().filter(|f| f.rank > 0).count()
    }

    /// psana's Detector-class key, e.g. `hsd_fex_4_5_6`.
    pub fn detector_key(&self) -> String {
        let v = self.alg_version;
        format!("{}_{}_{}_{}_{}", self.det_type, self.alg_name, v >> 16, (v >> 8) & 0xff, v & 0xff)
    }
}

/// The bytes before the first NUL of a fixed-size C string, as (lossy) UTF-8.
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A hasher for small integer keys (NamesIds): one multiply instead of SipHash, which showed
/// up at 6 % of decode time. The keys come from files, but a lookup table per Configure with
/// a few hundred entries cannot be made slow enough to matter.
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (v as u64 ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub type IdMap<V> = HashMap<u32, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Per-stream map NamesId → Names, replaced at every Configure (spec §5).
#[derive(Clone, Debug, Default)]
pub struct NamesLookup {
    map: IdMap<Arc<Names>>,
}

impl NamesLookup {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a Names; a NamesId that appears twice within one Configure is an error.
    pub fn insert(&mut self, names: Names, at: usize) -> Result<Arc<Names>, FormatError> {
        let id = names.names_id;
        if self.map.contains_key(&id) {
            return Err(FormatError::new(at, format!("NamesId 0x{id:x} appears twice in one Configure")));
        }
        let names = Arc::new(names);
        self.map.insert(id, names.clone());
        Ok(names)
    }
    #[inline]
    pub fn get(&self, names_id: u32) -> Option<&Arc<Names>> {
        self.map.get(&names_id)
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// All Names, ordered by NamesId for a stable column order.
    pub fn sorted(&self) -> Vec<Arc<Names>> {
        let mut v: Vec<_> = self.map.values().cloned().collect();
        v.sort_by_key(|n| n.names_id);
        v
    }
    /// The first Names with this detName (standard detectors are found by name, spec §12).
    pub fn by_det_name(&self, det_name: &str) -> Option<&Arc<Names>> {
        self.map.values().filter(|n| n.det_name == det_name).min_by_key(|n| n.names_id)
    }
}
