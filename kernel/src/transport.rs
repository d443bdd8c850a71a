//! The Jupyter wire protocol over ZeroMQ: framing, HMAC-SHA256 signing and the sockets.
//!
//! Everything that touches `zeromq` or the wire format lives here (the crates churn; this is
//! the part to replace). Message contents stay `serde_json::Value` so that replies say exactly
//! what `shared/spec/jupyter.md` asks for; headers and connection files use `jupyter-protocol`.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use jupyter_protocol::{ConnectionInfo, Header};
use serde_json::{json, Value};
use sha2::Sha256;
use zeromq::ZmqMessage;

pub const PROTOCOL_VERSION: &str = "5.4";
const DELIMITER: &[u8] = b"<IDS|MSG>";

/// One Jupyter message as it travels: routing ids, the four JSON parts, binary buffers.
#[derive(Clone, Debug)]
pub struct Message {
    pub identities: Vec<Bytes>,
    pub header: Header,
    pub parent_header: Option<Header>,
    pub metadata: Value,
    pub content: Value,
    pub buffers: Vec<Bytes>,
}

impl Message {
    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }

    /// A new message of `msg_type` in `session`, parented to `parent` (and routed back to its
    /// sender on ROUTER sockets).
    pub fn reply_to(parent: &Message, session: &str, msg_type: &str, content: Value) -> Message {
        let mut m = Message::new(session, msg_type, content);
        m.parent_header = Some(parent.header.clone());
        m.identities = parent.identities.clone();
        m
    }

    pub fn new(session: &str, msg_type: &str, content: Value) -> Message {
        Message {
            identities: Vec::new(),
            header: Header {
                msg_id: uuid::Uuid::new_v4().to_string(),
                username: "beamtime".into(),
                session: session.into(),
                date: chrono::Utc::now(),
                msg_type: msg_type.into(),
                version: PROTOCOL_VERSION.into(),
            },
            parent_header: None,
            metadata: json!({}),
            content,
            buffers: Vec::new(),
        }
    }
}

/// A header as JSON, its date with microseconds (`2024-05-01T12:00:48.190129Z`): chrono
/// would write nanoseconds, which jupyter_client cannot parse and leaves as a string.
fn header_json(h: &Header) -> Vec<u8> {
    let mut v = serde_json::to_value(h).expect("header serializes");
    v["date"] = Value::String(h.date.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
    serde_json::to_vec(&v).expect("json")
}

/// Signs and verifies with the connection file's key (empty key: no signing).
#[derive(Clone)]
pub struct Signer {
    key: Option<Hmac<Sha256>>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message without the <IDS|MSG> delimiter")]
    NoDelimiter,
    #[error("message with {0} frames after the delimiter, at least 5 expected")]
    TooFewFrames(usize),
    #[error("bad signature")]
    BadSignature,
    #[error("invalid {part}: {err}")]
    Json { part: &'static str, err: serde_json::Error },
}

impl Signer {
    pub fn new(info: &ConnectionInfo) -> Self {
        let key = (!info.key.is_empty()).then(|| Hmac::<Sha256>::new_from_slice(info.key.as_bytes()).expect("any key length"));
        Signer { key }
    }

    fn mac(&self, parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
        let mut mac = self.key.clone()?;
        for p in parts {
            mac.update(p);
        }
        Some(mac)
    }

    /// Lowercase hex HMAC of the four JSON frames (buffers are not signed).
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        self.mac(parts).map(|m| hex::encode(m.finalize().into_bytes())).unwrap_or_default()
    }

    /// Constant-time check of a received signature.
    pub fn verify(&self, signature: &[u8], parts: &[&[u8]]) -> bool {
        match self.mac(parts) {
            None => true,
            Some(mac) => hex::decode(signature).is_ok_and(|sig| mac.verify_slice(&sig).is_ok()),
        }
    }

    /// Frames a message for sending.
    pub fn encode(&self, m: &Message) -> ZmqMessage {
        let header = header_json(&m.header);
        let parent = match &m.parent_header {
            Some(h) => header_json(h),
            None => b"{}".to_vec(),
        };
        let metadata = serde_json::to_vec(&m.metadata).expect("json");
        let content = serde_json::to_vec(&m.content).expect("json");
        let sig = self.sign(&[&header, &parent, &metadata, &content]);
        let mut frames: Vec<Bytes> = m.identities.clone();
        frames.push(Bytes::from_static(DELIMITER));
        frames.push(Bytes::from(sig));
        for f in [header, parent, metadata, content] {
            frames.push(Bytes::from(f));
        }
        frames.extend(m.buffers.iter().cloned());
        ZmqMessage::try_from(frames).expect("at least one frame")
    }

    /// Parses and verifies a received message.
    pub fn decode(&self, z: ZmqMessage) -> Result<Message, WireError> {
        let frames = z.into_vec();
        let delim = frames.iter().position(|f| f.as_ref() == DELIMITER).ok_or(WireError::NoDelimiter)?;
        let rest = &frames[delim + 1..];
        if rest.len() < 5 {
            return Err(WireError::TooFewFrames(rest.len()));
        }
        if !self.verify(&rest[0], &[&rest[1], &rest[2], &rest[3], &rest[4]]) {
            return Err(WireError::BadSignature);
        }
        let header: Header = serde_json::from_slice(&rest[1]).map_err(|err| WireError::Json { part: "header", err })?;
        let parent: Value = serde_json::from_slice(&rest[2]).map_err(|err| WireError::Json { part: "parent_header", err })?;
        let parent_header = serde_json::from_value::<Header>(parent).ok();
        let metadata = serde_json::from_slice(&rest[3]).map_err(|err| WireError::Json { part: "metadata", err })?;
        let content = serde_json::from_slice(&rest[4]).map_err(|err| WireError::Json { part: "content", err })?;
        Ok(Message {
            identities: frames[..delim].to_vec(),
            header,
            parent_header,
            metadata,
            content,
            buffers: rest[5..].to_vec(),
        })
    }
}

/// Reads a connection file.
pub fn read_connection_file(path: &std::path::Path) -> Result<ConnectionInfo, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let info: ConnectionInfo = serde_json::from_str(&text).map_err(|e| format!("{}: not a Jupyter connection file: {e}", path.display()))?;
    if !info.key.is_empty() && info.signature_scheme != "hmac-sha256" {
        return Err(format!("{}: signature scheme '{}' is not supported (hmac-sha256 is)", path.display(), info.signature_scheme));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: &str) -> ConnectionInfo {
        serde_json::from_value(json!({"transport": "tcp", "ip": "127.0.0.1", "shell_port": 1, "iopub_port": 2,
            "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": key, "signature_scheme": "hmac-sha256"}))
        .unwrap()
    }

    #[test]
    fn hmac_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = Signer::new(&info("Jefe"));
        assert_eq!(
            s.sign(&[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn round_trip_with_buffers_signs_only_json_frames() {
        let s = Signer::new(&info("a0436f6c-1916-498b-8eb9-e81ab9368e84"));
        let mut m = Message::new("sess", "comm_msg", json!({"comm_id": "c", "data": {}}));
        m.identities = vec![Bytes::from_static(b"id1")];
        m.buffers = vec![Bytes::from_static(b"\x00\x01arrow")];
        let z = s.encode(&m);
        let frames = z.clone().into_vec();
        assert_eq!(frames[0].as_ref(), b"id1");
        assert_eq!(frames[1].as_ref(), DELIMITER);
        assert_eq!(frames[2].len(), 64);
        let sig = s.sign(&[&frames[3], &frames[4], &frames[5], &frames[6]]);
        assert_eq!(frames[2].as_ref(), sig.as_bytes(), "buffers are not part of the signature");
        let back = s.decode(z).unwrap();
        assert_eq!(back.header.msg_id, m.header.msg_id);
        assert_eq!(back.buffers, m.buffers);
        assert_eq!(back.content, m.content);
    }

    #[test]
    fn tampered_or_unsigned_messages_are_rejected() {
        let s = Signer::new(&info("secret"));
        let m = Message::new("sess", "execute_request", json!({"code": "1"}));
        let mut frames = s.encode(&m).into_vec();
        frames[5] = Bytes::from_static(b"{\"x\": 1}");
        assert!(matches!(s.decode(ZmqMessage::try_from(frames).unwrap()), Err(WireError::BadSignature)));
        let unsigned = Signer::new(&info("")).encode(&m);
        assert!(matches!(s.decode(unsigned), Err(WireError::BadSignature)));
    }
}
