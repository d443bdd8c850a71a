//! Datagram and Xtc headers (spec §2–§4): zero-copy views with unaligned little-endian reads.

use crate::error::FormatError;

pub const DGRAM_HEADER_SIZE: usize = 24;
pub const XTC_HEADER_SIZE: usize = 12;
/// Seconds from the Unix epoch to the EPICS epoch (1990-01-01 UTC).
pub const EPICS_EPOCH_UNIX_SECONDS: u64 = 631_152_000;
/// Parents nested deeper than this are treated as corrupt (real files nest 1–2 levels).
pub const MAX_NESTING: usize = 32;

#[inline(always)]
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
#[inline(always)]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
#[inline(always)]
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The service field of `env` (spec §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TransitionId {
    ClearReadout = 0,
    Reset = 1,
    Configure = 2,
    Unconfigure = 3,
    BeginRun = 4,
    EndRun = 5,
    BeginStep = 6,
    EndStep = 7,
    Enable = 8,
    Disable = 9,
    SlowUpdate = 10,
    Unused11 = 11,
    L1Accept = 12,
    Invalid13 = 13,
    Invalid14 = 14,
    Invalid15 = 15,
}

impl TransitionId {
    pub const ALL: [TransitionId; 16] = [
        Self::ClearReadout, Self::Reset, Self::Configure, Self::Unconfigure, Self::BeginRun,
        Self::EndRun, Self::BeginStep, Self::EndStep, Self::Enable, Self::Disable,
        Self::SlowUpdate, Self::Unused11, Self::L1Accept, Self::Invalid13, Self::Invalid14,
        Self::Invalid15,
    ];

    #[inline]
    pub fn from_env(env: u32) -> Self {
        Self::ALL[((env >> 24) & 0xf) as usize]
    }

    /// The reference reader's names.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClearReadout => "ClearReadout",
            Self::Reset => "Reset",
            Self::Configure => "Configure",
            Self::Unconfigure => "Unconfigure",
            Self::BeginRun => "BeginRun",
            Self::EndRun => "EndRun",
            Self::BeginStep => "BeginStep",
            Self::EndStep => "EndStep",
            Self::Enable => "Enable",
            Self::Disable => "Disable",
            Self::SlowUpdate => "SlowUpdate",
            Self::Unused11 => "Unused_11",
            Self::L1Accept => "L1Accept",
            _ => "-Invalid-",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().take(13).find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// L1Accept, and the in-memory-only end-of-batch marker, are events; 0–10 are transitions.
    #[inline]
    pub fn is_event(self) -> bool {
        matches!(self, Self::L1Accept | Self::Unused11)
    }
}

/// Xtc TypeId values (spec §3).
pub mod type_id {
    pub const PARENT: u16 = 0;
    pub const SHAPES_DATA: u16 = 1;
    pub const SHAPES: u16 = 2;
    pub const DATA: u16 = 3;
    pub const NAMES: u16 = 4;
}

/// Damage bit positions (spec §3).
pub mod damage {
    pub const TRUNCATED: u16 = 1 << 0;
    pub const OUT_OF_ORDER: u16 = 1 << 1;
    pub const OUT_OF_SYNCH: u16 = 1 << 2;
    pub const CORRUPTED: u16 = 1 << 3;
    pub const DROPPED_CONTRIBUTION: u16 = 1 << 4;
    pub const MISSING_DATA: u16 = 1 << 5;
    pub const TIMED_OUT: u16 = 1 << 6;
    pub const USER_DEFINED: u16 = 1 << 12;
}

/// The 12-byte Xtc header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XtcHeader {
    pub src: u32,
    pub damage: u16,
    pub contains: u16,
    pub extent: u32,
}

impl XtcHeader {
    /// `b` must hold at least 12 bytes.
    #[inline(always)]
    pub fn parse(b: &[u8]) -> Self {
        XtcHeader { src: u32_at(b, 0), damage: u16_at(b, 4), contains: u16_at(b, 6), extent: u32_at(b, 8) }
    }
    #[inline(always)]
    pub fn type_id(&self) -> u16 {
        self.contains & 0xfff
    }
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.src.to_le_bytes());
        out.extend_from_slice(&self.damage.to_le_bytes());
        out.extend_from_slice(&self.contains.to_le_bytes());
        out.extend_from_slice(&self.extent.to_le_bytes());
    }
}

/// Full size of the datagram whose 24-byte header starts `header` (spec §1: `12 + extent`).
#[inline]
pub fn dgram_size(header: &[u8]) -> Result<usize, FormatError> {
    if header.len() < DGRAM_HEADER_SIZE {
        return Err(FormatError::new(0, format!("datagram header needs 24 bytes, {} left", header.len())));
    }
    let extent = u32_at(header, 20);
    if (extent as usize) < XTC_HEADER_SIZE {
        return Err(FormatError::new(20, format!("root Xtc extent {extent} is smaller than its 12-byte header")));
    }
    Ok(XTC_HEADER_SIZE + extent as usize)
}

/// One whole datagram (header and payload), borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Dgram<'a> {
    bytes: &'a [u8],
}

impl<'a> Dgram<'a> {
    /// Checks that `bytes` holds exactly one datagram.
    pub fn new(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let size = dgram_size(bytes)?;
        if size != bytes.len() {
            return Err(FormatError::new(
                20,
                format!("datagram size {size} (12 + extent) does not match the {} bytes given", bytes.len()),
            ));
        }
        Ok(Dgram { bytes })
    }
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    #[inline]
    pub fn nsec(&self) -> u32 {
        u32_at(self.bytes, 0)
    }
    #[inline]
    pub fn sec(&self) -> u32 {
        u32_at(self.bytes, 4)
    }
    /// psana's timestamp, `sec << 32 | nsec`.
    #[inline]
    pub fn timestamp(&self) -> u64 {
        u64_at(self.bytes, 0)
    }
    #[inline]
    pub fn env(&self) -> u32 {
        u32_at(self.bytes, 8)
    }
    #[inline]
    pub fn service(&self) -> TransitionId {
        TransitionId::from_env(self.env())
    }
    #[inline]
    pub fn xtc(&self) -> XtcHeader {
        XtcHeader::parse(&self.bytes[12..])
    }
    /// The root Xtc including its header.
    #[inline]
    pub fn root(&self) -> &'a [u8] {
        &self.bytes[12..]
    }
    pub fn payload_size(&self) -> usize {
        self.bytes.len() - DGRAM_HEADER_SIZE
    }
}

/// Unix time in nanoseconds of a psana timestamp.
pub fn unix_nanos(timestamp: u64) -> i64 {
    let sec = timestamp >> 32;
    let nsec = timestamp & 0xffff_ffff;
    ((sec + EPICS_EPOCH_UNIX_SECONDS) * 1_000_000_000 + nsec) as i64
}

/// A Names or ShapesData Xtc found while walking the tree.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    pub header: XtcHeader,
    /// The whole Xtc, header included.
    pub bytes: &'a [u8],
    /// Byte offset of the Xtc within the datagram.
    pub at: usize,
}

/// Walks the Xtc tree of `dgram` depth-first, calling `visit` for every Names and ShapesData
/// (spec §4). Unknown types are skipped; Corrupted Parents are not descended into. Extents
/// that are too small or run past their parent are errors, never panics.
pub fn walk<'a, E>(
    dgram: &'a [u8],
    visit: &mut impl FnMut(Node<'a>) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<FormatError>,
{
    if dgram.len() < DGRAM_HEADER_SIZE {
        return Err(FormatError::new(0, "datagram shorter than its 24-byte header").into());
    }
    let root = XtcHeader::parse(&dgram[12..]);
    let end = 12 + root.extent as usize;
    if (root.extent as usize) < XTC_HEADER_SIZE || end > dgram.len() {
        return Err(FormatError::new(20, format!("root Xtc extent {} does not fit the datagram", root.extent)).into());
    }
    walk_children(dgram, root, 12, end, 0, visit)
}

fn walk_children<'a, E>(
    dgram: &'a [u8],
    parent: XtcHeader,
    parent_at: usize,
    parent_end: usize,
    depth: usize,
    visit: &mut impl FnMut(Node<'a>) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<FormatError>,
{
    if parent.damage & damage::CORRUPTED != 0 {
        return Ok(());
    }
    if depth > MAX_NESTING {
        return Err(FormatError::new(parent_at, format!("Xtc Parents nested deeper than {MAX_NESTING}")).into());
    }
    let mut pos = parent_at + XTC_HEADER_SIZE;
    while pos < parent_end {
        if parent_end - pos < XTC_HEADER_SIZE {
            return Err(FormatError::new(pos, format!("{} trailing bytes in a Parent, too few for an Xtc header", parent_end - pos)).into());
        }
        let child = XtcHeader::parse(&dgram[pos..]);
        let extent = child.extent as usize;
        if extent < XTC_HEADER_SIZE {
            return Err(FormatError::new(pos + 8, format!("Xtc extent {extent} is smaller than its 12-byte header")).into());
        }
        if extent > parent_end - pos {
            return Err(FormatError::new(
                pos + 8,
                format!("Xtc extent {extent} runs {} bytes past its parent", extent - (parent_end - pos)),
            )
            .into());
        }
        match child.type_id() {
            type_id::PARENT => walk_children(dgram, child, pos, pos + extent, depth + 1, visit)?,
            type_id::NAMES | type_id::SHAPES_DATA => {
                visit(Node { header: child, bytes: &dgram[pos..pos + extent], at: pos })?
            }
            _ => {}
        }
        pos += extent;
    }
    Ok(())
}
