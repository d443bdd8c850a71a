//! Event building as the DAQ's monitoring event builder does it (spec §3): one datagram per
//! pulse whose root Xtc is a Parent with `src = Src(mebId, Level::Event)`, damage = OR of the
//! contributors, and each contributor's root Xtc copied whole as its payload.

use xtc::dgram::{type_id, XtcHeader, DGRAM_HEADER_SIZE, XTC_HEADER_SIZE};
use xtc::Dgram;

use crate::error::{Error, Result};

/// `Level::Event` in bits 28–31 of a `src`.
pub const LEVEL_EVENT: u32 = 1 << 28;

/// Builds one event-built datagram from the per-stream datagrams of one pulse (Configure and
/// every other transition too), with MEB id 0.
pub fn event_build(parts: &[&[u8]]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    event_build_into(&mut out, 0, parts)?;
    Ok(out)
}

/// Appends the event-built datagram of `parts` to `out`; returns its size. The header's time
/// and `env` are the first contributor's; every contributor must carry the same timestamp
/// and service.
pub fn event_build_into(out: &mut Vec<u8>, meb_id: u32, parts: &[&[u8]]) -> Result<usize> {
    let Some(first) = parts.first() else {
        return Err(Error::Datagram("event building needs at least one contribution".into()));
    };
    let mut damage = 0u16;
    let mut payload = 0usize;
    let mut dgrams = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let d = Dgram::new(p).map_err(|e| Error::Datagram(format!("contribution {i}: {e}")))?;
        dgrams.push(d);
    }
    let head = dgrams[0];
    for (i, d) in dgrams.iter().enumerate().skip(1) {
        if d.timestamp() != head.timestamp() || d.service() != head.service() {
            return Err(Error::Datagram(format!(
                "contribution {i} is a {} at 0x{:016x}, contribution 0 a {} at 0x{:016x}: one pulse per built datagram",
                d.service().name(),
                d.timestamp(),
                head.service().name(),
                head.timestamp()
            )));
        }
    }
    for d in &dgrams {
        damage |= d.xtc().damage;
        payload += d.root().len();
    }
    let extent = XTC_HEADER_SIZE + payload;
    if extent > u32::MAX as usize {
        return Err(Error::Datagram(format!("built datagram of {extent} bytes exceeds the 32-bit extent")));
    }
    let start = out.len();
    out.reserve(DGRAM_HEADER_SIZE + payload);
    out.extend_from_slice(&first[..12]);
    XtcHeader { src: LEVEL_EVENT | (meb_id & 0x0fff_ffff), damage, contains: type_id::PARENT, extent: extent as u32 }.write(out);
    for d in &dgrams {
        out.extend_from_slice(d.root());
    }
    Ok(out.len() - start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtc::writer::DgramWriter;
    use xtc::TransitionId;

    fn part(ts: u64, service: TransitionId, damage: u16, fill: usize) -> Vec<u8> {
        let mut b = Vec::new();
        let mut w = DgramWriter::begin(&mut b, service, ts, 3);
        w.damage(damage);
        w.finish();
        // An opaque child Xtc (type Data) so the roots differ in size.
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&type_id::DATA.to_le_bytes());
        b.extend_from_slice(&((12 + fill) as u32).to_le_bytes());
        b.resize(b.len() + fill, 0xab);
        let ext = (b.len() - 12) as u32;
        b[20..24].copy_from_slice(&ext.to_le_bytes());
        b
    }

    #[test]
    fn root_parent_holds_every_contributor() {
        let a = part(0x1_0000_0005, TransitionId::L1Accept, 1 << 4, 3);
        let b = part(0x1_0000_0005, TransitionId::L1Accept, 1 << 1, 10);
        let built = event_build(&[&a, &b]).unwrap();
        let d = Dgram::new(&built).unwrap();
        assert_eq!(d.timestamp(), 0x1_0000_0005);
        assert_eq!(d.env(), u32::from_le_bytes(a[8..12].try_into().unwrap()));
        let x = d.xtc();
        assert_eq!((x.src, x.damage, x.type_id()), (LEVEL_EVENT, (1 << 4) | (1 << 1), type_id::PARENT));
        assert_eq!(built.len(), 24 + (a.len() - 12) + (b.len() - 12));
        assert_eq!(&built[24..24 + a.len() - 12], &a[12..]);
        assert_eq!(&built[24 + a.len() - 12..], &b[12..]);
    }

    #[test]
    fn mismatched_pulses_are_refused() {
        let a = part(5, TransitionId::L1Accept, 0, 0);
        let b = part(6, TransitionId::L1Accept, 0, 0);
        let e = event_build(&[&a, &b]).unwrap_err().to_string();
        assert!(e.contains("contribution 1") && e.contains("one pulse"), "{e}");
        assert!(event_build(&[]).is_err());
        let e = event_build(&[&a[..30]]).unwrap_err().to_string();
        assert!(e.contains("contribution 0"), "{e}");
    }
}
