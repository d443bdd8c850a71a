//! Queue cleanup on fatal signals (spec §1 "Lifetime"): a server registers the names of the
//! queues it created (and the path of its segment, `/dev/shm/…`, when it removes it); on
//! SIGINT, SIGTERM, SIGABRT, SIGSEGV (and SIGPIPE when it is not ignored) the handler unlinks
//! them, restores the previous action and re-raises, so the process still dies the way it
//! would have.
//!
//! The handler only loads atomics and calls `mq_unlink` or `unlink` (plain system calls), all
//! async-signal-safe. Names are leaked C strings: freeing one while a handler may read it
//! would be a use-after-free, and a server owns a few dozen bytes of them.

use std::ffi::CString;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Once;

const SLOTS: usize = 1024;
/// Registered names with this prefix are files (a segment), the others message queues.
const SHM_DIR: &[u8] = b"/dev/shm/";
const SIGNALS: [libc::c_int; 5] = [libc::SIGINT, libc::SIGTERM, libc::SIGABRT, libc::SIGSEGV, libc::SIGPIPE];

static NAMES: [AtomicPtr<libc::c_char>; SLOTS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
static mut PREVIOUS: [std::mem::MaybeUninit<libc::sigaction>; 5] = [const { std::mem::MaybeUninit::uninit() }; 5];
static INSTALL: Once = Once::new();

/// Registers queue names for unlinking on a fatal signal; returns their slots (for
/// [`unregister`]). Names that find no free slot are still unlinked by the server's drop.
pub fn register(names: &[String]) -> Vec<usize> {
    INSTALL.call_once(install);
    let mut slots = Vec::with_capacity(names.len());
    for name in names {
        let Ok(c) = CString::new(name.as_str()) else { continue };
        let p = c.into_raw();
        if let Some(i) = (0..SLOTS).find(|&i| NAMES[i].compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire).is_ok()) {
            slots.push(i);
        }
    }
    slots
}

/// Forgets slots (the server unlinked its queues itself).
pub fn unregister(slots: &[usize]) {
    for &i in slots {
        NAMES[i].store(std::ptr::null_mut(), Ordering::Release);
    }
}

fn install() {
    for (k, &sig) in SIGNALS.iter().enumerate() {
        // SAFETY: zeroed sigaction is valid; we read the current action first.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            // An ignored SIGPIPE (Rust's default) must stay ignored: sockets report EPIPE.
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            (*std::ptr::addr_of_mut!(PREVIOUS))[k] = std::mem::MaybeUninit::new(old);
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = handler as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(sig, &new, std::ptr::null_mut());
        }
    }
}

extern "C" fn handler(sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    for slot in &NAMES {
        let p = slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !p.is_null() {
            // SAFETY: p is a leaked, NUL-terminated C string; a file path is at least as long
            // as the prefix compared (else its NUL differs first).
            unsafe {
                if (0..SHM_DIR.len()).all(|i| *p.add(i) as u8 == SHM_DIR[i]) {
                    libc::unlink(p);
                } else {
                    libc::mq_unlink(p);
                }
            }
        }
    }
    let Some(k) = SIGNALS.iter().position(|&s| s == sig) else { return };
    // SAFETY: PREVIOUS[k] was initialised before this handler was installed for `sig`.
    unsafe {
        let old = (*std::ptr::addr_of!(PREVIOUS))[k].assume_init_ref();
        libc::sigaction(sig, old, std::ptr::null_mut());
        // A synchronous SIGSEGV re-faults on return and reaches the previous action; the
        // others are raised again (delivered once this handler returns).
        if sig != libc::SIGSEGV {
            libc::raise(sig);
        }
    }
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static CATCH: Once = Once::new();

extern "C" fn set_interrupted(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag a client loop checks (e.g. to print its counts
/// before it exits). Blocking calls return early (EINTR), so the loop sees it at once.
pub fn catch_interrupt() -> &'static std::sync::atomic::AtomicBool {
    CATCH.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: zeroed sigaction is valid; the handler only stores an atomic. No
            // SA_RESTART, so poll() and friends return EINTR.
            unsafe {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = set_interrupted as *const () as usize;
                libc::sigemptyset(&mut new.sa_mask);
                libc::sigaction(sig, &new, std::ptr::null_mut());
            }
        }
    });
    &INTERRUPTED
}
