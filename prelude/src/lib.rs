//! `beamtime`: what Rust cells of the beamtime kernel use to reach the kernel's tables.
//!
//! Rust cells run in evcxr's runtime process, not in the kernel, so tables travel through a
//! Unix socket the kernel serves; its path is in `BEAMTIME_TABLES_SOCKET`, which the runtime
//! process inherits. Data crosses as Arrow IPC streams (or, for [`column`], raw `f64`s).
//!
//! ```ignore
//! // Light (no dependencies, compiles in about a second):
//! let names = beamtime::tables()?;
//! let energy: Vec<f64> = beamtime::column("events", "ebeam.energy")?;
//! beamtime::put_columns("scaled", &[("e2", &energy.iter().map(|e| 2.0 * e).collect::<Vec<_>>())])?;
//! let ipc: Vec<u8> = beamtime::table_ipc("events")?; // for arrow-rs, or anything that reads Arrow
//!
//! // With polars (`:dep beamtime = { features = ["polars"] }`; compiles polars once, minutes):
//! let df = beamtime::table("events")?;
//! beamtime::put("summary", &df.head(Some(10)))?;
//! ```
//!
//! Every call opens its own connection: calls are independent and may come from any thread.
//! The wire format (one request per connection):
//! `OP <payload length>\n<payload>` → `OK <length>\n<bytes>` or `ERR <length>\n<message>`.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

#[cfg(feature = "polars")]
pub use polars;

/// The environment variable holding the kernel's table socket.
pub const SOCKET_ENV: &str = "BEAMTIME_TABLES_SOCKET";

/// A failed table request: the kernel's message (unknown table, bad name…) or a transport error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(format!("beamtime kernel connection: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One request to the kernel; the reply's bytes.
pub fn request(op: &str, payload: &[u8]) -> Result<Vec<u8>> {
    let path = std::env::var_os(SOCKET_ENV).ok_or_else(|| {
        Error(format!("{SOCKET_ENV} is not set: the beamtime crate only works in Rust cells of a beamtime kernel"))
    })?;
    let mut stream = UnixStream::connect(&path)
        .map_err(|e| Error(format!("cannot reach the beamtime kernel at {}: {e}", std::path::Path::new(&path).display())))?;
    stream.write_all(format!("{op} {}\n", payload.len()).as_bytes())?;
    stream.write_all(payload)?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (status, len) = match (words.next(), words.next().and_then(|n| n.parse::<usize>().ok())) {
        (Some(s), Some(n)) => (s.to_string(), n),
        _ => return Err(Error(format!("the beamtime kernel answered {line:?}, not a table reply"))),
    };
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    match status.as_str() {
        "OK" => Ok(body),
        _ => Err(Error(String::from_utf8_lossy(&body).into_owned())),
    }
}

fn with_name(name: &str, rest: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(name.len() + 1 + rest.len());
    p.extend_from_slice(name.as_bytes());
    p.push(0);
    p.extend_from_slice(rest);
    p
}

/// The kernel's table names, in the order `%tables` lists them.
pub fn tables() -> Result<Vec<String>> {
    let body = request("LIST", b"")?;
    Ok(String::from_utf8_lossy(&body).lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// A kernel table as Arrow IPC stream bytes (schema + record batches; strings as `LargeUtf8`).
pub fn table_ipc(name: &str) -> Result<Vec<u8>> {
    request("GET", name.as_bytes())
}

/// One column of a kernel table as `f64` (numbers and booleans are cast; nulls become NaN).
pub fn column(table: &str, column: &str) -> Result<Vec<f64>> {
    let body = request("COLUMN", &with_name(table, column.as_bytes()))?;
    Ok(body.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect())
}

/// Stores Arrow IPC stream bytes as kernel table `name` (replacing one of that name); returns
/// the kernel's one-line summary of it.
pub fn put_ipc(name: &str, ipc: &[u8]) -> Result<String> {
    let body = request("PUT", &with_name(name, ipc))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Stores `f64` columns (all of the same length) as kernel table `name`.
pub fn put_columns(name: &str, columns: &[(&str, &[f64])]) -> Result<String> {
    let mut p = Vec::new();
    p.extend_from_slice(&(columns.len() as u32).to_le_bytes());
    for (col, values) in columns {
        p.extend_from_slice(&(col.len() as u32).to_le_bytes());
        p.extend_from_slice(col.as_bytes());
        p.extend_from_slice(&(values.len() as u64).to_le_bytes());
        for v in values.iter() {
            p.extend_from_slice(&v.to_le_bytes());
        }
    }
    let body = request("PUTCOLS", &with_name(name, &p))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A kernel table as a polars DataFrame.
#[cfg(feature = "polars")]
pub fn table(name: &str) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let bytes = table_ipc(name)?;
    IpcStreamReader::new(std::io::Cursor::new(bytes)).finish().map_err(|e| Error(format!("decoding table {name}: {e}")))
}

/// Stores a polars DataFrame as kernel table `name` (replacing one of that name).
#[cfg(feature = "polars")]
pub fn put(name: &str, df: &polars::prelude::DataFrame) -> Result<String> {
    use polars::prelude::*;
    let mut buf = Vec::new();
    let mut df = df.clone();
    IpcStreamWriter::new(&mut buf).finish(&mut df).map_err(|e| Error(format!("encoding table {name}: {e}")))?;
    put_ipc(name, &buf)
}

/// A line typed by the notebook user (an `input_request` on the Jupyter stdin channel); empty
/// when the frontend does not allow input.
pub fn input(prompt: &str) -> String {
    read_input("EVCXR_INPUT_REQUEST", prompt)
}

/// Like [`input`], with the frontend hiding what is typed.
pub fn password(prompt: &str) -> String {
    read_input("EVCXR_INPUT_REQUEST_PASSWORD", prompt)
}

fn read_input(cmd: &str, prompt: &str) -> String {
    // evcxr's input protocol (as in the `evcxr_input` crate): a request line on stdout, the
    // answer on stdin. evcxr splits the line on ':', so the prompt must not contain one.
    println!("{cmd}:{}", prompt.replace([':', '\n'], " "));
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    line.trim_end_matches(['\n', '\r']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_kernel_the_error_says_why() {
        // SAFETY: tests in this crate do not read the environment concurrently.
        unsafe { std::env::remove_var(SOCKET_ENV) };
        let e = tables().unwrap_err();
        assert!(e.0.contains(SOCKET_ENV), "{e}");
    }

    #[test]
    fn payloads_carry_the_name_first() {
        assert_eq!(with_name("t", b"c"), b"t\0c");
    }
}
