//! The shared-memory server (spec §1, §4.2, §5, §6): what the DAQ's monitoring event builder
//! and `shmemServer` do, with in-process structures instead of the internal request and
//! shuffle queues. `publish` never blocks on a client.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xtc::{Dgram, TransitionId};

use crate::cache::{Cache, Note};
use crate::error::{Error, Result};
use crate::msg::*;
use crate::signals;
use crate::sys::{self, MessageQueue, ShmSegment};

/// How events reach the clients (spec §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each event goes to one client, round-robin (`monReqServer -d`, `shmemServer`).
    Distributed,
    /// Every event visits clients 0, 1, … in turn.
    Serial,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The partition tag in every object name.
    pub tag: String,
    /// Event buffers (nEv).
    pub n_events: usize,
    /// Client queues (nQ) = the most clients at a time.
    pub n_queues: usize,
    /// Bytes per buffer: the largest datagram that can be served.
    pub buffer_size: usize,
    pub mode: Mode,
    /// Log connects and disconnects too (errors are always logged, on stderr).
    pub verbose: bool,
    /// Also remove the segment on drop. The protocol leaves it for the next server (spec §1);
    /// tests remove it so machines do not fill up.
    pub remove_segment_on_drop: bool,
}

impl ServerConfig {
    /// The MEB's minimum of 8 event buffers, one queue, 1 MiB buffers, distributed mode.
    pub fn new(tag: impl Into<String>) -> Self {
        ServerConfig {
            tag: tag.into(),
            n_events: 8,
            n_queues: 1,
            buffer_size: 1 << 20,
            mode: Mode::Distributed,
            verbose: false,
            remove_segment_on_drop: false,
        }
    }

    /// Checks the limits of spec §10 on this machine.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let tag = &self.tag;
        if tag.is_empty() || tag.contains(['/', '\0']) || tag.len() > 200 {
            return bad(format!("tag {tag:?}: a non-empty name without '/' is needed (it is part of the object names)"));
        }
        let (nev, nq) = (self.n_events, self.n_queues);
        if !(1..=MAX_QUEUES).contains(&nq) {
            return bad(format!("{nq} client queues: 1 to {MAX_QUEUES} (holder masks are 32-bit)"));
        }
        if nev < nq {
            return bad(format!("{nev} event buffers for {nq} queues: at least one buffer per queue is needed (nEv ≥ nQ)"));
        }
        if nev + NTR > MAX_BUFFERS {
            return bad(format!(
                "{nev} event buffers: nEv + {NTR} transition buffers must fit the 8-bit numberOfBuffers ({MAX_BUFFERS}), so at most {}",
                MAX_BUFFERS - NTR
            ));
        }
        if self.buffer_size < 24 || self.buffer_size > MAX_BUFFER_SIZE {
            return bad(format!("buffer size {} bytes: 24 to {MAX_BUFFER_SIZE} (28-bit sizeOfBuffers)", self.buffer_size));
        }
        if let Some(max) = sys::read_proc_limit("msg_max") {
            check_msg_max(nev, max, sys::may_exceed_mqueue_limits())?;
        }
        let total = (nev + NTR) as u64 * self.buffer_size as u64;
        // SAFETY: zeroed statvfs is valid and filled by the call.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c"/dev/shm".as_ptr(), &mut st) } == 0 {
            let avail = st.f_bavail as u64 * st.f_frsize as u64;
            if total > avail {
                return bad(format!(
                    "the segment needs ({nev} + {NTR}) × {} = {total} bytes but /dev/shm has {avail} free: use fewer or smaller buffers",
                    self.buffer_size
                ));
            }
        }
        Ok(())
    }
}

/// `mq_open` with `maxmsg` above `fs.mqueue.msg_max` fails for unprivileged users; the return
/// queue has nEv messages (spec §10).
fn check_msg_max(nev: usize, max: u64, privileged: bool) -> Result<()> {
    if nev as u64 > max && !privileged {
        return Err(Error::Config(format!(
            "{nev} event buffers need message queues of {nev} messages, but /proc/sys/fs/mqueue/msg_max is {max}: \
             raise it with `sudo sysctl fs.mqueue.msg_max={nev}`, or use at most {max} buffers"
        )));
    }
    Ok(())
}

/// What happened to one published datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// An event queued to client queue `queue`; `stolen` when its buffer was taken from an
    /// event still queued to some client (that client loses it).
    Queued { queue: usize, stolen: bool },
    /// An event lost: no free buffer and nothing to steal.
    DroppedNoBuffer,
    /// An event lost: every client queue was full.
    DroppedQueuesFull,
    /// A transition in buffer `buffer` (nEv … nEv+17), sent to `clients` clients.
    Transition { buffer: usize, clients: usize },
    /// A transition not served: every transition buffer is held by some client.
    TransitionSkipped,
}

/// Exact counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// L1Accepts handed to `publish`.
    pub events_published: u64,
    /// L1Accepts queued to a client queue (some may be stolen or reclaimed later).
    pub events_queued: u64,
    /// Per client queue: events queued to it.
    pub queued_per_queue: Vec<u64>,
    pub dropped_no_buffer: u64,
    pub dropped_queues_full: u64,
    /// Queued events whose buffer was taken for a newer event.
    pub stolen: u64,
    /// Queued events taken back at an Enable (spec §5.5).
    pub reclaimed_at_enable: u64,
    /// Buffers recovered from disconnected clients (queued or received, spec §5.6).
    pub recovered_on_disconnect: u64,
    pub transitions_published: u64,
    pub transitions_skipped: u64,
    /// Transition messages sent over TCP (late joiners and catch-up included).
    pub transitions_sent: u64,
    /// Datagrams refused because they do not fit a buffer.
    pub too_large: u64,
    pub clients_accepted: u64,
    pub clients_rejected: u64,
    pub disconnects: u64,
    /// Malformed or unexpected messages from clients (logged and ignored).
    pub bad_messages: u64,
}

const DEST_POOL: i32 = -1;
const DEST_IN_FLIGHT: i32 = -2;

struct Slot {
    sock: TcpStream,
    /// Distinguishes a reconnected slot from the one a poll snapshot saw.
    id: u64,
    rbuf: [u8; MSG_SIZE],
    rlen: usize,
}

struct State {
    pool: VecDeque<u32>,
    in_pool: Vec<bool>,
    /// Queue an event buffer was dispatched to; DEST_POOL or DEST_IN_FLIGHT otherwise.
    dest: Vec<i32>,
    counter: u64,
    steals: u64,
    cache: Cache,
    not_ready: u32,
    clients: Vec<Option<Slot>>,
    next_id: u64,
    stats: ServerStats,
}

struct Inner {
    cfg: ServerConfig,
    template: Msg,
    seg: ShmSegment,
    /// Client queues 0 … nQ−1, then the return queue nQ.
    queues: Vec<MessageQueue>,
    discovery: MessageQueue,
    port: u16,
    state: Mutex<State>,
    stop: AtomicBool,
    wake_tx: UnixStream,
}

/// A running server. Dropping it stops its threads, closes the client connections and unlinks
/// its queues.
pub struct Server {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
    signal_slots: Vec<usize>,
    queue_names: Vec<String>,
}

impl Server {
    /// Creates the objects of spec §1 (after removing stale queues of the tag) and starts the
    /// discovery and task threads.
    pub fn start(cfg: ServerConfig) -> Result<Server> {
        cfg.validate()?;
        let (tag, nev, nq, size) = (cfg.tag.clone(), cfg.n_events, cfg.n_queues, cfg.buffer_size);
        // Stale queues keep their old attributes when re-opened: remove every name of the tag
        // a server could have made (up to 32 client queues + the return queue).
        let mut stale: Vec<String> = (0..=MAX_QUEUES).map(|i| event_queue_name(&tag, i)).collect();
        stale.extend([discovery_name(&tag), request_queue_name(&tag), shuffle_queue_name(&tag)]);
        for name in &stale {
            MessageQueue::unlink(name)?;
        }
        let nbuf = nev + NTR;
        // A fresh segment rather than resizing the old one in place: a client of a previous
        // server that still maps it keeps valid (orphaned) memory instead of a SIGBUS when the
        // size shrinks. Unlinking may fail (another user's segment): then it is reused.
        let _ = ShmSegment::unlink(&segment_name(&tag));
        let seg = ShmSegment::create(&segment_name(&tag), nbuf * size)?;
        for t in 0..NTR {
            // SAFETY: nobody else writes the new mapping yet; the range is inside it.
            unsafe { seg.write((nev + t) * size, &reset_header()) };
        }
        let mut queue_names: Vec<String> = (0..=nq).map(|i| event_queue_name(&tag, i)).collect();
        queue_names.push(discovery_name(&tag));
        let mut doomed = queue_names.clone();
        if cfg.remove_segment_on_drop {
            doomed.push(format!("/dev/shm/{}", segment_name(&tag).trim_start_matches('/')));
        }
        let signal_slots = signals::register(&doomed);
        let cleanup = |e: Error| {
            for n in &queue_names {
                let _ = MessageQueue::unlink(n);
            }
            signals::unregister(&signal_slots);
            e
        };
        let mut queues = Vec::with_capacity(nq + 1);
        for name in &queue_names[..nq] {
            queues.push(MessageQueue::create(name, nev / nq, MSG_SIZE, true).map_err(cleanup)?);
        }
        queues.push(MessageQueue::create(&queue_names[nq], nev, MSG_SIZE, true).map_err(cleanup)?);
        let discovery = MessageQueue::create(&queue_names[nq + 1], 2, MSG_SIZE, true).map_err(cleanup)?;
        for q in queues.iter().chain([&discovery]) {
            let a = q.attr().map_err(cleanup)?;
            if a.msgsize != MSG_SIZE as i64 {
                return Err(cleanup(Error::protocol(q.name(), format!("msgsize is {}, the protocol needs 16", a.msgsize))));
            }
        }
        let template = Msg {
            buffer_index: 0,
            number_of_buffers: nbuf as u8,
            number_of_queues: nq as u8,
            return_queue: if cfg.mode == Mode::Distributed { nq as u8 } else { 0 },
            size_of_buffers: size as u32,
        };
        // Seed the return queue with every event buffer (spec §5.1) and take them into the pool.
        for i in 0..nev {
            if !queues[nq].try_send(&template.with_index(i as i32).encode()).map_err(cleanup)? {
                return Err(cleanup(Error::protocol(queues[nq].name(), format!("full after {i} of {nev} messages"))));
            }
        }
        let listener = bind_listener().map_err(cleanup)?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let (wake_tx, wake_rx) = UnixStream::pair().map_err(|e| cleanup(Error::os_with("socketpair", "wake-up pair", e)))?;
        wake_tx.set_nonblocking(true).ok();
        wake_rx.set_nonblocking(true).ok();
        let state = State {
            pool: VecDeque::with_capacity(nev),
            in_pool: vec![false; nev],
            dest: vec![DEST_IN_FLIGHT; nev],
            counter: 0,
            steals: 0,
            cache: Cache::default(),
            not_ready: 0,
            clients: (0..nq).map(|_| None).collect(),
            next_id: 0,
            stats: ServerStats { queued_per_queue: vec![0; nq], ..Default::default() },
        };
        let inner = Arc::new(Inner {
            cfg,
            template,
            seg,
            queues,
            discovery,
            port,
            state: Mutex::new(state),
            stop: AtomicBool::new(false),
            wake_tx,
        });
        {
            let mut st = inner.lock();
            inner.drain_return(&mut st);
            if st.pool.len() != nev {
                let n = st.pool.len();
                drop(st);
                return Err(cleanup(Error::protocol(inner.queues[nq].name(), format!("returned {n} of the {nev} seeded buffers"))));
            }
        }
        let mut threads = Vec::new();
        let i2 = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("shmem-task-{tag}"))
                .spawn(move || i2.task_loop(wake_rx))
                .map_err(|e| cleanup(Error::os_with("spawn", "task thread", e)))?,
        );
        let i3 = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("shmem-discovery-{tag}"))
                .spawn(move || i3.discovery_loop(listener))
                .map_err(|e| cleanup(Error::os_with("spawn", "discovery thread", e)))?,
        );
        inner.info(format!("serving {nev} × {size}-byte buffers to {nq} client queue(s), {:?} mode, on 127.0.0.1:{port}", inner.cfg.mode));
        Ok(Server { inner, threads, signal_slots, queue_names })
    }

    /// Serves one datagram: an L1Accept through the event pool, anything else as a
    /// transition. Never blocks on a client. A datagram that is malformed or larger than a
    /// buffer is an error and is not served; the server goes on.
    pub fn publish(&self, dg: &[u8]) -> Result<Published> {
        let d = Dgram::new(dg).map_err(|e| Error::Datagram(format!("server '{}': not one whole datagram: {e}", self.inner.cfg.tag)))?;
        let size = self.inner.cfg.buffer_size;
        if dg.len() > size {
            self.inner.lock().stats.too_large += 1;
            let msg = format!(
                "server '{}': a {} of {} bytes does not fit its {size}-byte buffers (start it with a larger buffer size); not served",
                self.inner.cfg.tag,
                d.service().name(),
                dg.len()
            );
            return Err(Error::Datagram(msg));
        }
        if d.service().is_event() { Ok(self.inner.publish_event(dg)) } else { Ok(self.inner.publish_transition(d.service(), dg)) }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.cfg
    }
    pub fn tag(&self) -> &str {
        &self.inner.cfg.tag
    }
    /// The TCP port of the transition channel.
    pub fn port(&self) -> u16 {
        self.inner.port
    }
    /// The message every client receives first (with its slot as the index).
    pub fn template(&self) -> Msg {
        self.inner.template
    }
    /// The names of the queues this server created (unlinked on drop).
    pub fn queue_names(&self) -> &[String] {
        &self.queue_names
    }
    /// Counters so far, releases waiting in the return queue counted in.
    pub fn stats(&self) -> ServerStats {
        let mut st = self.inner.lock();
        self.inner.drain_return(&mut st);
        st.stats.clone()
    }
    /// Connected clients' slots.
    pub fn client_slots(&self) -> Vec<usize> {
        self.inner.lock().clients.iter().enumerate().filter(|(_, c)| c.is_some()).map(|(i, _)| i).collect()
    }
    pub fn clients(&self) -> usize {
        self.client_slots().len()
    }
    /// Event buffers in the free pool now (released ones included).
    pub fn free_buffers(&self) -> usize {
        let mut st = self.inner.lock();
        self.inner.drain_return(&mut st);
        st.pool.len()
    }
    /// Waits until an event can be published without taking one a connected client would
    /// read: a buffer is free (the MEB asks the DAQ for the next event only then, spec §5.1),
    /// or the connected clients' queues are empty while buffers sit in the queues of slots no
    /// client holds (stealing those loses nothing). False on timeout. A publisher that waits
    /// here loses no event while its clients keep up.
    pub fn wait_free_buffer(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let returns = &self.inner.queues[self.inner.n_q()];
        loop {
            {
                let mut st = self.inner.lock();
                self.inner.drain_return(&mut st);
                if !st.pool.is_empty() {
                    return true;
                }
                let queued = |q: usize| self.inner.queues[q].attr().map_or(0, |a| a.curmsgs);
                let slots = 0..self.inner.n_q();
                let parked: i64 = slots.clone().filter(|&q| st.clients[q].is_none()).map(queued).sum();
                if parked > 0 && slots.filter(|&q| st.clients[q].is_some()).map(queued).sum::<i64>() == 0 {
                    return true;
                }
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            // Woken by the release itself (the return queue's descriptor), not through another
            // thread: one wake-up per event fewer. The cap covers buffers reclaimed from a
            // client that went away and clients taking events from their queues.
            let mut fd = [libc::pollfd { fd: returns.fd(), events: libc::POLLIN, revents: 0 }];
            poll_fds(&mut fd, (until - now).min(Duration::from_millis(5)));
        }
    }

    /// The cached transitions (the DAQ state late joiners receive), oldest first.
    pub fn cached(&self) -> Vec<TransitionId> {
        self.inner.lock().cache.cached()
    }

    /// Waits until at least `n` clients are connected; false on timeout.
    pub fn wait_for_clients(&self, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if self.clients() >= n {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until every connected client has released every transition and received every
    /// queued event (e.g. before exiting after an EndRun); false on timeout.
    pub fn wait_drained(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            {
                let st = self.inner.lock();
                let held = st.cache.holders.iter().any(|&h| h != 0);
                let queued = st
                    .clients
                    .iter()
                    .enumerate()
                    .any(|(c, s)| s.is_some() && self.inner.queues[c].attr().map(|a| a.curmsgs > 0).unwrap_or(false));
                if !held && !queued {
                    return true;
                }
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let _ = (&self.inner.wake_tx).write(&[1]);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Closing the sockets tells the clients the server is gone.
        for c in self.inner.lock().clients.iter_mut() {
            *c = None;
        }
        for n in &self.queue_names {
            if let Err(e) = MessageQueue::unlink(n) {
                self.inner.error(&e.to_string());
            }
        }
        signals::unregister(&self.signal_slots);
        if self.inner.cfg.remove_segment_on_drop {
            let _ = ShmSegment::unlink(self.inner.seg.name());
        }
    }
}

/// A Reset datagram header with an empty root Parent (spec §3).
fn reset_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[8..12].copy_from_slice(&0x0100_0000u32.to_le_bytes());
    h[20..24].copy_from_slice(&12u32.to_le_bytes());
    h
}

/// Binds 127.0.0.1 on the first free port from 32768 up, SO_REUSEADDR, backlog 10.
fn bind_listener() -> Result<TcpListener> {
    for port in FIRST_PORT..=u16::MAX {
        // SAFETY: plain socket calls on a descriptor we own until from_raw_fd takes it.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(Error::os("socket", "TCP listener"));
            }
            let one: libc::c_int = 1;
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&one as *const libc::c_int).cast(), 4);
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be() },
                sin_zero: [0; 8],
            };
            if libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32) != 0 {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                if e.raw_os_error() == Some(libc::EADDRINUSE) {
                    continue;
                }
                return Err(Error::os_with("bind", format!("{}", SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)), e));
            }
            if libc::listen(fd, 10) != 0 {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                // With SO_REUSEADDR two servers can bind the same port at once; the second
                // to listen loses it and tries the next.
                if e.raw_os_error() == Some(libc::EADDRINUSE) {
                    continue;
                }
                return Err(Error::os_with("listen", format!("127.0.0.1:{port}"), e));
            }
            let l = TcpListener::from_raw_fd(fd);
            l.set_nonblocking(true).map_err(|e| Error::os_with("fcntl", "TCP listener", e))?;
            return Ok(l);
        }
    }
    Err(Error::Config(format!("no free TCP port on 127.0.0.1 from {FIRST_PORT} up")))
}

/// Sends 16 bytes without blocking and without SIGPIPE; false unless all went out.
fn send_msg(sock: &TcpStream, msg: &Msg) -> bool {
    let b = msg.encode();
    // SAFETY: b is MSG_SIZE valid bytes; the descriptor is open.
    let n = unsafe { libc::send(sock.as_raw_fd(), b.as_ptr().cast(), MSG_SIZE, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if n > 0 && (n as usize) < MSG_SIZE {
        // Part of a message went out: the byte stream is broken; end the connection.
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
    n as usize == MSG_SIZE
}

fn poll_fds(fds: &mut [libc::pollfd], timeout: Duration) -> usize {
    // SAFETY: fds is a valid slice of pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.as_millis().min(i32::MAX as u128) as i32) };
    n.max(0) as usize
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a holder leaves counters possibly half-updated, nothing unsafe.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, msg: &str) {
        eprintln!("beamtime shmem server '{}': {msg}", self.cfg.tag);
    }

    fn info(&self, msg: String) {
        if self.cfg.verbose {
            eprintln!("beamtime shmem server '{}': {msg}", self.cfg.tag);
        }
    }

    fn n_ev(&self) -> usize {
        self.cfg.n_events
    }
    fn n_q(&self) -> usize {
        self.cfg.n_queues
    }

    /// Puts an event buffer back into the free pool (once: duplicates are refused).
    fn to_pool(&self, st: &mut State, idx: i32, from: &str) -> bool {
        if idx < 0 || idx as usize >= self.n_ev() {
            st.stats.bad_messages += 1;
            self.error(&format!("{from}: buffer index {idx} is not an event buffer (0 … {}); ignored", self.n_ev() - 1));
            return false;
        }
        let i = idx as usize;
        if st.in_pool[i] {
            st.stats.bad_messages += 1;
            self.error(&format!("{from}: event buffer {idx} returned twice; ignored"));
            return false;
        }
        st.in_pool[i] = true;
        st.dest[i] = DEST_POOL;
        st.pool.push_back(idx as u32);
        true
    }

    /// Moves every released buffer from the return queue into the pool.
    fn drain_return(&self, st: &mut State) {
        let q = &self.queues[self.n_q()];
        loop {
            match q.try_receive() {
                Ok(Some(m)) => {
                    self.to_pool(st, Msg::decode(&m).buffer_index, q.name());
                }
                Ok(None) => break,
                Err(e) => {
                    self.error(&e.to_string());
                    break;
                }
            }
        }
    }

    /// Moves everything queued to client queue `q` into the pool; returns how many.
    fn drain_client_queue(&self, st: &mut State, q: usize) -> u64 {
        let queue = &self.queues[q];
        let mut n = 0;
        loop {
            match queue.try_receive() {
                Ok(Some(m)) => n += self.to_pool(st, Msg::decode(&m).buffer_index, queue.name()) as u64,
                Ok(None) => return n,
                Err(e) => {
                    self.error(&e.to_string());
                    return n;
                }
            }
        }
    }

    fn publish_event(&self, dg: &[u8]) -> Published {
        let (idx, stolen) = {
            let mut st = self.lock();
            st.stats.events_published += 1;
            self.drain_return(&mut st);
            let mut got = st.pool.pop_front().map(|i| (i, false));
            if let Some((i, _)) = got {
                st.in_pool[i as usize] = false;
            } else {
                // Steal the oldest queued event of some client, round-robin (spec §5.2).
                for k in 0..self.n_q() {
                    let q = (k as u64 + st.steals) as usize % self.n_q();
                    match self.queues[q].try_receive() {
                        Ok(Some(m)) => {
                            let i = Msg::decode(&m).buffer_index;
                            if i >= 0 && (i as usize) < self.n_ev() && !st.in_pool[i as usize] {
                                got = Some((i as u32, true));
                                break;
                            }
                            st.stats.bad_messages += 1;
                            self.error(&format!("{}: bad buffer index {i} while stealing; ignored", self.queues[q].name()));
                        }
                        Ok(None) => {}
                        Err(e) => self.error(&e.to_string()),
                    }
                }
                st.steals += 1;
            }
            let Some((idx, stolen)) = got else {
                st.stats.dropped_no_buffer += 1;
                return Published::DroppedNoBuffer;
            };
            if stolen {
                st.stats.stolen += 1;
            }
            st.dest[idx as usize] = DEST_IN_FLIGHT;
            (idx as usize, stolen)
        };
        // SAFETY: buffer idx is ours alone (in flight: in no queue, not in the pool, not
        // handed back by disconnect recovery); publish is the only writer of event buffers.
        unsafe { self.seg.write(idx * self.cfg.buffer_size, dg) };
        let mut st = self.lock();
        self.dispatch(&mut st, idx, stolen)
    }

    fn dispatch(&self, st: &mut State, idx: usize, stolen: bool) -> Published {
        let msg = self.template.with_index(idx as i32).encode();
        let nq = self.n_q();
        for k in 0..nq {
            let q = match self.cfg.mode {
                Mode::Distributed => {
                    let q = (st.counter % nq as u64) as usize;
                    st.counter += 1;
                    q
                }
                Mode::Serial => k,
            };
            match self.queues[q].try_send(&msg) {
                Ok(true) => {
                    st.dest[idx] = q as i32;
                    st.stats.events_queued += 1;
                    st.stats.queued_per_queue[q] += 1;
                    return Published::Queued { queue: q, stolen };
                }
                Ok(false) => {}
                Err(e) => self.error(&e.to_string()),
            }
        }
        self.to_pool(st, idx as i32, "dispatch");
        st.stats.dropped_queues_full += 1;
        Published::DroppedQueuesFull
    }

    fn publish_transition(&self, service: TransitionId, dg: &[u8]) -> Published {
        let mut st = self.lock();
        let st = &mut *st;
        st.stats.transitions_published += 1;
        let mut notes = Vec::new();
        let Some(t) = st.cache.allocate(service, &mut st.not_ready, &mut notes) else {
            st.stats.transitions_skipped += 1;
            self.error(&format!("every transition buffer is held by a client: {} not served", service.name()));
            return Published::TransitionSkipped;
        };
        for n in notes {
            match n {
                Note::NotCached => self.info(format!("{} with no Configure cached: served, not cached", service.name())),
                Note::Irrecoverable { top } => self.error(&format!(
                    "{} after {}: a begin transition was skipped (the reference server aborts here); served and cached",
                    service.name(),
                    top.name()
                )),
            }
        }
        // SAFETY: holders[t] == 0, so no client reads buffer t; transitions are written under
        // the state lock only.
        unsafe { self.seg.write((self.n_ev() + t) * self.cfg.buffer_size, dg) };
        st.cache.service[t] = service;
        if service == TransitionId::Enable {
            for q in 0..self.n_q() {
                let n = self.drain_client_queue(st, q);
                st.stats.reclaimed_at_enable += n;
            }
        }
        let mut sent = 0;
        for c in 0..self.n_q() {
            if st.clients[c].is_some() && st.cache.deliver_ok(t, c, st.not_ready) && self.send_transition(st, c, t) {
                sent += 1;
            }
        }
        Published::Transition { buffer: self.n_ev() + t, clients: sent }
    }

    /// Sends transition buffer `t` to client `c`, marking it held.
    fn send_transition(&self, st: &mut State, c: usize, t: usize) -> bool {
        let Some(slot) = &st.clients[c] else { return false };
        st.cache.holders[t] |= 1 << c;
        if send_msg(&slot.sock, &self.template.with_index((self.n_ev() + t) as i32)) {
            st.stats.transitions_sent += 1;
            true
        } else {
            st.cache.holders[t] &= !(1 << c);
            self.error(&format!("client {c}: could not send {} (socket full or closed)", st.cache.service[t].name()));
            false
        }
    }

    /// Sends the cached transitions whose service is at least `next` (spec §6.4–6.5).
    fn send_cached(&self, st: &mut State, c: usize, next: u8) {
        for b in st.cache.stack.clone() {
            if st.cache.service[b] as u8 >= next && st.cache.deliver_ok(b, c, st.not_ready) {
                self.send_transition(st, c, b);
            }
        }
    }

    fn add_client(&self, sock: TcpStream) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(c) = st.clients.iter().position(|s| s.is_none()) else {
            st.stats.clients_rejected += 1;
            self.info(format!("all {} slots busy: connection rejected", self.n_q()));
            return; // dropping the socket closes it
        };
        let _ = sock.set_nonblocking(true);
        let _ = sock.set_nodelay(true);
        if !send_msg(&sock, &self.template.with_index(c as i32)) {
            self.error(&format!("client {c}: could not send the first message"));
            return;
        }
        st.cache.release_all(c);
        st.not_ready &= !(1 << c);
        st.next_id += 1;
        st.clients[c] = Some(Slot { sock, id: st.next_id, rbuf: [0; MSG_SIZE], rlen: 0 });
        st.stats.clients_accepted += 1;
        self.info(format!("client {c} connected"));
        self.send_cached(st, c, 0);
    }

    fn disconnect(&self, st: &mut State, c: usize) {
        self.drain_return(st);
        let mut recovered = self.drain_client_queue(st, c);
        for i in 0..self.n_ev() {
            if st.dest[i] == c as i32 && self.to_pool(st, i as i32, "disconnect") {
                recovered += 1;
            }
        }
        st.stats.recovered_on_disconnect += recovered;
        st.cache.release_all(c);
        st.not_ready &= !(1 << c);
        st.clients[c] = None;
        st.stats.disconnects += 1;
        self.info(format!("client {c} disconnected; {recovered} event buffer(s) recovered"));
    }

    /// A 16-byte message from client `c` on TCP: the release of a transition buffer.
    fn on_release(&self, st: &mut State, c: usize, m: Msg) {
        let (nev, i) = (self.n_ev() as i32, m.buffer_index);
        if i < nev || i >= nev + NTR as i32 {
            st.stats.bad_messages += 1;
            self.error(&format!("client {c}: TCP message with buffer index {i}, not a transition buffer ({nev} … {}); ignored", nev + NTR as i32 - 1));
            return;
        }
        let t = (i - nev) as usize;
        let bit = 1u32 << c;
        if st.cache.holders[t] & bit == 0 {
            st.stats.bad_messages += 1;
            self.error(&format!("client {c}: released transition buffer {i} it does not hold; ignored"));
            return;
        }
        st.cache.holders[t] &= !bit;
        if st.not_ready & bit != 0 && !st.cache.holds_any(c) {
            st.not_ready &= !bit;
            let next = st.cache.service[t] as u8 ^ 1;
            self.send_cached(st, c, next);
        }
    }

    fn task_loop(&self, mut wake_rx: UnixStream) {
        let mut buf = [0u8; 4096];
        while !self.stop.load(Ordering::SeqCst) {
            let snapshot: Vec<(usize, u64, RawFd)> = self
                .lock()
                .clients
                .iter()
                .enumerate()
                .filter_map(|(c, s)| s.as_ref().map(|s| (c, s.id, s.sock.as_raw_fd())))
                .collect();
            // Releases of event buffers (the return queue) are taken by whoever needs a buffer
            // (publish, wait_free_buffer): waking this thread for each would cost a context
            // switch per event. The queue holds every buffer, so it never fills.
            let mut fds = vec![libc::pollfd { fd: wake_rx.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
            fds.extend(snapshot.iter().map(|&(_, _, fd)| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }));
            if poll_fds(&mut fds, Duration::from_millis(200)) == 0 {
                continue;
            }
            if fds[0].revents != 0 {
                while matches!(wake_rx.read(&mut buf), Ok(n) if n > 0) {}
            }
            let mut st = self.lock();
            for (k, &(c, id, _)) in snapshot.iter().enumerate() {
                if fds[1 + k].revents == 0 || st.clients[c].as_ref().map(|s| s.id) != Some(id) {
                    continue;
                }
                loop {
                    let slot = st.clients[c].as_mut().unwrap();
                    match slot.sock.read(&mut buf) {
                        Ok(0) => {
                            self.disconnect(&mut st, c);
                            break;
                        }
                        Ok(n) => {
                            let mut msgs = Vec::new();
                            for &b in &buf[..n] {
                                slot.rbuf[slot.rlen] = b;
                                slot.rlen += 1;
                                if slot.rlen == MSG_SIZE {
                                    msgs.push(Msg::decode(&slot.rbuf));
                                    slot.rlen = 0;
                                }
                            }
                            for m in msgs {
                                self.on_release(&mut st, c, m);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => {
                            self.disconnect(&mut st, c);
                            break;
                        }
                    }
                }
            }
        }
    }

    fn discovery_loop(&self, listener: TcpListener) {
        let ad = Msg::discovery(self.port).encode();
        'advertise: while !self.stop.load(Ordering::SeqCst) {
            // A full queue (2 advertisements pending) is fine.
            if let Err(e) = self.discovery.try_send(&ad) {
                self.error(&e.to_string());
            }
            loop {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                let mut fds = [libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
                if poll_fds(&mut fds, Duration::from_millis(100)) == 0 {
                    continue;
                }
                match listener.accept() {
                    Ok((sock, _)) => {
                        self.add_client(sock);
                        let _ = (&self.wake_tx).write(&[1]);
                        continue 'advertise;
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(e) => {
                        self.error(&format!("accept on 127.0.0.1:{}: {e}", self.port));
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_limit_message_says_what_to_do() {
        let e = check_msg_max(16, 10, false).unwrap_err().to_string();
        assert!(e.contains("msg_max is 10") && e.contains("sysctl fs.mqueue.msg_max=16") && e.contains("at most 10 buffers"), "{e}");
        assert!(check_msg_max(16, 10, true).is_ok());
        assert!(check_msg_max(10, 10, false).is_ok());
    }
}
