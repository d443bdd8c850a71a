//! Small RAII wrappers over the POSIX objects of the protocol: [`MessageQueue`] and
//! [`ShmSegment`]. Every error names the object and carries the errno.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::msg::MSG_SIZE;

fn c_name(name: &str) -> Result<CString> {
    CString::new(name).map_err(|_| Error::Config(format!("object name {name:?} contains a NUL byte")))
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `CLOCK_REALTIME` now plus `d`, for the `mq_timed*` calls.
fn deadline(d: Duration) -> libc::timespec {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let nanos = now.tv_nsec as u64 + d.subsec_nanos() as u64;
    libc::timespec {
        tv_sec: now.tv_sec + d.as_secs() as libc::time_t + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as _,
    }
}

/// The attributes of an open queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAttr {
    pub maxmsg: i64,
    pub msgsize: i64,
    pub curmsgs: i64,
    pub nonblocking: bool,
}

/// A POSIX message queue descriptor, closed on drop (never unlinked by drop: the server
/// unlinks what it created, see [`MessageQueue::unlink`]).
#[derive(Debug)]
pub struct MessageQueue {
    name: String,
    mqd: libc::mqd_t,
}

impl MessageQueue {
    /// Creates (or re-opens) a queue read-write with `maxmsg` messages of `msgsize` bytes,
    /// mode 0666.
    pub fn create(name: &str, maxmsg: usize, msgsize: usize, nonblocking: bool) -> Result<Self> {
        let c = c_name(name)?;
        // SAFETY: zeroed is a valid mq_attr; the fields are set below.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = maxmsg as _;
        attr.mq_msgsize = msgsize as _;
        let flags = libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC | if nonblocking { libc::O_NONBLOCK } else { 0 };
        // SAFETY: valid C string and attr pointer; mode is passed as the variadic mode_t.
        let mqd = unsafe { libc::mq_open(c.as_ptr(), flags, 0o666 as libc::c_uint, &attr as *const libc::mq_attr) };
        if mqd == -1 {
            let e = io::Error::last_os_error();
            let msg = if e.raw_os_error() == Some(libc::EINVAL) {
                format!(
                    "{e} (maxmsg {maxmsg}, msgsize {msgsize}: above /proc/sys/fs/mqueue/msg_max = {} or msgsize_max?)",
                    read_proc_limit("msg_max").map_or("?".into(), |v| v.to_string())
                )
            } else {
                e.to_string()
            };
            return Err(Error::os_with("mq_open", name, io::Error::new(e.kind(), msg)));
        }
        // The process umask may have cleared bits; other users must be able to attach.
        // SAFETY: mqd is an open descriptor (a file descriptor on Linux).
        unsafe { libc::fchmod(mqd, 0o666) };
        Ok(MessageQueue { name: name.into(), mqd })
    }

    /// Opens an existing queue (`libc::O_RDONLY` or `libc::O_WRONLY`, optionally `O_NONBLOCK`).
    pub fn open(name: &str, flags: i32) -> Result<Self> {
        let c = c_name(name)?;
        // SAFETY: valid C string.
        let mqd = unsafe { libc::mq_open(c.as_ptr(), flags | libc::O_CLOEXEC) };
        if mqd == -1 {
            return Err(Error::os("mq_open", name));
        }
        Ok(MessageQueue { name: name.into(), mqd })
    }

    /// Opens an existing queue; `Ok(None)` when it does not exist (yet).
    pub fn open_if_exists(name: &str, flags: i32) -> Result<Option<Self>> {
        match Self::open(name, flags) {
            Ok(q) => Ok(Some(q)),
            Err(Error::Os { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a queue name; true when it existed.
    pub fn unlink(name: &str) -> Result<bool> {
        let c = c_name(name)?;
        // SAFETY: valid C string.
        if unsafe { libc::mq_unlink(c.as_ptr()) } == 0 {
            return Ok(true);
        }
        match errno() {
            libc::ENOENT => Ok(false),
            _ => Err(Error::os("mq_unlink", name)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The descriptor, pollable on Linux.
    pub fn fd(&self) -> RawFd {
        self.mqd
    }

    pub fn attr(&self) -> Result<QueueAttr> {
        // SAFETY: zeroed mq_attr is valid and filled by the call.
        let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
        if unsafe { libc::mq_getattr(self.mqd, &mut a) } != 0 {
            return Err(Error::os("mq_getattr", &self.name));
        }
        Ok(QueueAttr {
            maxmsg: a.mq_maxmsg as i64,
            msgsize: a.mq_msgsize as i64,
            curmsgs: a.mq_curmsgs as i64,
            nonblocking: a.mq_flags as i32 & libc::O_NONBLOCK != 0,
        })
    }

    /// Sends on a non-blocking queue: `Ok(false)` when it is full.
    pub fn try_send(&self, msg: &[u8; MSG_SIZE]) -> Result<bool> {
        // SAFETY: msg is MSG_SIZE valid bytes.
        if unsafe { libc::mq_send(self.mqd, msg.as_ptr().cast(), MSG_SIZE, 0) } == 0 {
            return Ok(true);
        }
        match errno() {
            libc::EAGAIN => Ok(false),
            _ => Err(Error::os("mq_send", &self.name)),
        }
    }

    /// Sends without ever blocking, also on a blocking descriptor: `mq_timedsend` with an
    /// absolute timeout that has already expired (spec §5.4). `Ok(false)` when full.
    pub fn send_expired(&self, msg: &[u8; MSG_SIZE]) -> Result<bool> {
        let past = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: msg is MSG_SIZE valid bytes; past is a valid timespec.
        if unsafe { libc::mq_timedsend(self.mqd, msg.as_ptr().cast(), MSG_SIZE, 0, &past) } == 0 {
            return Ok(true);
        }
        match errno() {
            libc::EAGAIN | libc::ETIMEDOUT => Ok(false),
            _ => Err(Error::os("mq_timedsend", &self.name)),
        }
    }

    /// Receives from a non-blocking queue: `Ok(None)` when it is empty.
    pub fn try_receive(&self) -> Result<Option<[u8; MSG_SIZE]>> {
        let mut buf = [0u8; MSG_SIZE];
        // SAFETY: buf has MSG_SIZE bytes; a queue with a larger msgsize fails with EMSGSIZE.
        let n = unsafe { libc::mq_receive(self.mqd, buf.as_mut_ptr().cast(), MSG_SIZE, std::ptr::null_mut()) };
        if n >= 0 {
            return self.whole(n, buf).map(Some);
        }
        match errno() {
            libc::EAGAIN => Ok(None),
            _ => Err(Error::os("mq_receive", &self.name)),
        }
    }

    /// Waits up to `timeout` for a message: `Ok(None)` when none came.
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Option<[u8; MSG_SIZE]>> {
        let mut buf = [0u8; MSG_SIZE];
        let until = deadline(timeout);
        loop {
            // SAFETY: as in try_receive; `until` is a valid timespec.
            let n = unsafe { libc::mq_timedreceive(self.mqd, buf.as_mut_ptr().cast(), MSG_SIZE, std::ptr::null_mut(), &until) };
            if n >= 0 {
                return self.whole(n, buf).map(Some);
            }
            match errno() {
                libc::ETIMEDOUT | libc::EAGAIN => return Ok(None),
                libc::EINTR => continue,
                _ => return Err(Error::os("mq_timedreceive", &self.name)),
            }
        }
    }

    fn whole(&self, n: isize, buf: [u8; MSG_SIZE]) -> Result<[u8; MSG_SIZE]> {
        if n as usize != MSG_SIZE {
            return Err(Error::protocol(&self.name, format!("a {n}-byte message; the protocol's messages have 16 bytes")));
        }
        Ok(buf)
    }

    /// Receives every message queued now.
    pub fn drain(&self) -> Result<Vec<[u8; MSG_SIZE]>> {
        let mut out = Vec::new();
        while let Some(m) = self.try_receive()? {
            out.push(m);
        }
        Ok(out)
    }
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        // SAFETY: mqd is owned and open.
        unsafe { libc::mq_close(self.mqd) };
    }
}

/// A mapped POSIX shared-memory segment, unmapped on drop (the name stays: spec §1).
#[derive(Debug)]
pub struct ShmSegment {
    name: String,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; who writes where is decided by the protocol
// (a buffer has one owner at a time), not by Rust references.
unsafe impl Send for ShmSegment {}
unsafe impl Sync for ShmSegment {}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// `len` rounded up to the page size.
pub fn page_round(len: usize) -> usize {
    len.div_ceil(page_size()) * page_size()
}

impl ShmSegment {
    /// Creates or reuses the segment read-write, mode 0666, sized to `len` rounded up to the
    /// page size.
    pub fn create(name: &str, len: usize) -> Result<Self> {
        let c = c_name(name)?;
        let len = page_round(len);
        // SAFETY: valid C string.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC, 0o666 as libc::mode_t) };
        if fd < 0 {
            return Err(Error::os("shm_open", name));
        }
        let close = |e: Error| {
            // SAFETY: fd is open and ours.
            unsafe { libc::close(fd) };
            e
        };
        // SAFETY: fd is open.
        unsafe { libc::fchmod(fd, 0o666) };
        if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
            let e = io::Error::last_os_error();
            return Err(close(Error::os_with("ftruncate", name, io::Error::new(e.kind(), format!("{e} (resizing to {len} bytes)")))));
        }
        // SAFETY: fd is open and at least len bytes long.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(close(Error::os("mmap", name)));
        }
        // SAFETY: fd is ours; the mapping outlives it.
        unsafe { libc::close(fd) };
        Ok(ShmSegment { name: name.into(), ptr: ptr.cast(), len })
    }

    /// Maps an existing segment read-only: `len` bytes rounded up to the page size. A segment
    /// smaller than that is an error (touching a page past its end would raise SIGBUS).
    pub fn open_readonly(name: &str, len: usize) -> Result<Self> {
        let c = c_name(name)?;
        let len = page_round(len);
        // SAFETY: valid C string.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::os("shm_open", name));
        }
        // SAFETY: zeroed stat is valid and filled by fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::fstat(fd, &mut st) };
        let result = if r != 0 {
            Err(Error::os("fstat", name))
        } else if (st.st_size as u64) < len as u64 {
            Err(Error::protocol(name, format!("the segment has {} bytes, fewer than the {len} the server announced", st.st_size)))
        } else {
            // SAFETY: fd is open and at least len bytes long.
            let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
            if ptr == libc::MAP_FAILED { Err(Error::os("mmap", name)) } else { Ok(ShmSegment { name: name.into(), ptr: ptr.cast(), len }) }
        };
        // SAFETY: fd is ours; the mapping outlives it.
        unsafe { libc::close(fd) };
        result
    }

    /// Removes a segment name; true when it existed.
    pub fn unlink(name: &str) -> Result<bool> {
        let c = c_name(name)?;
        // SAFETY: valid C string.
        if unsafe { libc::shm_unlink(c.as_ptr()) } == 0 {
            return Ok(true);
        }
        match errno() {
            libc::ENOENT => Ok(false),
            _ => Err(Error::os("shm_unlink", name)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes. The server writes a buffer only while no client owns it, so a
    /// buffer read through this slice is stable while it is owned by the reader.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is mapped for the lifetime of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Copies `data` to `offset` of a read-write mapping.
    ///
    /// # Safety
    /// The mapping must be writable, `offset + data.len() <= len()`, and no other thread may
    /// write the same range concurrently.
    pub unsafe fn write(&self, offset: usize, data: &[u8]) {
        debug_assert!(offset + data.len() <= self.len);
        // SAFETY: per the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) };
    }
}

impl Drop for ShmSegment {
    fn drop(&mut self) {
        // SAFETY: ptr/len is our mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A value from `/proc/sys/fs/mqueue/<name>`.
pub fn read_proc_limit(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/fs/mqueue/{name}")).ok()?.trim().parse().ok()
}

/// Whether this process may exceed the mqueue limits (root or CAP_SYS_RESOURCE).
pub fn may_exceed_mqueue_limits() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    // CapEff bit 24 = CAP_SYS_RESOURCE.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// Whether `/dev/mqueue` is a mounted mqueue file system (where queues can be listed).
pub fn mqueue_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some("/dev/mqueue")))
}

/// The queue names of `tag` present in `/dev/mqueue` (needs it mounted).
pub fn queues_of_tag(tag: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/dev/mqueue") else { return Vec::new() };
    let mut v: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix("PdsFromMonitorDiscovery_").is_some_and(|t| t == tag)
                || n.strip_prefix("PdsToMonitorEvQueue_").and_then(|r| r.rsplit_once('_')).is_some_and(|(t, i)| t == tag && i.parse::<u32>().is_ok())
                || n.strip_prefix("PdsRequestQueue_").is_some_and(|t| t == tag)
                || n.strip_prefix("PdsShuffleQueue_").is_some_and(|t| t == tag)
        })
        .map(|n| format!("/{n}"))
        .collect();
    v.sort();
    v
}
