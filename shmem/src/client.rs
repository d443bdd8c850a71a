//! The shared-memory client (spec §4.1, §5.4, §8): psana2's behaviour. Every datagram is
//! copied out of shared memory and its buffer released at once; transitions (TCP) are served
//! before events (the event queue); a closed connection is reported and the client connects
//! again, taking nothing before the next Configure.

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use xtc::dgram::{DGRAM_HEADER_SIZE, XTC_HEADER_SIZE};
use xtc::{Dgram, StopAt, TransitionId};

use crate::error::{Error, Result};
use crate::msg::*;
use crate::sys::{MessageQueue, ShmSegment};

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Pause between attempts while no server answers (the reference waits 1 s).
    pub retry: Duration,
    /// How long [`Client::connect`] waits for a server; `None` = until one comes.
    pub connect_timeout: Option<Duration>,
    /// Connect again when the server goes away (psana does).
    pub reconnect: bool,
    /// After this transition has been returned, `next` returns [`Received::Stopped`].
    pub stop: StopAt,
    /// How long `next` keeps looking for the next event, yielding the core in between, before
    /// it sleeps until one comes: at high rates the next event is microseconds away, and
    /// letting the producer run is cheaper than sleeping and being woken (twice the events/s
    /// with 4 clients on 2 cores). Zero: sleep at once.
    pub spin: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { retry: Duration::from_secs(1), connect_timeout: None, reconnect: true, stop: StopAt::Never, spin: Duration::from_micros(30) }
    }
}

/// One datagram, copied out of shared memory (its buffer is already released).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    bytes: Vec<u8>,
    /// The buffer it was served in (0 … nEv−1 events, nEv … nEv+17 transitions).
    pub buffer: u32,
}

impl Datagram {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
    /// The datagram (its size was checked when it was copied).
    pub fn dgram(&self) -> Dgram<'_> {
        Dgram::new(&self.bytes).expect("checked when copied")
    }
    pub fn service(&self) -> TransitionId {
        self.dgram().service()
    }
    pub fn timestamp(&self) -> u64 {
        self.dgram().timestamp()
    }
    pub fn is_event(&self) -> bool {
        self.service().is_event()
    }
}

/// What [`Client::next`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    Dgram(Datagram),
    /// The server closed the connection (or died); the next calls connect again.
    ServerGone { reason: String },
    /// Connected (again) to a server of the tag; datagrams resume with its Configure.
    Reconnected { slot: usize },
    /// The stop transition has been returned; nothing more comes.
    Stopped,
}

/// Counts since the client was made (over every connection).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub connects: u64,
    pub disconnects: u64,
    /// L1Accepts returned.
    pub events: u64,
    pub transitions: u64,
    /// Datagrams returned, per service.
    pub per_service: [u64; 16],
    pub bytes: u64,
    /// L1Accepts older than the last Disable, discarded (spec §8).
    pub stale_events: u64,
    /// Datagrams released unread while waiting for the Configure after a connect.
    pub skipped_before_configure: u64,
    /// L1 releases the release queue refused (full; serial mode only).
    pub release_failures: u64,
    /// Bad indices, datagrams that do not fit their buffer, odd messages.
    pub protocol_errors: u64,
    /// Events this client did not see, estimated per enabled period from the span of its
    /// pulses at the smallest gap between consecutive L1Accepts (the event period), less the
    /// pulses seen (events, and SlowUpdates, which take a pulse). With several distributed
    /// clients this counts the events the others got as well; with one client or in serial
    /// mode it estimates the drops.
    pub missed_estimate: u64,
}

struct Conn {
    sock: TcpStream,
    peer: String,
    rbuf: [u8; MSG_SIZE],
    rlen: usize,
    first: Msg,
    slot: usize,
    seg: ShmSegment,
    evq: MessageQueue,
    relq: MessageQueue,
}

/// Pulses seen against the pulses there were, for [`ClientStats::missed_estimate`]: each
/// enabled period spans from its first to its last pulse seen; the event period is the smallest
/// gap between consecutive events. A SlowUpdate while enabled takes a pulse of its own. Order
/// does not matter (transitions are read before the events queued ahead of them).
#[derive(Default)]
struct Gaps {
    /// The open period: (first, last) pulse in ns, and pulses seen in it.
    open: Option<(u64, u64)>,
    open_seen: u64,
    /// Closed periods: their spans summed, how many, and pulses seen in them.
    closed_span: u128,
    closed: u64,
    closed_seen: u64,
    last_event_ns: Option<u64>,
    min_delta: u64,
    /// Between Enable and Disable.
    enabled: bool,
}

fn lcls_ns(ts: u64) -> u64 {
    (ts >> 32) * 1_000_000_000 + (ts & 0xffff_ffff)
}

impl Gaps {
    fn pulse(&mut self, ns: u64) {
        self.open = Some(match self.open {
            Some((first, last)) => (first.min(ns), last.max(ns)),
            None => (ns, ns),
        });
        self.open_seen += 1;
    }

    fn event(&mut self, ts: u64) {
        let ns = lcls_ns(ts);
        self.pulse(ns);
        if let Some(last) = self.last_event_ns.filter(|&l| ns > l) {
            let d = ns - last;
            self.min_delta = if self.min_delta == 0 { d } else { self.min_delta.min(d) };
        }
        self.last_event_ns = Some(ns);
    }

    fn slow_update(&mut self, ts: u64) {
        if self.enabled {
            self.pulse(lcls_ns(ts));
        }
    }

    /// A new enabled period (Enable), or a new connection: the open one is closed.
    fn restart(&mut self, enabled: bool) {
        if let Some((first, last)) = self.open.take() {
            self.closed_span += (last - first) as u128;
            self.closed += 1;
            self.closed_seen += self.open_seen;
        }
        self.open_seen = 0;
        self.last_event_ns = None;
        self.enabled = enabled;
    }

    fn estimate(&self) -> u64 {
        if self.min_delta == 0 {
            return 0;
        }
        let (span, periods, seen) = match self.open {
            Some((first, last)) => (self.closed_span + (last - first) as u128, self.closed + 1, self.closed_seen + self.open_seen),
            None => (self.closed_span, self.closed, self.closed_seen),
        };
        let d = self.min_delta as u128;
        let pulses = (span + d / 2) / d + periods as u128;
        (pulses as u64).saturating_sub(seen)
    }
}

/// A client of the server of one tag. One per process or MPI rank (spec §7).
pub struct Client {
    tag: String,
    opts: ClientOptions,
    conn: Option<Conn>,
    /// A Configure must come before anything is returned (after every connect).
    awaiting_configure: bool,
    last_disable: Option<u64>,
    gaps: Gaps,
    gone: Option<String>,
    just_connected: Option<usize>,
    stopped: bool,
    stats: ClientStats,
}

impl Client {
    /// Connects to the server of `tag` (spec §4.1), waiting up to `opts.connect_timeout`.
    pub fn connect(tag: &str, opts: ClientOptions) -> Result<Client> {
        let deadline = opts.connect_timeout.map(|t| Instant::now() + t);
        let mut problem = None;
        let conn = establish(tag, &opts, deadline, &mut problem)?.ok_or_else(|| {
            Error::Timeout(format!(
                "no shared-memory server with tag '{tag}' answered within {:?} (is one running? its discovery queue is {}){}",
                opts.connect_timeout.unwrap_or_default(),
                discovery_name(tag),
                problem.map(|p| format!("; last attempt: {p}")).unwrap_or_default()
            ))
        })?;
        let mut c = Client {
            tag: tag.into(),
            opts,
            conn: None,
            awaiting_configure: true,
            last_disable: None,
            gaps: Gaps::default(),
            gone: None,
            just_connected: None,
            stopped: false,
            stats: ClientStats::default(),
        };
        c.attach(conn);
        c.just_connected = None;
        Ok(c)
    }

    fn attach(&mut self, conn: Conn) {
        self.just_connected = Some(conn.slot);
        self.conn = Some(conn);
        self.awaiting_configure = true;
        self.last_disable = None;
        self.gaps.restart(false);
        self.stats.connects += 1;
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
    /// The slot the server gave this client (its event queue number).
    pub fn slot(&self) -> Option<usize> {
        self.conn.as_ref().map(|c| c.slot)
    }
    /// The first message of the current connection (buffers, queues, size, mode).
    pub fn first_message(&self) -> Option<Msg> {
        self.conn.as_ref().map(|c| c.first)
    }
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }
    pub fn stats(&self) -> ClientStats {
        ClientStats { missed_estimate: self.gaps.estimate(), ..self.stats.clone() }
    }

    /// The next datagram, transitions first; `Ok(None)` when nothing came within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Received>> {
        self.next_inner(timeout, false)
    }

    /// Like [`next`](Self::next) but only transitions: the event queue is not touched, so
    /// queued events stay there (where the server may steal them), as psana does while its
    /// user has not consumed the pending event.
    pub fn next_transition(&mut self, timeout: Duration) -> Result<Option<Received>> {
        self.next_inner(timeout, true)
    }

    fn next_inner(&mut self, timeout: Duration, transitions_only: bool) -> Result<Option<Received>> {
        if self.stopped {
            return Ok(Some(Received::Stopped));
        }
        if let Some(reason) = self.gone.take() {
            return Ok(Some(Received::ServerGone { reason }));
        }
        if let Some(slot) = self.just_connected.take() {
            return Ok(Some(Received::Reconnected { slot }));
        }
        let deadline = Instant::now() + timeout;
        if self.conn.is_none() {
            if !self.opts.reconnect {
                return Err(Error::protocol(format!("server '{}'", self.tag), "the connection is closed (reconnecting is off)"));
            }
            return match establish(&self.tag, &self.opts, Some(deadline), &mut None)? {
                Some(conn) => {
                    self.attach(conn);
                    Ok(self.just_connected.take().map(|slot| Received::Reconnected { slot }))
                }
                None => Ok(None),
            };
        }
        let spin_until = Instant::now() + self.opts.spin;
        loop {
            match self.read_tcp() {
                Ok(Some(m)) => {
                    if let Some(r) = self.take(m, true)? {
                        return Ok(Some(r));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(reason) => {
                    self.conn = None;
                    self.stats.disconnects += 1;
                    return Ok(Some(Received::ServerGone { reason }));
                }
            }
            if !transitions_only {
                let conn = self.conn.as_ref().unwrap();
                if let Some(m) = conn.evq.try_receive()? {
                    if let Some(r) = self.take(Msg::decode(&m), false)? {
                        return Ok(Some(r));
                    }
                    continue;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if now < spin_until && !transitions_only {
                std::thread::yield_now(); // see ClientOptions::spin
                continue;
            }
            let conn = self.conn.as_ref().unwrap();
            let mut fds = vec![libc::pollfd { fd: conn.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            if !transitions_only {
                fds.push(libc::pollfd { fd: conn.evq.fd(), events: libc::POLLIN, revents: 0 });
            }
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: fds is a valid pollfd slice.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        }
    }

    /// One whole 16-byte message from TCP if there is one; `Err(reason)` when the server
    /// closed the connection.
    fn read_tcp(&mut self) -> std::result::Result<Option<Msg>, String> {
        let conn = self.conn.as_mut().unwrap();
        loop {
            let mut b = [0u8; MSG_SIZE];
            let want = MSG_SIZE - conn.rlen;
            match conn.sock.read(&mut b[..want]) {
                Ok(0) => return Err(format!("server '{}' closed the connection ({})", self.tag, conn.peer)),
                Ok(n) => {
                    conn.rbuf[conn.rlen..conn.rlen + n].copy_from_slice(&b[..n]);
                    conn.rlen += n;
                    if conn.rlen == MSG_SIZE {
                        conn.rlen = 0;
                        return Ok(Some(Msg::decode(&conn.rbuf)));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("server '{}': connection {} failed: {e}", self.tag, conn.peer)),
            }
        }
    }

    /// Copies and releases the buffer a message names, then applies psana's rules. `Ok(None)`
    /// when the datagram is not returned (stale event, before the Configure).
    fn take(&mut self, m: Msg, via_tcp: bool) -> Result<Option<Received>> {
        let conn = self.conn.as_mut().unwrap();
        let nbuf = m.number_of_buffers as i64;
        let (size, idx) = (conn.first.size_of_buffers as usize, m.buffer_index as i64);
        if idx < 0 || idx >= nbuf || idx >= conn.first.number_of_buffers as i64 {
            self.stats.protocol_errors += 1;
            let channel = if via_tcp { format!("TCP {}", conn.peer) } else { conn.evq.name().to_string() };
            return Err(Error::protocol(channel, format!("buffer index {idx} is outside 0 … {}", nbuf.min(conn.first.number_of_buffers as i64) - 1)));
        }
        let off = idx as usize * size;
        let shm = conn.seg.bytes();
        let header = &shm[off..off + DGRAM_HEADER_SIZE.min(size)];
        let (service, dsize) = if header.len() < DGRAM_HEADER_SIZE {
            (TransitionId::L1Accept, 0)
        } else {
            let env = u32::from_le_bytes(header[8..12].try_into().unwrap());
            let extent = u32::from_le_bytes(header[20..24].try_into().unwrap()) as usize;
            (TransitionId::from_env(env), XTC_HEADER_SIZE + extent)
        };
        let copied = (DGRAM_HEADER_SIZE..=size).contains(&dsize).then(|| shm[off..off + dsize].to_vec());
        // Release at once, by the channel the datagram's service calls for (spec §5.4).
        let release = conn.first.with_index(idx as i32).encode();
        if service.is_event() {
            if !conn.relq.send_expired(&release)? {
                self.stats.release_failures += 1;
            }
        } else {
            send_all(&conn.sock, &release).map_err(|e| Error::os_with("send", format!("TCP {}", conn.peer), e))?;
        }
        let Some(bytes) = copied else {
            self.stats.protocol_errors += 1;
            return Err(Error::protocol(
                format!("{} buffer {idx} (offset {off})", conn.seg.name()),
                format!("the datagram's size 12 + extent = {dsize} does not fit the {size}-byte buffer (at least 24)"),
            ));
        };
        if self.awaiting_configure {
            if service != TransitionId::Configure {
                self.stats.skipped_before_configure += 1;
                return Ok(None);
            }
            self.awaiting_configure = false;
        }
        let ts = u64::from_le_bytes(bytes[0..8].try_into().unwrap());
        match service {
            TransitionId::Disable => {
                self.last_disable = Some(ts);
                self.gaps.enabled = false;
            }
            TransitionId::Enable => self.gaps.restart(true),
            TransitionId::SlowUpdate => self.gaps.slow_update(ts),
            s if s.is_event() => {
                if self.last_disable.is_some_and(|d| ts < d) {
                    self.stats.stale_events += 1;
                    return Ok(None);
                }
                self.gaps.event(ts);
            }
            _ => {}
        }
        if service.is_event() {
            self.stats.events += 1;
        } else {
            self.stats.transitions += 1;
        }
        self.stats.per_service[service as usize] += 1;
        self.stats.bytes += bytes.len() as u64;
        let stop = match self.opts.stop {
            StopAt::EndRun => Some(TransitionId::EndRun),
            StopAt::EndStep => Some(TransitionId::EndStep),
            StopAt::Unconfigure => Some(TransitionId::Unconfigure),
            StopAt::Never => None,
        };
        if stop == Some(service) {
            self.stopped = true;
        }
        Ok(Some(Received::Dgram(Datagram { bytes, buffer: idx as u32 })))
    }
}

/// Writes 16 bytes on a non-blocking socket, waiting briefly if its buffer is full.
fn send_all(sock: &TcpStream, b: &[u8; MSG_SIZE]) -> std::io::Result<()> {
    let mut done = 0;
    let mut tries = 0;
    while done < MSG_SIZE {
        // SAFETY: the range is inside b; the descriptor is open.
        let n = unsafe { libc::send(sock.as_raw_fd(), b[done..].as_ptr().cast(), MSG_SIZE - done, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            ErrorKind::Interrupted => {}
            ErrorKind::WouldBlock if tries < 1000 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

fn nap(d: Duration, deadline: Option<Instant>) {
    std::thread::sleep(remaining(deadline).map_or(d, |r| r.min(d)));
}

/// Steps 1–6 of spec §4.1; `Ok(None)` when the deadline passes first.
fn establish(tag: &str, opts: &ClientOptions, deadline: Option<Instant>, last_problem: &mut Option<String>) -> Result<Option<Conn>> {
    let expired = || remaining(deadline).is_some_and(|r| r.is_zero());
    loop {
        if expired() {
            return Ok(None);
        }
        // 1. Discovery: open (retry), timed receive (1 s), close.
        let port = match MessageQueue::open_if_exists(&discovery_name(tag), libc::O_RDONLY)? {
            None => {
                nap(opts.retry, deadline);
                continue;
            }
            Some(q) => {
                let wait = remaining(deadline).map_or(Duration::from_secs(1), |r| r.min(Duration::from_secs(1)));
                match q.receive_timeout(wait)? {
                    Some(m) => Msg::decode(&m).buffer_index,
                    None => continue,
                }
            }
        };
        if !(1..=u16::MAX as i32).contains(&port) {
            return Err(Error::protocol(discovery_name(tag), format!("advertised port {port} is not a TCP port")));
        }
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port as u16);
        // 2. TCP, retried; an advertisement of a server that died leads back to discovery.
        let mut sock = None;
        for _ in 0..3 {
            match TcpStream::connect_timeout(&addr.into(), Duration::from_secs(1)) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(_) if !expired() => nap(opts.retry, deadline),
                Err(_) => break,
            }
        }
        let Some(mut sock) = sock else { continue };
        let peer = addr.to_string();
        // 3. The first message; EOF before it = rejected.
        sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut b = [0u8; MSG_SIZE];
        let mut got = 0;
        while got < MSG_SIZE {
            match sock.read(&mut b[got..]) {
                Ok(0) => return Err(Error::Rejected { tag: tag.into() }),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::os_with("recv", format!("TCP {peer} (first message)"), e)),
            }
        }
        let first = Msg::decode(&b);
        let (nbuf, nq, size) = (first.number_of_buffers as usize, first.number_of_queues as usize, first.size_of_buffers as usize);
        let slot = first.buffer_index;
        if nbuf <= NTR || nq == 0 || size < DGRAM_HEADER_SIZE || slot < 0 || slot as usize >= nq {
            return Err(Error::protocol(
                format!("TCP {peer} (first message)"),
                format!("{nbuf} buffers, {nq} queues, {size}-byte buffers, slot {slot}: not a valid server announcement"),
            ));
        }
        if first.distributed() && first.return_queue as usize != nq {
            return Err(Error::protocol(
                format!("TCP {peer} (first message)"),
                format!("return queue {} in distributed mode, expected {nq}", first.return_queue),
            ));
        }
        let slot = slot as usize;
        sock.set_read_timeout(None).ok();
        sock.set_nonblocking(true).map_err(|e| Error::os_with("fcntl", format!("TCP {peer}"), e))?;
        sock.set_nodelay(true).ok();
        // 4–6. The segment (read-only), the event queue and the release queue. An
        // advertisement left by a dead server can name a port another server (of another
        // tag) has taken since: objects of our tag that do not match the announcement mean
        // exactly that, so such a connection is dropped and discovery starts again.
        let evq_name = event_queue_name(tag, slot);
        let release = if first.distributed() { first.return_queue as usize } else { slot + 1 };
        let opened = (|| -> Result<std::result::Result<(ShmSegment, MessageQueue, MessageQueue), String>> {
            let seg = match ShmSegment::open_readonly(&segment_name(tag), nbuf * size) {
                Ok(s) => s,
                Err(e @ (Error::Protocol { .. } | Error::Os { .. })) => return Ok(Err(e.to_string())),
                Err(e) => return Err(e),
            };
            let Some(evq) = MessageQueue::open_if_exists(&evq_name, libc::O_RDONLY | libc::O_NONBLOCK)? else {
                return Ok(Err(format!("{evq_name} does not exist")));
            };
            let a = evq.attr()?;
            let want = ((nbuf - NTR) / nq) as i64;
            if a.msgsize != MSG_SIZE as i64 || a.maxmsg != want {
                return Ok(Err(format!("{evq_name} has maxmsg {} and msgsize {}, the announcement means {want} and 16", a.maxmsg, a.msgsize)));
            }
            let relq = match MessageQueue::open_if_exists(&event_queue_name(tag, release), libc::O_WRONLY)? {
                Some(q) => q,
                None => return Ok(Err(format!("{} does not exist", event_queue_name(tag, release)))),
            };
            Ok(Ok((seg, evq, relq)))
        })()?;
        let (seg, evq, relq) = match opened {
            Ok(objects) => objects,
            Err(problem) => {
                *last_problem = Some(format!("{peer} is not the server of '{tag}' (stale advertisement?): {problem}"));
                drop(sock);
                nap(opts.retry, deadline);
                continue;
            }
        };
        return Ok(Some(Conn { sock, peer, rbuf: [0; MSG_SIZE], rlen: 0, first, slot, seg, evq, relq }));
    }
}

