//! The one DataFrame ⇄ Arrow IPC stream codec of the job and its drivers.

use std::io::Cursor;

use polars::prelude::*;

use crate::ContractError;

/// For polars on both ends (a worker's states to the collector): polars' own newest layout,
/// nothing converted.
pub fn encode(df: &mut DataFrame) -> Result<Vec<u8>, ContractError> {
    let mut buf = Vec::with_capacity(df.estimated_size() + 4096);
    IpcStreamWriter::new(&mut buf).finish(df).map_err(|e| ContractError::Ipc(e.to_string()))?;
    Ok(buf)
}

/// For any Arrow reader (result frames, widgets in the browser, Rust cells): the oldest layout,
/// which apache-arrow (JS) and arrow-rs read. The query crate's writer, not a second copy.
pub fn encode_portable(df: &mut DataFrame) -> Result<Vec<u8>, ContractError> {
    query::df_to_ipc_stream(df).map_err(|e| ContractError::Ipc(e.to_string()))
}

/// Reads what either encoder wrote (or any Arrow IPC stream).
pub fn decode(bytes: &[u8]) -> Result<DataFrame, ContractError> {
    IpcStreamReader::new(Cursor::new(bytes)).finish().map_err(|e| ContractError::Ipc(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_round_trip_and_garbage_is_an_error() {
        let df = df!("x" => [1i64, 2, 3], "s" => ["a", "b", "c"]).unwrap();
        assert!(decode(&encode(&mut df.clone()).unwrap()).unwrap().equals(&df));
        assert!(decode(&encode_portable(&mut df.clone()).unwrap()).unwrap().equals(&df));
        assert!(matches!(decode(b"not arrow"), Err(ContractError::Ipc(_))));
    }
}
