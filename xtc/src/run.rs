//! A run: its stream files, smd event building across streams by timestamp, bigdata fetching,
//! chunk switching and live following (spec §13–§14).

use std::path::{Path, PathBuf};

use crate::decode::{ShapesData, Value};
use crate::dgram::{type_id, u64_at, walk, Dgram, TransitionId};
use crate::names::DataType;
use crate::error::{Error, FormatError, Result};
use crate::file::{final_name, ChunkReader, DgramReader, Follow};
use crate::source::{RunSource, Source};
use crate::stream::StreamState;

/// The files of one stream of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamFiles {
    /// The stream number (`sNNN`), the DRP node id.
    pub stream: u32,
    /// The smd file, when the run has small data.
    pub smd: Option<PathBuf>,
    /// The first bigdata chunk (`c000`); it may not exist yet in live mode.
    pub bigdata: PathBuf,
}

/// Parses `<exp>-r<RRRR>-s<SSS>-c<CCC>` out of a file name; returns (stream, chunk).
fn parse_stream_name(name: &str, prefix: &str, suffix: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix(prefix)?;
    let rest = rest.strip_suffix(".inprogress").unwrap_or(rest).strip_suffix(suffix)?;
    let (s, c) = rest.split_once("-c")?;
    if s.is_empty() || c.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || !c.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((s.parse().ok()?, c.parse().ok()?))
}

fn list_streams(dir: &Path, prefix: &str, suffix: &str) -> Vec<(u32, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((stream, 0)) = parse_stream_name(name, prefix, suffix) {
            let path = entry.path();
            // Prefer the final name when both exist (rename in progress).
            match found.iter_mut().find(|(s, _)| *s == stream) {
                Some(slot) if slot.1.to_string_lossy().ends_with(".inprogress") => slot.1 = path,
                Some(_) => {}
                None => found.push((stream, path)),
            }
        }
    }
    found.sort_by_key(|(s, _)| *s);
    found
}

/// Finds the streams of a run: `smalldata/<exp>-rNNNN-sSSS-c000.smd.xtc2[.inprogress]`, or the
/// bigdata `c000` files when there is no small data. In live mode waits (within the follow
/// policy) for a list that stays the same over 3 polls, as psana does.
pub fn discover(src: &RunSource) -> Result<Vec<StreamFiles>> {
    let prefix = format!("{}-r{:04}-s", src.exp, src.run);
    let smd_dir = src.dir.join("smalldata");
    let scan = || -> Vec<StreamFiles> {
        let smd = list_streams(&smd_dir, &prefix, ".smd.xtc2");
        if !smd.is_empty() {
            return smd
                .into_iter()
                .map(|(stream, path)| {
                    let name = path.file_name().unwrap().to_string_lossy().replace(".smd.xtc2", ".xtc2");
                    let name = name.strip_suffix(".inprogress").unwrap_or(&name).to_string();
                    StreamFiles { stream, bigdata: src.dir.join(name), smd: Some(path) }
                })
                .collect();
        }
        list_streams(&src.dir, &prefix, ".xtc2")
            .into_iter()
            .map(|(stream, path)| StreamFiles { stream, smd: None, bigdata: path })
            .collect()
    };
    let Some(follow) = src.live else {
        let found = scan();
        if found.is_empty() {
            return Err(Error::Usage(format!(
                "no files for run {} of {} in {} (looked for smalldata/{prefix}SSS-c000.smd.xtc2 and {prefix}SSS-c000.xtc2)",
                src.run,
                src.exp,
                src.dir.display()
            )));
        }
        return Ok(found);
    };
    const STABLE_POLLS: u32 = 3;
    let (mut last, mut same, mut tries) = (Vec::new(), 0u32, 0u32);
    loop {
        let found = scan();
        if !found.is_empty() && found == last {
            same += 1;
            if same + 1 >= STABLE_POLLS {
                return Ok(found);
            }
        } else {
            same = 0;
        }
        last = found;
        if tries >= follow.max_retries {
            return Err(Error::Timeout {
                path: src.dir.clone(),
                msg: format!("no stable file list for run {} of {} after {:?}", src.run, src.exp, follow.patience()),
            });
        }
        tries += 1;
        std::thread::sleep(follow.poll);
    }
}

/// One built event or transition: the same timestamp in one or more streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    pub timestamp: u64,
    pub service: TransitionId,
    pub env: u32,
}

/// Information about one stream of an open run.
#[derive(Clone, Debug)]
pub struct StreamInfo {
    pub stream: u32,
    pub path: PathBuf,
    /// Small data whose L1s point into bigdata chunks.
    pub smd: bool,
    /// The stream's first bigdata chunk.
    pub bigdata: PathBuf,
}

/// One stream of a reader fed from memory (see [`RunReader::open_feeds`]).
#[derive(Clone, Debug)]
pub struct FeedStream {
    pub stream: u32,
    /// Where the fed datagrams come from (named in errors).
    pub label: PathBuf,
    pub smd: bool,
    pub bigdata: PathBuf,
    /// Waiting for bigdata that is still being written (live runs).
    pub follow: Option<Follow>,
}

struct StreamIn {
    info: StreamInfo,
    reader: DgramReader,
    /// Reading smd records whose L1s live in bigdata chunks.
    smd: bool,
    state: StreamState,
    bigdata_dir: PathBuf,
    chunk_path: PathBuf,
    chunk: Option<ChunkReader>,
    /// Direct reading: the chunk to switch to after the current datagram.
    pending_chunk: Option<PathBuf>,
    done: bool,
    /// This step's member: the head datagram, and the bigdata record for smd L1s.
    member: bool,
    fetch: Option<(u64, usize)>,
    head_ts: u64,
    head_env: u32,
    head_offset: u64,
    /// Where an smd L1's `intOffset`/`intDgramSize` sit: (NamesId, byte offsets in Data),
    /// found once per Configure so the per-event path reads two u64s.
    smdinfo: Option<(u32, usize, usize)>,
    /// Switch bigdata chunks on Enable/chunkinfo (runs); explicit files are read as stored.
    follow_chunks: bool,
    /// Fetch the bigdata of smd L1s (off for a reader that only distributes small data).
    fetch_bigdata: bool,
    /// How to wait for bigdata that is not written yet.
    chunk_follow: Option<Follow>,
    /// A failed chunk switch, reported with the stream's next datagram.
    pending_error: Option<Error>,
}

/// Reads a run, or explicit files, as psana does: event building across streams by timestamp,
/// L1 bigdata fetched through smd records, chunk switching, live following.
pub struct RunReader {
    streams: Vec<StreamIn>,
    /// Build events by timestamp (runs); `files=` reads one file after the other instead.
    build: bool,
    follow: Option<Follow>,
    stop_after_endrun: bool,
    finished: bool,
    count: u64,
}

impl RunReader {
    /// Opens any file source (`Source::Run` or `Source::Files`).
    pub fn open(source: &Source) -> Result<Self> {
        match source {
            Source::Run(run) => Self::open_run(run),
            Source::Files(files) => Self::open_files(files),
            Source::Shmem { .. } => Err(Error::Usage("a shared-memory source is read by the shmem client, not the file reader".into())),
            Source::Sim(_) => Err(Error::Usage("sim:// sources are started by `beamtime sim`; read the run it writes with exp=…:run=…:dir=…".into())),
        }
    }

    pub fn open_run(run: &RunSource) -> Result<Self> {
        let files = discover(run)?;
        let mut streams = Vec::with_capacity(files.len());
        for f in files {
            let (path, smd) = match &f.smd {
                Some(p) => (p.clone(), true),
                None => (f.bigdata.clone(), false),
            };
            streams.push(StreamIn::open(f.stream, &path, smd, f.bigdata.clone(), run.live)?);
        }
        Ok(RunReader { streams, build: true, follow: run.live, stop_after_endrun: run.live.is_some(), finished: false, count: 0 })
    }

    /// A reader of datagrams fed from memory, stream by stream, in whole built steps (the
    /// job's workers: the reader rank sends them transitions and their share of the L1s).
    /// `next` returns `None` when everything fed so far is consumed; `feed` more and go on.
    pub fn open_feeds(feeds: &[FeedStream]) -> Self {
        let streams = feeds
            .iter()
            .map(|f| {
                let mut s = StreamIn::with_reader(f.stream, DgramReader::from_memory(&f.label), f.smd, f.bigdata.clone());
                s.chunk_follow = f.follow;
                s
            })
            .collect();
        RunReader { streams, build: true, follow: None, stop_after_endrun: false, finished: false, count: 0 }
    }

    /// Appends whole datagrams to stream `i` of a fed reader.
    pub fn feed(&mut self, i: usize, bytes: &[u8]) {
        self.release_members();
        let s = &mut self.streams[i];
        s.reader.append(bytes);
        s.done = false;
        self.finished = false;
    }

    /// Fetch (or not) the bigdata of stream `i`'s smd L1s from the next step on.
    pub fn set_fetch_bigdata(&mut self, i: usize, fetch: bool) {
        self.streams[i].fetch_bigdata = fetch;
    }

    /// Do not fetch the bigdata of smd L1s: `members` gives the smd records themselves.
    pub fn without_bigdata(mut self) -> Self {
        for s in &mut self.streams {
            s.fetch_bigdata = false;
        }
        self
    }

    /// Explicit files: read one after the other without event building (psana's `files=`).
    pub fn open_files(files: &[PathBuf]) -> Result<Self> {
        let mut streams = Vec::with_capacity(files.len());
        for (i, path) in files.iter().enumerate() {
            // An explicit file is shown as it is stored: smd records are not resolved.
            let mut s = StreamIn::open(i as u32, path, false, path.clone(), None)?;
            s.follow_chunks = false;
            streams.push(s);
        }
        Ok(RunReader { streams, build: false, follow: None, stop_after_endrun: false, finished: false, count: 0 })
    }

    pub fn follow(&self) -> Option<Follow> {
        self.follow
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    pub fn stream_info(&self, i: usize) -> &StreamInfo {
        &self.streams[i].info
    }

    /// The decoding state (Configure schema) of stream `i`.
    pub fn stream_state(&self, i: usize) -> &StreamState {
        &self.streams[i].state
    }

    /// Number of built steps returned so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Advances to the next event or transition; `None` at the end of the run.
    pub fn next(&mut self) -> Result<Option<Built>> {
        self.release_members();
        if self.finished {
            return Ok(None);
        }
        // The heads of every stream that still has data.
        if let Some(e) = self.streams.iter_mut().find_map(|s| s.pending_error.take()) {
            self.finished = true;
            return Err(e);
        }
        let mut t_min = u64::MAX;
        let mut first_active = None;
        for (i, s) in self.streams.iter_mut().enumerate() {
            if s.done {
                continue;
            }
            if !self.build && first_active.is_some() {
                break;
            }
            match s.reader.peek()? {
                Some((offset, dg)) => {
                    s.head_ts = dg.timestamp();
                    s.head_env = dg.env();
                    s.head_offset = offset;
                    if first_active.is_none() {
                        first_active = Some(i);
                    }
                    t_min = t_min.min(s.head_ts);
                }
                None => s.done = true,
            }
        }
        let Some(first) = first_active else {
            self.finished = true;
            return Ok(None);
        };
        let (service, env) = if self.build {
            let mut lead: Option<(usize, TransitionId)> = None;
            for i in 0..self.streams.len() {
                let s = &self.streams[i];
                if s.done || s.head_ts != t_min {
                    continue;
                }
                let service = TransitionId::from_env(s.head_env);
                if let Some((j, lead_service)) = lead {
                    if lead_service != service {
                        let p = self.streams[i].info.path.clone();
                        let offset = self.streams[i].head_offset;
                        let other = &self.streams[j].info.path;
                        return Err(Error::format_msg(
                            &p,
                            offset,
                            format!(
                                "{} has the same timestamp 0x{t_min:016x} as a {} in {}",
                                service.name(),
                                lead_service.name(),
                                other.display()
                            ),
                        ));
                    }
                } else {
                    lead = Some((i, service));
                }
                self.streams[i].member = true;
            }
            let (lead_i, service) = lead.unwrap();
            if !service.is_event() {
                let missing: Vec<String> = self
                    .streams
                    .iter()
                    .filter(|s| !s.done && !s.member)
                    .map(|s| format!("s{:03}", s.info.stream))
                    .collect();
                if !missing.is_empty() {
                    let s = &self.streams[lead_i];
                    return Err(Error::format_msg(
                        &s.info.path,
                        s.head_offset,
                        format!(
                            "TransitionId {} incomplete: timestamp 0x{t_min:016x} is missing from stream(s) {}",
                            service.name(),
                            missing.join(", ")
                        ),
                    ));
                }
            }
            (service, self.streams[lead_i].head_env)
        } else {
            let s = &mut self.streams[first];
            s.member = true;
            t_min = s.head_ts;
            (TransitionId::from_env(s.head_env), s.head_env)
        };
        for s in self.streams.iter_mut().filter(|s| s.member) {
            s.prepare_member(service)?;
        }
        if service == TransitionId::EndRun && self.stop_after_endrun {
            self.finished = true;
        }
        self.count += 1;
        Ok(Some(Built { timestamp: t_min, service, env }))
    }

    /// The datagrams of the current step: (stream index, datagram) for each member stream.
    /// L1s of smd runs come from bigdata; transitions come from the smd copy.
    pub fn members(&self) -> impl Iterator<Item = (usize, Dgram<'_>)> {
        self.streams.iter().enumerate().filter(|(_, s)| s.member).map(|(i, s)| (i, s.member_dgram()))
    }

    /// The file and offset of stream `i`'s current datagram (for error messages).
    pub fn member_location(&self, i: usize) -> (&Path, u64) {
        let s = &self.streams[i];
        match (s.fetch, &s.chunk) {
            (Some((off, _)), Some(c)) => (c.path(), off),
            _ => (&s.info.path, s.head_offset),
        }
    }

    /// Puts a datagram-level error of stream `i`'s current datagram in its file and offset.
    pub fn locate(&self, i: usize, e: FormatError) -> Error {
        let (path, offset) = self.member_location(i);
        Error::format(path, offset, e)
    }

    /// Streams whose files ended inside a datagram (offline): (path, offset).
    pub fn truncated_tails(&self) -> Vec<(PathBuf, u64)> {
        self.streams
            .iter()
            .filter_map(|s| s.reader.truncated_tail().map(|t| (s.info.path.clone(), t.offset)))
            .collect()
    }

    fn release_members(&mut self) {
        for s in self.streams.iter_mut().filter(|s| s.member) {
            s.reader.consume();
            s.member = false;
            s.fetch = None;
            if let Some(next) = s.pending_chunk.take() {
                // Direct reading: the Enable with chunkinfo was the old chunk's last datagram.
                if let Err(e) = s.switch_reader(&next, self.follow) {
                    s.pending_error = Some(e);
                }
            }
        }
    }
}

impl StreamIn {
    fn open(stream: u32, path: &Path, smd: bool, bigdata: PathBuf, follow: Option<Follow>) -> Result<Self> {
        let reader = open_waiting(path, follow)?.follow(follow);
        let mut s = StreamIn::with_reader(stream, reader, smd, bigdata);
        s.chunk_follow = follow;
        Ok(s)
    }

    fn with_reader(stream: u32, reader: DgramReader, smd: bool, bigdata: PathBuf) -> Self {
        let bigdata_dir = bigdata.parent().map(Path::to_path_buf).unwrap_or_default();
        StreamIn {
            info: StreamInfo { stream, path: reader.path().to_path_buf(), smd, bigdata: bigdata.clone() },
            reader,
            smd,
            state: StreamState::new(),
            bigdata_dir,
            chunk_path: bigdata,
            chunk: None,
            pending_chunk: None,
            done: false,
            member: false,
            fetch: None,
            head_ts: 0,
            head_env: 0,
            head_offset: 0,
            follow_chunks: true,
            fetch_bigdata: true,
            chunk_follow: None,
            smdinfo: None,
            pending_error: None,
        }
    }

    fn switch_reader(&mut self, next: &Path, follow: Option<Follow>) -> Result<()> {
        self.reader = open_waiting(next, follow)?.follow(follow);
        self.info.path = next.to_path_buf();
        self.done = false;
        Ok(())
    }

    fn head(&self) -> Dgram<'_> {
        self.reader.head().expect("member stream has a head datagram")
    }

    fn member_dgram(&self) -> Dgram<'_> {
        match (self.fetch, &self.chunk) {
            (Some((off, size)), Some(c)) => c.get(off, size),
            _ => self.head(),
        }
    }

    /// Decodes what the reader itself needs from the member datagram (Configure schema,
    /// chunkinfo, smdinfo) and fetches the bigdata of smd L1s.
    fn prepare_member(&mut self, service: TransitionId) -> Result<()> {
        let path = self.info.path.clone();
        let offset = self.head_offset;
        let dg = self.reader.head().expect("peeked");
        let fail = |e: FormatError| Error::format(&path, offset, e);
        match service {
            TransitionId::Configure => {
                self.state.observe(&dg).map_err(fail)?;
                self.smdinfo = smdinfo_layout(&self.state);
            }
            TransitionId::Enable => {
                let mut filename = None;
                self.state
                    .for_each_shapes_data(&dg, |names, sd| {
                        if names.det_name == "chunkinfo" {
                            sd.for_each_field(names, |_, name, v| {
                                if let ("filename", Value::Str(s)) = (name.name.as_str(), v) {
                                    filename = Some(String::from_utf8_lossy(s).into_owned());
                                }
                            })?;
                        }
                        Ok(())
                    })
                    .map_err(fail)?;
                if let Some(name) = filename.filter(|_| self.follow_chunks) {
                    if name.contains('/') || name.is_empty() {
                        return Err(Error::format_msg(&path, offset, format!("chunkinfo filename '{name}' is not a bare file name")));
                    }
                    let next = self.bigdata_dir.join(&name);
                    if self.smd {
                        self.chunk_path = next;
                        self.chunk = None;
                    } else {
                        self.pending_chunk = Some(next);
                    }
                }
            }
            s if s.is_event() && self.smd && self.fetch_bigdata => {
                let mut off = None;
                let mut size = None;
                if let Some((id, off_at, size_at)) = self.smdinfo {
                    walk(dg.bytes(), &mut |node| {
                        if node.header.type_id() == type_id::SHAPES_DATA && node.header.src == id {
                            let sd = ShapesData::parse(&node)?;
                            if sd.data.len() < off_at.max(size_at) + 8 {
                                return Err(FormatError::new(sd.data_at, "smdinfo Data is shorter than its two u64 fields"));
                            }
                            off = Some(u64_at(sd.data, off_at));
                            size = Some(u64_at(sd.data, size_at));
                        }
                        Ok(())
                    })
                    .map_err(fail)?;
                }
                let (Some(off), Some(size)) = (off, size) else {
                    return Err(Error::format_msg(&path, offset, "smd L1Accept without smdinfo intOffset/intDgramSize"));
                };
                if self.chunk.is_none() {
                    let follow = self.chunk_follow;
                    let p = resolve_waiting(&self.chunk_path, follow)?;
                    self.chunk = Some(ChunkReader::open(&p, follow)?);
                }
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                self.chunk.as_mut().unwrap().ensure(off, size)?;
                self.fetch = Some((off, size));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Byte offsets of `intOffset` and `intDgramSize` in the smdinfo Data (fields before them are
/// scalars in every real file; arrays before them would make offsets vary, so then None).
fn smdinfo_layout(state: &StreamState) -> Option<(u32, usize, usize)> {
    let names = state.lookup().by_det_name("smdinfo")?;
    let (mut at, mut off, mut size) = (0usize, None, None);
    for f in &names.fields {
        if f.rank != 0 {
            return None;
        }
        match (f.name.as_str(), f.dtype) {
            ("intOffset", DataType::U64) => off = Some(at),
            ("intDgramSize", DataType::U64) => size = Some(at),
            _ => {}
        }
        at += f.dtype.size();
    }
    Some((names.names_id, off?, size?))
}

/// The path itself, or its `.inprogress` form, whichever exists (waiting in live mode).
fn resolve_waiting(path: &Path, follow: Option<Follow>) -> Result<PathBuf> {
    let inprogress = PathBuf::from(format!("{}.inprogress", path.display()));
    let mut tries = 0;
    loop {
        if path.exists() {
            return Ok(path.to_path_buf());
        }
        if inprogress.exists() {
            // It may be renamed between the check and the open; the reader tolerates that.
            return Ok(inprogress);
        }
        match follow {
            Some(f) if tries < f.max_retries => {
                tries += 1;
                std::thread::sleep(f.poll);
            }
            Some(f) => {
                return Err(Error::Timeout { path: path.to_path_buf(), msg: format!("file did not appear within {:?}", f.patience()) })
            }
            None => return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file (nor .inprogress)"))),
        }
    }
}

fn open_waiting(path: &Path, follow: Option<Follow>) -> Result<DgramReader> {
    let p = if path.exists() {
        path.to_path_buf()
    } else {
        let base = final_name(path).unwrap_or_else(|| path.to_path_buf());
        resolve_waiting(&base, follow)?
    };
    DgramReader::open(&p)
}
