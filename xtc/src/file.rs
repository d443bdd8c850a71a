//! Reading datagrams from files: sequentially (with live following of growing files, spec §14)
//! and at given offsets (bigdata fetched through smd records).

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dgram::{dgram_size, Dgram, DGRAM_HEADER_SIZE};
use crate::error::{Error, Result};

/// How to wait for data that is not there yet (psana: 1 s polls, 60 retries in live mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Follow {
    pub poll: Duration,
    pub max_retries: u32,
}

impl Default for Follow {
    fn default() -> Self {
        Follow { poll: Duration::from_secs(1), max_retries: 60 }
    }
}

impl Follow {
    pub fn patience(&self) -> Duration {
        self.poll * self.max_retries
    }
}

/// The name a `.inprogress` file gets when its writer is done.
pub fn final_name(path: &Path) -> Option<PathBuf> {
    let s = path.to_str()?;
    s.strip_suffix(".inprogress").map(PathBuf::from)
}

/// Initial read buffer; it grows to hold a datagram larger than this.
const READ_BLOCK: usize = 4 << 20;
/// Largest datagram accepted (psana's smd buffer is 256 MiB).
pub const MAX_DGRAM_SIZE: usize = 256 << 20;

/// A file's trailing bytes that do not form a whole datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TruncatedTail {
    pub offset: u64,
    pub have: usize,
    pub need: Option<usize>,
}

/// Sequential datagram reader over one file with a zero-copy `peek`/`consume` interface.
pub struct DgramReader {
    path: PathBuf,
    /// None: datagrams are fed from memory (`from_memory`/`append`).
    file: Option<File>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    follow: Option<Follow>,
    eof: bool,
    tail: Option<TruncatedTail>,
}

impl DgramReader {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut r = DgramReader::from_memory(path);
        r.file = Some(file);
        r.buf = vec![0; READ_BLOCK];
        Ok(r)
    }

    /// A reader of datagrams handed to it in memory (a worker fed by the job's reader rank).
    /// `label` names the origin in errors; offsets count the bytes fed so far.
    pub fn from_memory(label: &Path) -> Self {
        DgramReader {
            path: label.to_path_buf(),
            file: None,
            buf: Vec::new(),
            start: 0,
            end: 0,
            buf_offset: 0,
            follow: None,
            eof: false,
            tail: None,
        }
    }

    /// Appends whole datagrams to a memory reader.
    pub fn append(&mut self, bytes: &[u8]) {
        debug_assert!(self.file.is_none(), "append is for memory readers");
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.buf_offset += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
        self.eof = false;
        self.tail = None;
    }

    /// Wait for a growing file (live mode) instead of ending at its current size.
    pub fn follow(mut self, follow: Option<Follow>) -> Self {
        self.follow = follow;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File offset of the next datagram.
    pub fn offset(&self) -> u64 {
        self.buf_offset + self.start as u64
    }

    /// Set after the end when the file ended inside a datagram.
    pub fn truncated_tail(&self) -> Option<TruncatedTail> {
        self.tail
    }

    /// The next datagram and its file offset, without consuming it; `None` at the end.
    pub fn peek(&mut self) -> Result<Option<(u64, Dgram<'_>)>> {
        if !self.fill_head()? {
            return Ok(None);
        }
        let size = dgram_size(&self.buf[self.start..self.end]).unwrap();
        let offset = self.offset();
        let dg = Dgram::new(&self.buf[self.start..self.start + size]).unwrap();
        Ok(Some((offset, dg)))
    }

    /// The datagram returned by the last successful `peek`, if not yet consumed.
    pub fn head(&self) -> Option<Dgram<'_>> {
        let b = &self.buf[self.start..self.end];
        let size = dgram_size(b).ok()?;
        Dgram::new(b.get(..size)?).ok()
    }

    pub fn follow_policy(&self) -> Option<Follow> {
        self.follow
    }

    /// Drops the datagram returned by the last `peek`.
    pub fn consume(&mut self) {
        if self.end - self.start >= DGRAM_HEADER_SIZE {
            if let Ok(size) = dgram_size(&self.buf[self.start..self.end]) {
                if size <= self.end - self.start {
                    self.start += size;
                }
            }
        }
    }

    /// `peek` then `consume`.
    pub fn next_dgram(&mut self) -> Result<Option<(u64, Dgram<'_>)>> {
        if !self.fill_head()? {
            return Ok(None);
        }
        let size = dgram_size(&self.buf[self.start..self.end]).unwrap();
        let offset = self.offset();
        let at = self.start;
        self.start += size;
        Ok(Some((offset, Dgram::new(&self.buf[at..at + size]).unwrap())))
    }

    /// Makes sure a whole datagram starts at `buf[start]`. False at the end of the data.
    fn fill_head(&mut self) -> Result<bool> {
        let mut retries = 0u32;
        loop {
            let have = self.end - self.start;
            let need = if have >= DGRAM_HEADER_SIZE {
                match dgram_size(&self.buf[self.start..self.end]) {
                    Ok(size) if size > MAX_DGRAM_SIZE => {
                        return Err(Error::format_msg(
                            &self.path,
                            self.offset() + 20,
                            format!("datagram of {size} bytes is larger than the {MAX_DGRAM_SIZE}-byte limit (corrupt extent?)"),
                        ));
                    }
                    Ok(size) => size,
                    Err(e) => return Err(Error::format(&self.path, self.offset(), e)),
                }
            } else {
                DGRAM_HEADER_SIZE
            };
            if have >= need {
                return Ok(true);
            }
            if self.read_more(need)? > 0 {
                retries = 0;
                continue;
            }
            // No more bytes now.
            let Some(follow) = self.follow else {
                return self.at_end(have, need);
            };
            if self.writer_finished() {
                // One last read: the writer may have appended before renaming.
                if self.read_more(need)? > 0 {
                    continue;
                }
                return self.at_end(have, need);
            }
            if deleted(&self.path) {
                return Err(Error::format_msg(&self.path, self.offset(), "the file was deleted while it was being followed: no more data can come"));
            }
            if retries >= follow.max_retries {
                return Err(Error::Timeout {
                    path: self.path.clone(),
                    msg: format!(
                        "no new data at offset {} for {:?} ({} polls of {:?}); is the DAQ writer stalled?",
                        self.offset(),
                        follow.patience(),
                        follow.max_retries,
                        follow.poll
                    ),
                });
            }
            retries += 1;
            std::thread::sleep(follow.poll);
        }
    }

    fn at_end(&mut self, have: usize, need: usize) -> Result<bool> {
        self.eof = true;
        if have > 0 {
            self.tail = Some(TruncatedTail {
                offset: self.offset(),
                have,
                need: (have >= DGRAM_HEADER_SIZE).then_some(need),
            });
        }
        Ok(false)
    }

    /// A `.inprogress` file whose final name now exists is complete.
    fn writer_finished(&self) -> bool {
        final_name(&self.path).is_some_and(|f| f.exists())
    }

    /// Reads at least some bytes so that `need` bytes may become available from `start`.
    fn read_more(&mut self, need: usize) -> Result<usize> {
        let Some(file) = self.file.as_ref() else { return Ok(0) };
        if self.start > 0 && self.buf.len() - self.start < need.max(READ_BLOCK / 2) {
            self.buf.copy_within(self.start..self.end, 0);
            self.buf_offset += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < need {
            // Offline, a datagram that would run past the end of the file is a truncated tail:
            // do not allocate for a size the file cannot hold.
            let file_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            if self.follow.is_none() && self.buf_offset + (self.start + need) as u64 > file_len {
                return Ok(0);
            }
            self.buf.resize(need.next_power_of_two(), 0);
        }
        loop {
            match (&*file).read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.path, e)),
            }
        }
    }
}

/// Random-access reads of datagrams in one bigdata chunk, through a read-only memory map of
/// the file: no copy per event, and the kernel's read-ahead works as for sequential reads.
/// The map covers the file as it was when mapped; a datagram past its end (a live file that
/// grew) maps the file again. DAQ files only grow: a file truncated by someone else while it is
/// mapped would be a bus error, as for every mmap reader.
pub struct ChunkReader {
    path: PathBuf,
    file: File,
    map: Option<memmap2::Mmap>,
    follow: Option<Follow>,
}

impl ChunkReader {
    pub fn open(path: &Path, follow: Option<Follow>) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(ChunkReader { path: path.to_path_buf(), file, map: None, follow })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The datagram of `size` bytes at `offset`, checked to be one whole datagram.
    pub fn read(&mut self, offset: u64, size: usize) -> Result<Dgram<'_>> {
        self.ensure(offset, size)?;
        Ok(self.get(offset, size))
    }

    /// The datagram checked by the last `ensure(offset, size)`.
    pub fn get(&self, offset: u64, size: usize) -> Dgram<'_> {
        let map = self.map.as_ref().expect("ensure() mapped the file");
        Dgram::new(&map[offset as usize..offset as usize + size]).expect("ensure() checked this datagram")
    }

    fn mapped_len(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.len() as u64)
    }

    /// Makes the datagram of `size` bytes at `offset` available to `get`, checking that it is
    /// one whole datagram.
    pub fn ensure(&mut self, offset: u64, size: usize) -> Result<()> {
        if size > MAX_DGRAM_SIZE || size < DGRAM_HEADER_SIZE {
            return Err(Error::format_msg(&self.path, offset, format!("smd record gives an impossible datagram size {size}")));
        }
        let Some(end) = offset.checked_add(size as u64) else {
            return Err(Error::format_msg(&self.path, offset, format!("smd record gives an impossible offset {offset}")));
        };
        if end > self.mapped_len() {
            self.map_to(offset, size, end)?;
        }
        let map = self.map.as_ref().expect("mapped");
        Dgram::new(&map[offset as usize..end as usize]).map(|_| ()).map_err(|e| {
            Error::format_msg(
                &self.path,
                offset,
                format!("the smd record (offset {offset}, size {size}) does not point at a whole datagram: {}", e.msg),
            )
        })
    }

    /// Maps the file once it holds `end` bytes (waiting for a live file within the follow
    /// policy).
    fn map_to(&mut self, offset: u64, size: usize, end: u64) -> Result<()> {
        let mut retries = 0u32;
        loop {
            let len = self.file.metadata().map_err(|e| Error::io(&self.path, e))?.len();
            if len >= end {
                if usize::try_from(len).is_err() {
                    return Err(Error::format_msg(&self.path, offset, "file too large to map on this machine"));
                }
                // SAFETY: the map is read-only and DAQ files are append-only (see the type's
                // comment); the bytes are only ever read through bounds-checked slices.
                let map = unsafe { memmap2::Mmap::map(&self.file) }.map_err(|e| Error::io(&self.path, e))?;
                let _ = map.advise(memmap2::Advice::Sequential);
                self.map = Some(map);
                return Ok(());
            }
            let Some(follow) = self.follow else {
                return Err(Error::format_msg(
                    &self.path,
                    offset,
                    format!("datagram of {size} bytes at offset {offset} runs past the end of the file ({len} bytes)"),
                ));
            };
            if deleted(&self.path) {
                return Err(Error::format_msg(&self.path, offset, "the file was deleted while it was being followed: the datagram can never arrive"));
            }
            if retries >= follow.max_retries {
                return Err(Error::Timeout {
                    path: self.path.clone(),
                    msg: format!("datagram at offset {offset} ({size} bytes) did not arrive within {:?}", follow.patience()),
                });
            }
            retries += 1;
            std::thread::sleep(follow.poll);
        }
    }
}

/// A followed file that is gone under both its names (`.inprogress` and final): deleted while
/// read. What was read stays valid (the open handle keeps the bytes), but nothing more comes.
fn deleted(path: &Path) -> bool {
    !path.exists() && !final_name(path).is_some_and(|f| f.exists())
}
