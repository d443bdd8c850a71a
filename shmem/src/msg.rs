//! The 16-byte `XtcMonitorMsg` (spec §2) and the object names (spec §1).

/// Transition buffers, fixed by the protocol.
pub const NTR: usize = 18;
/// Bytes of every message on the queues and the TCP channel.
pub const MSG_SIZE: usize = 16;
/// The first TCP port a server tries.
pub const FIRST_PORT: u16 = 32768;
/// Holder masks are 32-bit.
pub const MAX_QUEUES: usize = 32;
/// `numberOfBuffers` has 8 bits.
pub const MAX_BUFFERS: usize = 255;
/// `sizeOfBuffers` has 28 bits.
pub const MAX_BUFFER_SIZE: usize = (1 << 28) - 1;

pub fn segment_name(tag: &str) -> String {
    format!("/PdsMonitorSharedMemory_{tag}")
}
pub fn discovery_name(tag: &str) -> String {
    format!("/PdsFromMonitorDiscovery_{tag}")
}
/// Client queue `i` (0 … nQ−1), or the server's return queue when `i == nQ`.
pub fn event_queue_name(tag: &str, i: usize) -> String {
    format!("/PdsToMonitorEvQueue_{tag}_{i}")
}
pub fn request_queue_name(tag: &str) -> String {
    format!("/PdsRequestQueue_{tag}")
}
pub fn shuffle_queue_name(tag: &str) -> String {
    format!("/PdsShuffleQueue_{tag}")
}

/// One message. The packed word and the size are kept as their fields; `encode` packs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Msg {
    pub buffer_index: i32,
    /// nEv + 18 (8 bits).
    pub number_of_buffers: u8,
    /// nQ (8 bits).
    pub number_of_queues: u8,
    /// 0 = serial, nQ = distributed (8 bits).
    pub return_queue: u8,
    /// Bytes per buffer (28 bits).
    pub size_of_buffers: u32,
}

impl Msg {
    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        b[0..4].copy_from_slice(&self.buffer_index.to_le_bytes());
        let packed = self.number_of_buffers as u32 | (self.number_of_queues as u32) << 8 | (self.return_queue as u32) << 16;
        b[4..8].copy_from_slice(&packed.to_le_bytes());
        b[8..12].copy_from_slice(&(self.size_of_buffers & MAX_BUFFER_SIZE as u32).to_le_bytes());
        b
    }

    /// Decodes 16 bytes; the bits the protocol keeps zero are ignored (a reader must not
    /// depend on them).
    pub fn decode(b: &[u8; MSG_SIZE]) -> Msg {
        let packed = u32::from_le_bytes(b[4..8].try_into().unwrap());
        Msg {
            buffer_index: i32::from_le_bytes(b[0..4].try_into().unwrap()),
            number_of_buffers: packed as u8,
            number_of_queues: (packed >> 8) as u8,
            return_queue: (packed >> 16) as u8,
            size_of_buffers: u32::from_le_bytes(b[8..12].try_into().unwrap()) & MAX_BUFFER_SIZE as u32,
        }
    }

    /// The same template with another buffer index.
    pub fn with_index(&self, index: i32) -> Msg {
        Msg { buffer_index: index, ..*self }
    }

    pub fn distributed(&self) -> bool {
        self.return_queue != 0
    }

    /// A discovery message: the port, every other field 0.
    pub fn discovery(port: u16) -> Msg {
        Msg { buffer_index: port as i32, ..Msg::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_fields_as_the_spec_says() {
        let m = Msg { buffer_index: 7, number_of_buffers: 22, number_of_queues: 4, return_queue: 4, size_of_buffers: 0x80000 };
        let b = m.encode();
        assert_eq!(&b[0..4], &7i32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 22 | 4 << 8 | 4 << 16);
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 0x80000);
        assert_eq!(&b[12..16], &[0; 4]);
        assert_eq!(Msg::decode(&b), m);
        assert!(m.distributed());
        assert_eq!(Msg::discovery(32770).encode()[..4], 32770i32.to_le_bytes());
        assert_eq!(&Msg::discovery(32770).encode()[4..], &[0; 12]);
        assert_eq!(event_queue_name("psana", 2), "/PdsToMonitorEvQueue_psana_2");
        assert_eq!(segment_name("psana"), "/PdsMonitorSharedMemory_psana");
        assert_eq!(discovery_name("psana"), "/PdsFromMonitorDiscovery_psana");
    }
}
