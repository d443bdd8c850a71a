//! `beamtime dump`: print what a file or run holds, as text, JSON lines, the reference reader's
//! format, or statistics.

use std::io::{self, Write};
use std::time::Instant;

use serde_json::{json, Map, Value as Json};
use crate::dump_calib::CalibPrinter;
use xtc::dgram::{type_id, walk, Node};
use xtc::{Dgram, Error, FormatError, Names, RunReader, Source, StreamState, TransitionId, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Readable text: one header line per datagram, one line per field.
    Text,
    /// One JSON object per datagram per line (the contract checked by xtc_dump_check.py).
    Json,
    /// The output of psana's reference reader `xtcreader -d`, byte for byte.
    Xtcreader,
}

pub struct Options {
    pub format: Format,
    pub max_array: usize,
    pub stats: bool,
    pub limit: Option<u64>,
    /// Also print each area detector's calibrated frame after each event (text format).
    pub calib: Option<detector::setup::CalibSource>,
}

/// Dumps `source` to stdout. Returns the first decoding error after printing all that came
/// before it, so nothing readable is lost.
pub fn run(source: &Source, mut opts: Options) -> Result<(), Error> {
    if opts.calib.is_some() && (opts.format != Format::Text || opts.stats) {
        return Err(Error::Usage("--calib-dir/--calib print calibrated frames in the text format only (not with --json, --format or --stats)".into()));
    }
    let run_hint = match source {
        Source::Run(r) => Some(r.run),
        _ => None,
    };
    let mut calib = opts.calib.take().map(|s| CalibPrinter::new(s, run_hint));
    let opts = &opts;
    if let Source::Shmem { tag, stop, .. } = source {
        return run_shmem(tag, *stop, opts, calib.as_mut()).map_err(Error::Usage);
    }
    let mut reader = RunReader::open(source)?;
    let show_stream = reader.stream_count() > 1 && matches!(source, Source::Run(_));
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut stats = Stats::default();
    let started = Instant::now();
    let mut seq = 0u64;
    while let Some(built) = reader.next()? {
        if opts.limit.is_some_and(|l| reader.count() > l) {
            break;
        }
        stats.built[built.service as usize] += 1;
        for (i, dg) in reader.members() {
            seq += 1;
            let state = reader.stream_state(i);
            let (_, offset) = reader.member_location(i);
            let result = if opts.stats {
                stats.add(state, &dg, built.service)
            } else if let Some(Err(e)) = calib.as_mut().map(|c| c.observe(state, &dg)) {
                Err(e)
            } else {
                let stream = show_stream.then(|| reader.stream_info(i).stream);
                let r = match opts.format {
                    Format::Json => write_json(&mut out, state, &dg, offset, stream, opts.max_array),
                    Format::Xtcreader => write_xtcreader(&mut out, state, &dg, seq),
                    Format::Text => write_text(&mut out, state, &dg, offset, stream, opts.max_array),
                };
                r.map_err(|e| match e {
                    DumpError::Format(f) => f,
                    DumpError::Io(io) => FormatError::new(0, format!("writing output: {io}")),
                })
            };
            if let Err(e) = result {
                let _ = out.flush();
                return Err(reader.locate(i, e));
            }
        }
        if let Some(c) = calib.as_mut().filter(|_| built.service == TransitionId::L1Accept) {
            let configs = |det: &str| -> Vec<xtc::ConfigRecord> {
                (0..reader.stream_count()).flat_map(|i| reader.stream_state(i).configs().iter().filter(|c| c.det_name == det).cloned().collect::<Vec<_>>()).collect()
            };
            let configures = (0..reader.stream_count()).map(|i| reader.stream_state(i).configures()).sum();
            c.print_event(&mut out, &configs, configures, opts.max_array).map_err(|e| Error::Usage(format!("writing output: {e}")))?;
        }
    }
    if opts.stats {
        stats.print(&mut out, started.elapsed().as_secs_f64()).ok();
    }
    out.flush().ok();
    for (path, offset) in reader.truncated_tails() {
        eprintln!("warning: {}: ends inside a datagram at offset {offset} (file truncated or still being written)", path.display());
    }
    Ok(())
}

/// Dumps what a shared-memory client receives (`shmem=<tag>.<index>[:stop=…]`; the index is
/// ignored: the server assigns the slot), then the counts of events received and dropped.
/// Waits for a server, reconnects when it goes away, stops at `stop` or on Ctrl-C.
fn run_shmem(tag: &str, stop: xtc::StopAt, opts: &Options, mut calib: Option<&mut CalibPrinter>) -> Result<(), String> {
    let interrupted = shmem::catch_interrupt();
    eprintln!("waiting for the shared-memory server '{tag}' (Ctrl-C to stop)");
    let copts = shmem::ClientOptions { stop, ..Default::default() };
    let mut client = shmem::Client::connect(tag, copts).map_err(|e| e.to_string())?;
    let announce = |c: &shmem::Client| {
        if let Some(m) = c.first_message() {
            eprintln!(
                "connected to '{tag}' as client {}: {} buffers of {} bytes, {} queue(s), {} mode",
                m.buffer_index,
                m.number_of_buffers,
                m.size_of_buffers,
                m.number_of_queues,
                if m.distributed() { "distributed" } else { "serial" }
            );
        }
    };
    announce(&client);
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut state = StreamState::new();
    let mut stats = Stats::default();
    let started = Instant::now();
    let (mut seq, mut offset, mut errors) = (0u64, 0u64, 0u64);
    let result = loop {
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) || opts.limit.is_some_and(|l| seq >= l) {
            break Ok(());
        }
        let got = match client.next(std::time::Duration::from_millis(100)) {
            Ok(g) => g,
            // A bad message or buffer: report it, go on (the client stays usable).
            Err(e @ shmem::Error::Protocol { .. }) => {
                errors += 1;
                let _ = out.flush();
                eprintln!("error: {e}");
                continue;
            }
            Err(e) => break Err(e.to_string()),
        };
        let d = match got {
            None => {
                let _ = out.flush();
                continue;
            }
            Some(shmem::Received::Stopped) => break Ok(()),
            Some(shmem::Received::ServerGone { reason }) => {
                let _ = out.flush();
                eprintln!("{reason}; waiting for a server to connect again");
                continue;
            }
            Some(shmem::Received::Reconnected { .. }) => {
                announce(&client);
                continue;
            }
            Some(shmem::Received::Dgram(d)) => d,
        };
        seq += 1;
        let dg = d.dgram();
        let r = state.observe(&dg).map_err(DumpError::from).and_then(|_| {
            if opts.stats {
                stats.built[dg.service() as usize] += 1;
                return stats.add(&state, &dg, dg.service()).map_err(DumpError::from);
            }
            match opts.format {
                Format::Json => write_json(&mut out, &state, &dg, offset, None, opts.max_array),
                Format::Xtcreader => write_xtcreader(&mut out, &state, &dg, seq),
                Format::Text => {
                    write_text(&mut out, &state, &dg, offset, None, opts.max_array)?;
                    if let Some(c) = calib.as_deref_mut() {
                        c.observe(&state, &dg)?;
                        if dg.service() == TransitionId::L1Accept {
                            let configs = |det: &str| -> Vec<xtc::ConfigRecord> { state.configs().iter().filter(|c| c.det_name == det).cloned().collect() };
                            c.print_event(&mut out, &configs, state.configures(), opts.max_array)?;
                        }
                    }
                    Ok(())
                }
            }
        });
        offset += dg.bytes().len() as u64;
        match r {
            Ok(()) => {}
            Err(DumpError::Format(e)) => {
                errors += 1;
                let _ = out.flush();
                eprintln!("error: shmem '{tag}': {} #{seq}: {e}", dg.service().name());
            }
            Err(DumpError::Io(e)) => break Err(format!("writing output: {e}")),
        }
    };
    if opts.stats {
        stats.print(&mut out, started.elapsed().as_secs_f64()).ok();
    }
    let c = client.stats();
    let counts = format!(
        "shmem '{tag}': {} events and {} transitions received ({} bytes); dropped: about {} events not seen (timestamp gaps), {} older than a Disable discarded; {} errors, {} reconnects",
        c.events,
        c.transitions,
        c.bytes,
        c.missed_estimate,
        c.stale_events,
        errors,
        c.connects.saturating_sub(1)
    );
    // JSON lines and the reference format stay parseable: the counts go to stderr there.
    if opts.format == Format::Text {
        let _ = writeln!(out, "{counts}");
    } else {
        eprintln!("{counts}");
    }
    out.flush().map_err(|e| format!("writing output: {e}"))?;
    result
}

enum DumpError {
    Format(FormatError),
    Io(io::Error),
}
impl From<FormatError> for DumpError {
    fn from(e: FormatError) -> Self {
        DumpError::Format(e)
    }
}
impl From<io::Error> for DumpError {
    fn from(e: io::Error) -> Self {
        DumpError::Io(e)
    }
}

/// Visits Names and ShapesData in stored order (Names only in Configures).
enum Item<'n, 'a> {
    Names(&'n Names),
    Data(&'n Names, xtc::ShapesData<'a>),
}

fn visit_in_order<'a>(
    state: &StreamState,
    dg: &Dgram<'a>,
    mut visit: impl FnMut(Item<'_, 'a>) -> Result<(), DumpError>,
) -> Result<(), DumpError> {
    walk(dg.bytes(), &mut |node: Node<'a>| {
        match node.header.type_id() {
            type_id::NAMES => visit(Item::Names(&Names::parse(&node)?))?,
            type_id::SHAPES_DATA => {
                let names = state.names_for(node.header.src, node.at)?;
                visit(Item::Data(names, xtc::ShapesData::parse(&node)?))?
            }
            _ => {}
        }
        Ok::<_, DumpError>(())
    })
}

fn c_float(v: f64) -> String {
    if v.is_nan() {
        if v.is_sign_negative() { "-nan".into() } else { "nan".into() }
    } else if v.is_infinite() {
        if v < 0.0 { "-inf".into() } else { "inf".into() }
    } else {
        format!("{v:.6}")
    }
}

/// A scalar as psana's reader prints it: unsigned 32-bit values with `%d` (so values ≥ 2³¹
/// show negative), u64 with `%llu`.
fn c_scalar(v: &Value) -> String {
    match v {
        Value::F32(x) => c_float(*x as f64),
        Value::F64(x) => c_float(*x),
        Value::U32(x) => (*x as i32).to_string(),
        Value::U64(x) => x.to_string(),
        other => other.as_int().map(|i| i.to_string()).unwrap_or_default(),
    }
}

/// An array element as psana's reader prints it: like a scalar, except that u64 arrays use
/// `%ld` (values ≥ 2⁶³ show negative).
fn c_array_element(v: &Value) -> String {
    match v {
        Value::U64(x) => (*x as i64).to_string(),
        other => c_scalar(other),
    }
}

fn write_xtcreader(out: &mut impl Write, state: &StreamState, dg: &Dgram, seq: u64) -> Result<(), DumpError> {
    let x = dg.xtc();
    writeln!(
        out,
        "event {seq}, {:>11} transition:  time 0x{:08x}.0x{:08x},  env 0x{:08x}, payloadSize {} damage 0x{:x} extent {}",
        dg.service().name(),
        dg.sec(),
        dg.nsec(),
        dg.env(),
        x.extent - 12,
        x.damage,
        x.extent
    )?;
    visit_in_order(state, dg, |item| match item {
        Item::Names(n) => {
            writeln!(
                out,
                "*** DetName: {}, Segment {}, DetType: {}, DetId: {}, Alg: {}, Version: 0x{:06x}, namesid: 0x{:x}, Names:",
                n.det_name, n.segment, n.det_type, n.det_id, n.alg_name, n.alg_version, n.names_id
            )?;
            for f in &n.fields {
                writeln!(out, "Name: '{}' Type: {} Rank: {}", f.name, f.dtype as u32, f.rank)?;
            }
            Ok(())
        }
        Item::Data(names, sd) => {
            writeln!(out, "Found {} names for namesid 0x{:x}", names.fields.len(), names.names_id)?;
            let mut io_err = None;
            sd.for_each_field(names, |i, name, v| {
                let r = (|| -> io::Result<()> {
                    writeln!(out, "{i}: '{}' rank {}, type {}", name.name, name.rank, name.dtype as u32)?;
                    match v {
                        Value::Str(s) => writeln!(out, "'{}': \"{}\"", name.name, String::from_utf8_lossy(s)),
                        Value::Array(a) => {
                            write!(out, "'{}' (shape:", name.name)?;
                            for d in a.dims() {
                                write!(out, " {d}")?;
                            }
                            write!(out, "): ")?;
                            for k in 0..a.len().min(3) {
                                write!(out, " {}", c_array_element(&a.get(k)))?;
                            }
                            writeln!(out)
                        }
                        scalar => writeln!(out, "'{}': {}", name.name, c_scalar(&scalar)),
                    }
                })();
                if let Err(e) = r {
                    io_err.get_or_insert(e);
                }
            })?;
            io_err.map_or(Ok(()), |e| Err(e.into()))
        }
    })
}

fn json_scalar(v: &Value) -> Json {
    match *v {
        Value::F32(x) => json_float(x as f64),
        Value::F64(x) => json_float(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        other => json!(other.as_int().unwrap_or_default() as i64),
    }
}

fn json_float(x: f64) -> Json {
    if x.is_finite() { json!(x) } else { json!(c_float(x)) }
}

/// A field's value as JSON: numbers, strings, arrays as {"shape", "values"}.
fn json_value(v: &Value, max_array: usize) -> Json {
    match v {
        Value::Str(s) => json!(String::from_utf8_lossy(s)),
        Value::Array(a) => {
            let values: Vec<Json> = (0..a.len().min(max_array)).map(|k| json_scalar(&a.get(k))).collect();
            json!({"shape": a.dims(), "values": values})
        }
        scalar => json_scalar(scalar),
    }
}

fn write_json(
    out: &mut impl Write,
    state: &StreamState,
    dg: &Dgram,
    offset: u64,
    stream: Option<u32>,
    max_array: usize,
) -> Result<(), DumpError> {
    let mut data = Map::new();
    visit_in_order(state, dg, |item| {
        if let Item::Data(names, sd) = item {
            sd.for_each_field(names, |_, name, v| {
                let key = format!("{}[{}].{}.{}", names.det_name, names.segment, names.alg_name, name.name);
                data.insert(key, json_value(&v, max_array));
            })?;
        }
        Ok(())
    })?;
    let x = dg.xtc();
    let mut obj = Map::new();
    obj.insert("offset".into(), json!(offset));
    if let Some(s) = stream {
        obj.insert("stream".into(), json!(s));
    }
    obj.insert("transition".into(), json!(dg.service().name()));
    obj.insert("sec".into(), json!(dg.sec()));
    obj.insert("nsec".into(), json!(dg.nsec()));
    obj.insert("timestamp".into(), json!(dg.timestamp()));
    obj.insert("env".into(), json!(dg.env()));
    obj.insert("damage".into(), json!(x.damage));
    obj.insert("extent".into(), json!(x.extent));
    obj.insert("data".into(), Json::Object(data));
    serde_json::to_writer(&mut *out, &Json::Object(obj)).map_err(io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

fn write_text(
    out: &mut impl Write,
    state: &StreamState,
    dg: &Dgram,
    offset: u64,
    stream: Option<u32>,
    max_array: usize,
) -> Result<(), DumpError> {
    let x = dg.xtc();
    let unix = xtc::dgram::unix_nanos(dg.timestamp());
    let stream = stream.map(|s| format!(" s{s:03}")).unwrap_or_default();
    writeln!(
        out,
        "@{offset}{stream} {:<11} {}.{:09} ({}) env 0x{:08x} damage 0x{:x} size {}",
        dg.service().name(),
        dg.sec(),
        dg.nsec(),
        utc(unix),
        dg.env(),
        x.damage,
        x.extent + 12
    )?;
    visit_in_order(state, dg, |item| match item {
        Item::Names(n) => {
            writeln!(
                out,
                "  names 0x{:x}: {}[{}].{} ({} v{}.{}.{}, id '{}'): {} fields",
                n.names_id,
                n.det_name,
                n.segment,
                n.alg_name,
                n.det_type,
                n.alg_version >> 16,
                (n.alg_version >> 8) & 0xff,
                n.alg_version & 0xff,
                n.det_id,
                n.fields.len()
            )?;
            Ok(())
        }
        Item::Data(names, sd) => {
            let mut io_err = None;
            sd.for_each_field(names, |_, name, v| {
                let shown = match &v {
                    Value::Str(s) => format!("{:?}", String::from_utf8_lossy(s)),
                    Value::Array(a) => {
                        let dims: Vec<String> = a.dims().iter().map(|d| d.to_string()).collect();
                        let vals: Vec<String> = (0..a.len().min(max_array)).map(|k| text_scalar(&a.get(k))).collect();
                        let more = if a.len() > max_array { ", …" } else { "" };
                        format!("{:?}[{}] [{}{more}]", a.dtype, dims.join("×"), vals.join(", "))
                    }
                    s => text_scalar(s),
                };
                let r = writeln!(out, "  {}[{}].{}.{} = {shown}", names.det_name, names.segment, names.alg_name, name.name);
                if let Err(e) = r {
                    io_err.get_or_insert(e);
                }
            })?;
            io_err.map_or(Ok(()), |e| Err(e.into()))
        }
    })
}

fn text_scalar(v: &Value) -> String {
    match v {
        Value::F32(x) => format!("{x}"),
        Value::F64(x) => format!("{x}"),
        other => other.as_int().map(|i| i.to_string()).unwrap_or_default(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` from Unix nanoseconds (civil-from-days, no time zone data).
pub fn utc(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", tod / 3600, tod / 60 % 60, tod % 60)
}

#[derive(Default)]
struct Stats {
    /// Built events/transitions (one per timestamp across streams).
    built: [u64; 16],
    /// Datagrams (one per stream member).
    per_transition: [u64; 16],
    bytes: u64,
    fields: u64,
    array_elems: u64,
}

impl Stats {
    fn add(&mut self, state: &StreamState, dg: &Dgram, service: TransitionId) -> Result<(), FormatError> {
        self.per_transition[service as usize] += 1;
        self.bytes += dg.bytes().len() as u64;
        let (mut fields, mut elems) = (0u64, 0u64);
        state.for_each_shapes_data(dg, |names, sd| {
            sd.for_each_field(names, |_, _, v| {
                fields += 1;
                if let Value::Array(a) = v {
                    elems += a.len() as u64;
                }
            })
        })?;
        self.fields += fields;
        self.array_elems += elems;
        Ok(())
    }

    fn print(&self, out: &mut impl Write, secs: f64) -> io::Result<()> {
        writeln!(out, "{:<12} {:>12} {:>12}", "transition", "built", "datagrams")?;
        for t in TransitionId::ALL {
            let n = self.per_transition[t as usize];
            if n > 0 {
                writeln!(out, "{:<12} {:>12} {n:>12}", t.name(), self.built[t as usize])?;
            }
        }
        let events = self.built[TransitionId::L1Accept as usize];
        let dgrams: u64 = self.per_transition.iter().sum();
        writeln!(out, "datagrams {dgrams}, fields decoded {}, array elements {}", self.fields, self.array_elems)?;
        writeln!(
            out,
            "{:.3} s: {:.0} events/s, {:.1} MB/s ({} bytes)",
            secs,
            events as f64 / secs.max(1e-9),
            self.bytes as f64 / 1e6 / secs.max(1e-9),
            self.bytes
        )
    }
}
