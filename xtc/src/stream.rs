//! Per-stream decoding state (spec §10): the NamesLookup of the latest Configure.

use std::sync::Arc;

use crate::decode::ShapesData;
use crate::dgram::{type_id, walk, Dgram, TransitionId};
use crate::error::FormatError;
use crate::names::{Names, NamesLookup};

/// What one stream knows: the schema of its latest Configure.
#[derive(Clone, Debug, Default)]
pub struct StreamState {
    lookup: Arc<NamesLookup>,
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
        self.configures += 1;
        Ok(true)
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
