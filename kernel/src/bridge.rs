//! The tables bridge: Rust cells run in evcxr's runtime process, so they reach the kernel's
//! tables through a Unix socket served here. The `beamtime` prelude crate (`prelude/`) is the
//! client; the socket's path travels in [`SOCKET_ENV`], set on the runtime process only.
//!
//! One request per connection: `OP <payload length>\n<payload>`, answered by
//! `OK <length>\n<bytes>` or `ERR <length>\n<message>`. Names are NUL-terminated in payloads.
//!
//! | op | payload | reply |
//! |---|---|---|
//! | `LIST` | — | table names, one per line |
//! | `GET` | table | Arrow IPC stream (as `%save x.arrows` writes it) |
//! | `COLUMN` | table `\0` column | the column cast to `f64`, little-endian, nulls as NaN |
//! | `PUT` | table `\0` Arrow IPC stream | the new table's one-line summary |
//! | `PUTCOLS` | table `\0` `u32` n, n × (`u32` len, name, `u64` len, `f64`s) | summary |
//!
//! The bridge works on its own copy of the catalog (cheap: columns are shared), which the cell
//! thread refreshes before each Rust cell and takes back after it ([`TableServer::lend`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use polars::prelude::*;

use crate::lock::lock;

/// The environment variable naming the socket, inherited by evcxr's runtime process.
pub const SOCKET_ENV: &str = "BEAMTIME_TABLES_SOCKET";

/// Payloads above this are refused (a corrupt header must not allocate the machine away).
const MAX_PAYLOAD: usize = 64 << 30;

pub struct TableServer {
    dir: PathBuf,
    path: PathBuf,
    catalog: Arc<Mutex<query::Catalog>>,
}

impl TableServer {
    /// Binds a socket in a fresh private (0700) directory and serves it on a thread.
    pub fn start() -> io::Result<TableServer> {
        let dir = std::env::temp_dir().join(format!("beamtime-kernel-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8]));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("tables.sock");
        let listener = UnixListener::bind(&path)?;
        let catalog = Arc::new(Mutex::new(query::Catalog::new()));
        let shared = catalog.clone();
        std::thread::Builder::new().name("beamtime-tables".into()).spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let catalog = shared.clone();
                let _ = std::thread::Builder::new().name("beamtime-tables-conn".into()).spawn(move || {
                    if let Err(e) = serve_connection(stream, &catalog) {
                        eprintln!("beamtime kernel: table request failed: {e}");
                    }
                });
            }
        })?;
        Ok(TableServer { dir, path, catalog })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel's private directory (`beamtime-kernel-<pid>-<random>` in the temp dir).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` (a Rust cell) with the bridge serving `catalog`; tables the cell stored come back.
    pub fn lend<T>(&self, catalog: &mut query::Catalog, f: impl FnOnce() -> T) -> T {
        *lock(&self.catalog) = catalog.clone();
        let out = f();
        *catalog = lock(&self.catalog).clone();
        out
    }
}

impl Drop for TableServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The file in a kernel's directory naming evcxr's build directory, so that a later kernel can
/// remove it if this one is killed before it cleans up.
pub const BUILD_DIR_NOTE: &str = "evcxr-build-dir";

/// Removes what killed kernels left in the temp dir: their `beamtime-kernel-<pid>-…` directory
/// and the evcxr build directory it names (hundreds of MB with polars). Only for pids that no
/// longer exist.
pub fn sweep_dead_kernels() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("beamtime-kernel-")).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if !gone {
            continue;
        }
        let dir = e.path();
        if let Ok(build) = std::fs::read_to_string(dir.join(BUILD_DIR_NOTE)) {
            let build = PathBuf::from(build.trim());
            // Only something that looks like evcxr's build directory, in the temp dir.
            if build.starts_with(&tmp) && build.join("src/lib.rs").exists() && build.join("Cargo.toml").exists() {
                let _ = std::fs::remove_dir_all(&build);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn serve_connection(stream: UnixStream, catalog: &Mutex<query::Catalog>) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (op, len) = match (words.next(), words.next().and_then(|n| n.parse::<usize>().ok())) {
        (Some(op), Some(len)) if len <= MAX_PAYLOAD => (op.to_string(), len),
        _ => return reply(stream, Err(format!("bad request header {line:?}"))),
    };
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload)?;
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(&op, &payload, catalog)))
        .unwrap_or_else(|_| Err(format!("the kernel failed on a {op} request (internal error)")));
    reply(stream, answer)
}

fn reply(mut stream: UnixStream, answer: Result<Vec<u8>, String>) -> io::Result<()> {
    let (status, body) = match answer {
        Ok(b) => ("OK", b),
        Err(m) => ("ERR", m.into_bytes()),
    };
    stream.write_all(format!("{status} {}\n", body.len()).as_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

/// Answers one request against the catalog.
pub fn handle(op: &str, payload: &[u8], catalog: &Mutex<query::Catalog>) -> Result<Vec<u8>, String> {
    match op {
        "LIST" => Ok(lock(catalog).names().join("\n").into_bytes()),
        "GET" => {
            let name = utf8(payload)?;
            let mut df = table(catalog, name)?;
            contract::codec::encode_portable(&mut df).map_err(|e| format!("encoding table {name}: {e}"))
        }
        "COLUMN" => {
            let (name, col) = split_name(payload)?;
            let col = utf8(col)?;
            let df = table(catalog, name)?;
            let Ok(c) = df.column(col) else {
                let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
                return Err(format!("table {name} has no column '{col}' (columns: {})", names.join(", ")));
            };
            let s = c.as_materialized_series().cast(&DataType::Float64).map_err(|e| format!("column {col} of {name} is not numeric: {e}"))?;
            let ca = s.f64().map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(ca.len() * 8);
            for v in ca.iter() {
                out.extend_from_slice(&v.unwrap_or(f64::NAN).to_le_bytes());
            }
            Ok(out)
        }
        "PUT" => {
            let (name, ipc) = split_name(payload)?;
            let df = contract::codec::decode(ipc).map_err(|e| format!("table {name}: not an Arrow IPC stream: {e}"))?;
            store(catalog, name, df)
        }
        "PUTCOLS" => {
            let (name, body) = split_name(payload)?;
            let df = decode_columns(body).map_err(|e| format!("table {name}: {e}"))?;
            store(catalog, name, df)
        }
        other => Err(format!("unknown table request {other:?} (this kernel knows LIST, GET, COLUMN, PUT, PUTCOLS)")),
    }
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|_| "a table or column name is not UTF-8".to_string())
}

fn split_name(payload: &[u8]) -> Result<(&str, &[u8]), String> {
    let at = payload.iter().position(|&b| b == 0).ok_or("malformed request: no table name")?;
    Ok((utf8(&payload[..at])?, &payload[at + 1..]))
}

fn table(catalog: &Mutex<query::Catalog>, name: &str) -> Result<DataFrame, String> {
    let cat = lock(catalog);
    cat.get(name).cloned().ok_or_else(|| {
        let names = cat.names();
        let list = if names.is_empty() { "there are no tables yet".to_string() } else { format!("tables: {}", names.join(", ")) };
        format!("no table named '{name}' ({list})")
    })
}

fn store(catalog: &Mutex<query::Catalog>, name: &str, df: DataFrame) -> Result<Vec<u8>, String> {
    let info = lock(catalog).insert(name, df).map_err(|e| e.to_string())?;
    Ok(info.to_string().into_bytes())
}

fn decode_columns(mut b: &[u8]) -> Result<DataFrame, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err("truncated column data".into());
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    let n = u32::from_le_bytes(take(&mut b, 4)?.try_into().unwrap()) as usize;
    let mut cols = Vec::with_capacity(n);
    let mut height = None;
    for _ in 0..n {
        let len = u32::from_le_bytes(take(&mut b, 4)?.try_into().unwrap()) as usize;
        let name = utf8(take(&mut b, len)?)?.to_string();
        let rows = u64::from_le_bytes(take(&mut b, 8)?.try_into().unwrap()) as usize;
        let bytes = take(&mut b, rows.checked_mul(8).ok_or("column too long")?)?;
        let values: Vec<f64> = bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        match height {
            Some(h) if h != rows => return Err(format!("column {name} has {rows} values, the first column {h}")),
            _ => height = Some(rows),
        }
        cols.push(Column::new(name.into(), values));
    }
    DataFrame::new(height.unwrap_or(0), cols).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &Path, op: &str, payload: &[u8]) -> (String, Vec<u8>) {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(format!("{op} {}\n", payload.len()).as_bytes()).unwrap();
        s.write_all(payload).unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut w = line.split_whitespace();
        let status = w.next().unwrap().to_string();
        let mut body = vec![0; w.next().unwrap().parse().unwrap()];
        r.read_exact(&mut body).unwrap();
        (status, body)
    }

    #[test]
    fn round_trip_over_the_socket() {
        let server = TableServer::start().unwrap();
        let mut cat = query::Catalog::new();
        cat.insert("ev", df!("x" => [1i64, 2, 3], "name" => ["a", "b", "c"]).unwrap()).unwrap();
        let path = server.path().to_path_buf();
        server.lend(&mut cat, || {
            assert_eq!(request(&path, "LIST", b""), ("OK".into(), b"ev".to_vec()));
            let (s, ipc) = request(&path, "GET", b"ev");
            assert_eq!(s, "OK");
            let df = contract::codec::decode(&ipc).unwrap();
            assert_eq!(df.shape(), (3, 2));
            let (s, col) = request(&path, "COLUMN", b"ev\0x");
            assert_eq!(s, "OK");
            assert_eq!(col.len(), 24);
            assert_eq!(f64::from_le_bytes(col[16..24].try_into().unwrap()), 3.0);
            let mut put = b"copy\0".to_vec();
            put.extend_from_slice(&ipc);
            let (s, info) = request(&path, "PUT", &put);
            assert_eq!(s, "OK", "{}", String::from_utf8_lossy(&info));
            let mut cols = b"y\0".to_vec();
            cols.extend_from_slice(&1u32.to_le_bytes());
            cols.extend_from_slice(&1u32.to_le_bytes());
            cols.extend_from_slice(b"v");
            cols.extend_from_slice(&2u64.to_le_bytes());
            cols.extend_from_slice(&0.5f64.to_le_bytes());
            cols.extend_from_slice(&1.5f64.to_le_bytes());
            assert_eq!(request(&path, "PUTCOLS", &cols).0, "OK");
            let (s, msg) = request(&path, "GET", b"nope");
            assert_eq!(s, "ERR");
            assert!(String::from_utf8_lossy(&msg).contains("tables: ev, copy, y"));
            let (s, msg) = request(&path, "COLUMN", b"ev\0zz");
            assert_eq!(s, "ERR");
            assert!(String::from_utf8_lossy(&msg).contains("columns: x, name"));
        });
        assert_eq!(cat.names(), vec!["ev", "copy", "y"]);
        assert_eq!(cat.get("y").unwrap().height(), 2);
        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists());
    }
}
