//! Event-function libraries on a rank: loaded from the bytes the driver shipped
//! ([`contract::Command::Library`]) and registered, so that queries find their functions.

use std::sync::Arc;

/// Loads and registers a shipped library (once per process: the collector and an in-process
/// worker share one).
pub fn load(hash: &str, hex_bytes: &str) -> Result<(), String> {
    if functions::registry::libraries().iter().any(|l| l.hash == hash) {
        return Ok(());
    }
    let bytes = hex::decode(hex_bytes).map_err(|e| format!("event-function library {hash}: bad bytes: {e}"))?;
    // Node-local scratch: the file is mapped, then removed.
    let dir = std::env::temp_dir().join("beamtime-functions");
    let lib = functions::Library::from_bytes(&bytes, hash, &dir).map_err(|e| format!("on {}: {e}", crate::worker::hostname()))?;
    functions::registry::install(Arc::new(lib));
    Ok(())
}
