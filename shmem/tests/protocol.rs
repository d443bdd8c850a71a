//! The protocol over the real POSIX objects: a beamtime server and clients in this process,
//! raw clients that break the rules, and child processes (this test binary run again) that
//! are killed. Every test ends with no queue of its tag left in /dev/mqueue.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use shmem::msg::{discovery_name, event_queue_name, segment_name, Msg, MSG_SIZE, NTR};
use shmem::sys::{MessageQueue, ShmSegment};
use shmem::{Client, Error, Mode, Published, Received, Server, StopAt};
use xtc::TransitionId::{self, *};

const SEC: Duration = Duration::from_secs(1);

fn services(v: &[(TransitionId, u64)]) -> Vec<TransitionId> {
    v.iter().map(|x| x.0).collect()
}

fn events(v: &[(TransitionId, u64)]) -> Vec<u64> {
    v.iter().filter(|x| x.0 == L1Accept).map(|x| x.1).collect()
}

fn transitions(v: &[(TransitionId, u64)]) -> Vec<(TransitionId, u64)> {
    v.iter().copied().filter(|x| x.0 != L1Accept).collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn distributed_clients_split_the_events_and_all_get_every_transition() {
    let tag = tag("dist");
    let _c = Cleanup(tag.clone());
    let server = Server::start(config(&tag, 9, 3)).unwrap();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let t = tag.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&t, options(StopAt::EndRun)).unwrap();
                let got = collect(&mut c, 60 * SEC);
                (c.slot().unwrap(), got, c.stats())
            })
        })
        .collect();
    assert!(server.wait_for_clients(3, 10 * SEC));
    let mut ts = 1u64;
    let mut expected_tr = Vec::new();
    for s in RUN_START {
        assert!(matches!(server.publish(&tr(s, ts)).unwrap(), Published::Transition { clients: 3, .. }));
        expected_tr.push((s, ts));
        ts += 1;
    }
    let mut published = Vec::new();
    for _ in 0..600 {
        // The MEB asks for the next event only when a buffer is free: nothing is lost.
        assert!(server.wait_free_buffer(10 * SEC), "a buffer comes back");
        let p = server.publish(&l1(ts)).unwrap();
        assert!(matches!(p, Published::Queued { stolen: false, .. }), "{p:?}");
        published.push(ts);
        ts += 1;
    }
    // The clients take transitions first: let them empty their queues before the Disable.
    assert!(server.wait_drained(10 * SEC));
    for s in RUN_END {
        server.publish(&tr(s, ts)).unwrap();
        expected_tr.push((s, ts));
        ts += 1;
    }
    let mut union = Vec::new();
    let mut slots = Vec::new();
    for h in clients {
        let (slot, got, stats) = h.join().unwrap();
        slots.push(slot);
        assert_eq!(transitions(&got), expected_tr, "client {slot}: every transition, in order");
        let ev = events(&got);
        assert!(!ev.is_empty(), "client {slot} got events");
        assert!(ev.windows(2).all(|w| w[0] < w[1]), "client {slot}: events in order");
        assert_eq!(stats.events, ev.len() as u64);
        assert_eq!(stats.transitions, 7);
        assert_eq!((stats.stale_events, stats.protocol_errors, stats.release_failures), (0, 0, 0));
        union.extend(ev);
    }
    slots.sort();
    assert_eq!(slots, [0, 1, 2]);
    let n = union.len();
    union.sort();
    union.dedup();
    assert_eq!(union.len(), n, "each event went to one client only");
    assert_eq!(union, published, "together the clients got every event");
    let st = server.stats();
    assert_eq!((st.events_published, st.events_queued, st.stolen, st.dropped_no_buffer, st.dropped_queues_full), (600, 600, 0, 0, 0));
    assert_eq!(st.queued_per_queue.iter().sum::<u64>(), 600);
    assert_eq!(st.transitions_sent, 21);
    drop(server);
    check_clean(&tag);
}

#[test]
fn serial_mode_passes_every_event_through_each_client() {
    let tag = tag("serial");
    let _c = Cleanup(tag.clone());
    let mut cfg = config(&tag, 6, 3);
    cfg.mode = Mode::Serial;
    let server = Server::start(cfg).unwrap();
    assert_eq!(server.template().return_queue, 0);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let t = tag.clone();
            thread::spawn(move || {
                let mut c = Client::connect(&t, options(StopAt::EndRun)).unwrap();
                assert!(!c.first_message().unwrap().distributed());
                (c.slot().unwrap(), collect(&mut c, 60 * SEC), c.stats())
            })
        })
        .collect();
    assert!(server.wait_for_clients(3, 10 * SEC));
    let mut ts = 1;
    for s in RUN_START {
        server.publish(&tr(s, ts)).unwrap();
        ts += 1;
    }
    let mut published = Vec::new();
    for _ in 0..200 {
        // At most one more event in the chain, so queue 0 always has room: client 0 sees all.
        wait_until("buffers back", 10 * SEC, || server.free_buffers() >= 5);
        assert_eq!(server.publish(&l1(ts)).unwrap(), Published::Queued { queue: 0, stolen: false });
        published.push(ts);
        ts += 1;
    }
    assert!(server.wait_drained(10 * SEC));
    wait_until("every buffer back", 10 * SEC, || server.free_buffers() == 6);
    for s in RUN_END {
        server.publish(&tr(s, ts)).unwrap();
        ts += 1;
    }
    for h in clients {
        let (slot, got, stats) = h.join().unwrap();
        assert_eq!(events(&got), published, "client {slot} saw every event");
        assert_eq!(services(&transitions(&got)), [RUN_START.to_vec(), RUN_END.to_vec()].concat());
        assert_eq!(stats.release_failures, 0);
    }
    let st = server.stats();
    assert_eq!((st.events_queued, st.queued_per_queue[0], st.stolen), (200, 200, 0));
    drop(server);
    check_clean(&tag);
}

#[test]
fn late_joiners_get_the_cached_transitions_and_extra_clients_are_rejected() {
    let tag = tag("late");
    let _c = Cleanup(tag.clone());
    let server = Server::start(config(&tag, 4, 2)).unwrap();
    // A Reset header in every transition buffer at start.
    let seg = ShmSegment::open_readonly(&segment_name(&tag), (4 + NTR) * 4096).unwrap();
    for t in 0..NTR {
        let b = &seg.bytes()[(4 + t) * 4096..][..24];
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 0x0100_0000);
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 12);
        assert_eq!(&b[..8], &[0; 8]);
    }
    for (i, s) in [Configure, BeginRun, SlowUpdate, BeginStep, Enable].into_iter().enumerate() {
        server.publish(&tr(s, i as u64 + 1)).unwrap();
    }
    assert_eq!(server.cached(), RUN_START);
    let mut a = Client::connect(&tag, options(StopAt::Never)).unwrap();
    assert_eq!(a.slot(), Some(0));
    assert_eq!(drain(&mut a, Duration::from_millis(300)), [(Configure, 1), (BeginRun, 2), (BeginStep, 4), (Enable, 5)]);
    server.publish(&tr(SlowUpdate, 6)).unwrap();
    server.publish(&tr(Disable, 7)).unwrap();
    server.publish(&tr(EndStep, 8)).unwrap();
    assert_eq!(drain(&mut a, Duration::from_millis(300)), [(SlowUpdate, 6), (Disable, 7), (EndStep, 8)]);
    assert_eq!(server.cached(), [Configure, BeginRun]);
    let mut b = Client::connect(&tag, options(StopAt::Never)).unwrap();
    assert_eq!(b.slot(), Some(1));
    assert_eq!(drain(&mut b, Duration::from_millis(300)), [(Configure, 1), (BeginRun, 2)]);
    // Both slots taken: a third client is turned away.
    match Client::connect(&tag, options(StopAt::Never)) {
        Err(Error::Rejected { tag: t }) => assert_eq!(t, tag),
        Err(e) => panic!("expected a rejection, got {e}"),
        Ok(_) => panic!("expected a rejection"),
    }
    server.publish(&tr(BeginStep, 9)).unwrap();
    server.publish(&tr(Enable, 10)).unwrap();
    for c in [&mut a, &mut b] {
        assert_eq!(drain(c, Duration::from_millis(300)), [(BeginStep, 9), (Enable, 10)]);
    }
    // A slot freed by a disconnect is reused, and the newcomer starts from the cache.
    drop(a);
    wait_until("the disconnect", 5 * SEC, || server.clients() == 1);
    let mut c = Client::connect(&tag, options(StopAt::Never)).unwrap();
    assert_eq!(c.slot(), Some(0));
    assert_eq!(services(&drain(&mut c, Duration::from_millis(300))), RUN_START);
    assert_eq!(server.stats().clients_rejected, 1);
    drop((b, c, seg, server));
    check_clean(&tag);
}

#[test]
fn a_slow_client_loses_events_but_never_blocks_publish() {
    let tag = tag("slow");
    let _c = Cleanup(tag.clone());
    let server = Server::start(config(&tag, 4, 1)).unwrap();
    let mut slow = Client::connect(&tag, options(StopAt::Never)).unwrap();
    assert!(server.wait_for_clients(1, 5 * SEC));
    for (i, s) in RUN_START.into_iter().enumerate() {
        server.publish(&tr(s, i as u64)).unwrap();
    }
    let started = Instant::now();
    for i in 0..100u64 {
        let t = Instant::now();
        let p = server.publish(&l1(10 + i)).unwrap();
        assert!(t.elapsed() < Duration::from_millis(200), "publish took {:?}", t.elapsed());
        assert_eq!(p, Published::Queued { queue: 0, stolen: i >= 4 }, "event {i}");
    }
    assert!(started.elapsed() < 5 * SEC);
    let st = server.stats();
    assert_eq!((st.events_published, st.events_queued, st.stolen, st.dropped_no_buffer, st.dropped_queues_full), (100, 100, 96, 0, 0));
    // The slow client finds the newest 4 events (the older ones were stolen).
    let got = drain(&mut slow, Duration::from_millis(300));
    assert_eq!(services(&transitions(&got)), RUN_START);
    assert_eq!(events(&got), [106, 107, 108, 109]);
    assert_eq!(slow.stats().events, 4);
    // One period of 1 ns between timestamps: 106…109 has no gap.
    assert_eq!(slow.stats().missed_estimate, 0);
    drop((slow, server));
    check_clean(&tag);
}

#[test]
fn full_queues_drop_events_and_enable_reclaims_unread_ones() {
    let tag = tag("full");
    let _c = Cleanup(tag.clone());
    // 5 buffers, 2 queues of 2 messages: one buffer never fits a queue.
    let server = Server::start(config(&tag, 5, 2)).unwrap();
    let mut c = Client::connect(&tag, options(StopAt::Never)).unwrap();
    for (i, s) in RUN_START.into_iter().enumerate() {
        server.publish(&tr(s, i as u64)).unwrap();
    }
    let outcomes: Vec<Published> = (0..10).map(|i| server.publish(&l1(10 + i)).unwrap()).collect();
    assert_eq!(
        outcomes[..5],
        [
            Published::Queued { queue: 0, stolen: false },
            Published::Queued { queue: 1, stolen: false },
            Published::Queued { queue: 0, stolen: false },
            Published::Queued { queue: 1, stolen: false },
            Published::DroppedQueuesFull,
        ]
    );
    assert!(outcomes[5..].iter().all(|p| *p == Published::DroppedQueuesFull));
    let st = server.stats();
    assert_eq!((st.events_queued, st.dropped_queues_full, st.stolen, st.queued_per_queue.clone()), (4, 6, 0, vec![2, 2]));
    let got = drain(&mut c, Duration::from_millis(300));
    assert_eq!(events(&got), [10, 12]);
    // Queue 1 has no client: its two events come back at the next Enable.
    for (i, s) in [Disable, EndStep, BeginStep, Enable].into_iter().enumerate() {
        server.publish(&tr(s, 30 + i as u64)).unwrap();
    }
    assert_eq!(server.stats().reclaimed_at_enable, 2);
    assert_eq!(server.free_buffers(), 5);
    // 10 and 12 are 2 ns apart, the only gap seen, so that is taken as the period.
    assert_eq!(c.stats().missed_estimate, 0);
    drop((c, server));
    check_clean(&tag);
}

#[test]
fn a_slow_update_between_events_is_not_counted_as_a_missed_event() {
    let tag = tag("slowupd");
    let _c = Cleanup(tag.clone());
    let server = Server::start(config(&tag, 8, 1)).unwrap();
    let mut c = Client::connect(&tag, options(StopAt::Never)).unwrap();
    for (i, s) in RUN_START.into_iter().enumerate() {
        server.publish(&tr(s, i as u64)).unwrap();
    }
    // Pulses 1 ns apart: 10, 11, 12, a SlowUpdate on 13, 14, 15.
    for ts in [10, 11, 12] {
        server.publish(&l1(ts)).unwrap();
    }
    server.publish(&tr(SlowUpdate, 13)).unwrap();
    for ts in [14, 15] {
        server.publish(&l1(ts)).unwrap();
    }
    assert_eq!(events(&drain(&mut c, Duration::from_millis(300))), [10, 11, 12, 14, 15]);
    assert_eq!(c.stats().missed_estimate, 0, "the SlowUpdate took pulse 13");
    // Pulse 16 lost: one missed. A SlowUpdate after Disable takes no pulse.
    server.publish(&l1(17)).unwrap();
    assert_eq!(events(&drain(&mut c, Duration::from_millis(300))), [17]);
    server.publish(&tr(Disable, 18)).unwrap();
    server.publish(&tr(SlowUpdate, 30)).unwrap();
    drain(&mut c, Duration::from_millis(300));
    assert_eq!(c.stats().missed_estimate, 1);
    drop((c, server));
    check_clean(&tag);
}

/// A client that follows the protocol only as far as a test wants.
struct Raw {
    sock: TcpStream,
    first: Msg,
    evq: MessageQueue,
}

fn raw_connect(tag: &str) -> Raw {
    let d = MessageQueue::open(&discovery_name(tag), libc::O_RDONLY).unwrap();
    let port = Msg::decode(&d.receive_timeout(5 * SEC).unwrap().expect("an advertisement")).buffer_index;
    let mut sock = TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    let mut b = [0u8; MSG_SIZE];
    sock.read_exact(&mut b).unwrap();
    let first = Msg::decode(&b);
    let evq = MessageQueue::open(&event_queue_name(tag, first.buffer_index as usize), libc::O_RDONLY | libc::O_NONBLOCK).unwrap();
    Raw { sock, first, evq }
}

impl Raw {
    fn receive(&self, n: usize) -> Vec<i32> {
        let until = Instant::now() + 5 * SEC;
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < until {
            match self.evq.try_receive().unwrap() {
                Some(m) => got.push(Msg::decode(&m).buffer_index),
                None => thread::sleep(Duration::from_millis(2)),
            }
        }
        assert_eq!(got.len(), n, "received events");
        got
    }

    /// The transition buffers sent on TCP within `wait`.
    fn transitions(&mut self, wait: Duration) -> Vec<i32> {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; MSG_SIZE];
        while self.sock.read_exact(&mut b).is_ok() {
            got.push(Msg::decode(&b).buffer_index);
        }
        got
    }

    fn release(&mut self, index: i32) {
        self.sock.write_all(&self.first.with_index(index).encode()).unwrap();
    }
}

/// The service of the datagram in buffer `index`.
fn service_in(seg: &ShmSegment, size: usize, index: i32) -> TransitionId {
    let b = &seg.bytes()[index as usize * size..];
    TransitionId::from_env(u32::from_le_bytes(b[8..12].try_into().unwrap()))
}

#[test]
fn a_client_holding_an_enable_lags_and_catches_up_when_it_releases() {
    let tag = tag("lag");
    let _c = Cleanup(tag.clone());
    let server = Server::start(config(&tag, 2, 2)).unwrap();
    let seg = ShmSegment::open_readonly(&segment_name(&tag), (2 + NTR) * 4096).unwrap();
    let mut raw = raw_connect(&tag);
    let mut good = Client::connect(&tag, options(StopAt::Never)).unwrap();
    let svc = |v: &[i32]| v.iter().map(|&i| service_in(&seg, 4096, i)).collect::<Vec<_>>();
    let mut ts = 1;
    let mut good_got = Vec::new();
    // The well-behaved client reads (and so releases) each transition at once: a client that
    // still holds an Enable when a begin comes is "not ready", whether slow or stuck.
    let mut publish = |s: TransitionId| {
        server.publish(&tr(s, ts)).unwrap();
        ts += 1;
        good_got.extend(services(&drain(&mut good, Duration::from_millis(100))));
    };
    for s in RUN_START {
        publish(s);
    }
    let held = raw.transitions(Duration::from_millis(200));
    assert_eq!(svc(&held), RUN_START);
    publish(Disable);
    publish(EndStep);
    let ends = raw.transitions(Duration::from_millis(200));
    assert_eq!(svc(&ends), [Disable, EndStep], "ends reach a client that is still ready");
    // A begin while the raw client holds an Enable: it is not ready any more and gets only
    // older ends and SlowUpdates.
    publish(BeginStep);
    publish(Enable);
    publish(SlowUpdate);
    let slow = raw.transitions(Duration::from_millis(200));
    assert_eq!(svc(&slow), [SlowUpdate]);
    // The well-behaved client got everything.
    assert_eq!(good_got, [&RUN_START[..], &[Disable, EndStep, BeginStep, Enable, SlowUpdate]].concat());
    // Releasing everything, EndStep last: it re-enters the current step (BeginStep, Enable).
    for &i in held.iter().chain(&slow).chain(&ends[..1]) {
        raw.release(i);
    }
    assert!(raw.transitions(Duration::from_millis(200)).is_empty(), "still holding the EndStep: still lagging");
    raw.release(ends[1]);
    let caught_up = raw.transitions(Duration::from_millis(300));
    assert_eq!(svc(&caught_up), [BeginStep, Enable]);
    assert_eq!(server.stats().bad_messages, 0);
    drop((raw, good, seg, server));
    check_clean(&tag);
}

#[test]
fn held_buffers_exhaust_the_pool_and_bad_messages_are_refused() {
    let tag = tag("raw");
    let _c = Cleanup(tag.clone());
    let server = Server::start(config(&tag, 2, 1)).unwrap();
    let mut raw = raw_connect(&tag);
    assert_eq!(raw.first, server.template().with_index(0));
    assert_eq!((raw.first.number_of_buffers, raw.first.number_of_queues, raw.first.return_queue, raw.first.size_of_buffers), (20, 1, 1, 4096));
    server.publish(&tr(Configure, 1)).unwrap();
    server.publish(&l1(2)).unwrap();
    server.publish(&l1(3)).unwrap();
    let held = raw.receive(2);
    // Both buffers held, nothing queued to steal: the new event is lost.
    assert_eq!(server.publish(&l1(4)).unwrap(), Published::DroppedNoBuffer);
    assert_eq!(server.stats().dropped_no_buffer, 1);
    // Not a transition buffer on TCP; a transition buffer not held.
    raw.sock.write_all(&raw.first.with_index(999).encode()).unwrap();
    raw.sock.write_all(&raw.first.with_index(2 + 5).encode()).unwrap();
    wait_until("two bad messages", 5 * SEC, || server.stats().bad_messages == 2);
    // The same event buffer released twice.
    let ret = MessageQueue::open(&event_queue_name(&tag, 1), libc::O_WRONLY).unwrap();
    assert!(ret.send_expired(&raw.first.with_index(held[0]).encode()).unwrap());
    assert!(ret.send_expired(&raw.first.with_index(held[0]).encode()).unwrap());
    wait_until("the duplicate refused", 5 * SEC, || server.stats().bad_messages == 3);
    assert_eq!(server.free_buffers(), 1);
    assert!(matches!(server.publish(&l1(5)).unwrap(), Published::Queued { .. }));
    // Half a message, then the connection closes: buffers received or queued come back.
    raw.sock.write_all(&[0u8; 8]).unwrap();
    drop(raw);
    wait_until("the disconnect", 5 * SEC, || server.clients() == 0);
    let st = server.stats();
    assert_eq!((st.disconnects, st.recovered_on_disconnect), (1, 2));
    assert_eq!(server.free_buffers(), 2);
    // Datagrams the server cannot serve are errors; it goes on.
    let e = server.publish(&dg(L1Accept, 6, 5000)).unwrap_err().to_string();
    assert!(e.contains("does not fit its 4096-byte buffers"), "{e}");
    let e = server.publish(&[1, 2, 3]).unwrap_err().to_string();
    assert!(e.contains("not one whole datagram"), "{e}");
    assert_eq!(server.stats().too_large, 1);
    assert!(matches!(server.publish(&l1(7)).unwrap(), Published::Queued { .. }));
    drop((ret, server));
    check_clean(&tag);
}

#[test]
fn the_client_reports_bad_indices_and_datagrams_past_their_buffer() {
    let tag = tag("badidx");
    let _c = Cleanup(tag.clone());
    let server = Server::start(config(&tag, 4, 1)).unwrap();
    let mut c = Client::connect(&tag, options(StopAt::Never)).unwrap();
    server.publish(&tr(Configure, 1)).unwrap();
    assert_eq!(drain(&mut c, Duration::from_millis(200)), [(Configure, 1)]);
    let q = MessageQueue::open(&event_queue_name(&tag, 0), libc::O_WRONLY).unwrap();
    for bad in [200, -1, 22] {
        assert!(q.send_expired(&server.template().with_index(bad).encode()).unwrap());
        let e = c.next(SEC).unwrap_err().to_string();
        assert!(e.contains(&format!("buffer index {bad} is outside 0 … 21")) && e.contains("/PdsToMonitorEvQueue_"), "{e}");
    }
    // A buffer whose datagram claims more than the buffer holds.
    let seg = ShmSegment::create(&segment_name(&tag), (4 + NTR) * 4096).unwrap();
    let mut bogus = dg(L1Accept, 9, 0);
    bogus[20..24].copy_from_slice(&100_000u32.to_le_bytes());
    // SAFETY: buffer 3 is in the server's pool: nobody else writes it now.
    unsafe { seg.write(3 * 4096, &bogus) };
    assert!(q.send_expired(&server.template().with_index(3).encode()).unwrap());
    let e = c.next(SEC).unwrap_err().to_string();
    assert!(e.contains("buffer 3 (offset 12288)") && e.contains("100012 does not fit the 4096-byte buffer"), "{e}");
    assert_eq!(c.stats().protocol_errors, 4);
    // The client goes on.
    server.publish(&l1(10)).unwrap();
    assert_eq!(drain(&mut c, Duration::from_millis(200)), [(L1Accept, 10)]);
    drop((q, seg, c, server));
    check_clean(&tag);
}

// ---- child processes: this test binary run again with BT_SHMEM_CHILD set ----

fn spawn_child(mode: &str, tag: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env("BT_SHMEM_CHILD", mode)
        .env("BT_SHMEM_TAG", tag)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// The line the child prints once it is in place.
fn wait_line(out: &mut BufReader<std::process::ChildStdout>, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child ended before printing {prefix}");
        // libtest may have printed "test child_entry ... " on the same line.
        if let Some(at) = line.find(prefix) {
            return line[at..].trim().to_string();
        }
    }
}

fn kill(child: &mut Child, sig: i32) -> std::process::ExitStatus {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, sig) };
    child.wait().unwrap()
}

#[test]
fn child_entry() {
    let Ok(mode) = std::env::var("BT_SHMEM_CHILD") else { return };
    let tag = std::env::var("BT_SHMEM_TAG").unwrap();
    match mode.as_str() {
        "hold" => {
            let raw = raw_connect(&tag);
            let held = raw.receive(3);
            println!("HELD {}", held.len());
            std::io::stdout().flush().unwrap();
            // Keep the connection (and the buffers) until killed.
            thread::sleep(60 * SEC);
            drop(raw);
        }
        "server" => {
            let mut cfg = config(&tag, 4, 2);
            cfg.remove_segment_on_drop = false;
            let server = Server::start(cfg).unwrap();
            server.publish(&tr(Configure, 1)).unwrap();
            server.publish(&tr(BeginRun, 2)).unwrap();
            println!("READY {}", server.port());
            thread::sleep(60 * SEC);
            drop(server);
        }
        _ => panic!("unknown child mode {mode}"),
    }
    std::io::stdout().flush().unwrap();
    thread::sleep(60 * SEC);
}

#[test]
fn a_killed_clients_buffers_are_recovered() {
    let tag = tag("killc");
    let _c = Cleanup(tag.clone());
    let server = Server::start(config(&tag, 4, 1)).unwrap();
    let (mut child, mut out) = spawn_child("hold", &tag);
    assert!(server.wait_for_clients(1, 10 * SEC));
    server.publish(&tr(Configure, 1)).unwrap();
    for i in 0..3 {
        server.publish(&l1(2 + i)).unwrap();
    }
    assert_eq!(wait_line(&mut out, "HELD"), "HELD 3");
    assert_eq!(server.free_buffers(), 1);
    let status = kill(&mut child, libc::SIGKILL);
    assert!(!status.success());
    wait_until("the disconnect", 5 * SEC, || server.clients() == 0);
    assert_eq!(server.free_buffers(), 4);
    let st = server.stats();
    assert_eq!((st.disconnects, st.recovered_on_disconnect), (1, 3));
    drop(server);
    check_clean(&tag);
}

#[test]
fn clients_report_a_killed_server_and_reconnect_to_the_next() {
    let tag = tag("kills");
    let _c = Cleanup(tag.clone());
    let (mut child, mut out) = spawn_child("server", &tag);
    wait_line(&mut out, "READY");
    let mut c = Client::connect(&tag, options(StopAt::Never)).unwrap();
    assert_eq!(drain(&mut c, Duration::from_millis(300)), [(Configure, 1), (BeginRun, 2)]);
    kill(&mut child, libc::SIGKILL);
    let gone = match c.next(5 * SEC).unwrap() {
        Some(Received::ServerGone { reason }) => reason,
        other => panic!("expected the server to be gone, got {other:?}"),
    };
    assert!(gone.contains(&tag) && gone.contains("closed the connection"), "{gone}");
    assert!(!c.is_connected());
    // The dead server's last advertisement names a port that any new server (of any tag,
    // e.g. a parallel test's) may take; clean up as an operator would before waiting.
    MessageQueue::unlink(&discovery_name(&tag)).unwrap();
    // No server: nothing, quickly.
    let t = Instant::now();
    assert_eq!(c.next(Duration::from_millis(300)).unwrap(), None);
    assert!(t.elapsed() < 3 * SEC);
    // A new server with the same tag (it removes the killed one's queues first).
    let server = Server::start(config(&tag, 4, 2)).unwrap();
    let slot = loop {
        match c.next(SEC).unwrap() {
            Some(Received::Reconnected { slot }) => break slot,
            None => {}
            other => panic!("expected a reconnection, got {other:?}"),
        }
    };
    assert_eq!(slot, 0);
    // Nothing before the Configure is returned.
    server.publish(&tr(BeginRun, 10)).unwrap();
    server.publish(&tr(Configure, 11)).unwrap();
    server.publish(&tr(BeginRun, 12)).unwrap();
    assert_eq!(drain(&mut c, Duration::from_millis(300)), [(Configure, 11), (BeginRun, 12)]);
    let st = c.stats();
    assert_eq!((st.connects, st.disconnects, st.skipped_before_configure), (2, 1, 1));
    drop((c, server));
    check_clean(&tag);
}

#[test]
fn a_signalled_server_removes_its_queues() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let tag = tag("sig");
        let _c = Cleanup(tag.clone());
        let (mut child, mut out) = spawn_child("server", &tag);
        wait_line(&mut out, "READY");
        if shmem::sys::mqueue_mounted() {
            assert_eq!(shmem::sys::queues_of_tag(&tag).len(), 4, "2 client queues, the return queue, discovery");
        }
        let status = kill(&mut child, sig);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(sig), "the process still dies of the signal");
        check_clean(&tag);
    }
}

#[test]
fn limits_are_checked_with_clear_messages() {
    let tag = tag("limits");
    let _c = Cleanup(tag.clone());
    let check = |nev: usize, nq: usize, size: usize, want: &str| {
        let mut cfg = config(&tag, nev, nq);
        cfg.buffer_size = size;
        let e = match Server::start(cfg) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{nev} {nq} {size} accepted"),
        };
        assert!(e.contains(want), "{e}");
    };
    check(238, 4, 4096, "at most 237");
    check(40, 33, 4096, "1 to 32");
    check(2, 3, 4096, "nEv ≥ nQ");
    check(8, 1, 1 << 28, "28-bit");
    check(8, 1, 10, "24 to");
    let mut cfg = config("a/b", 8, 1);
    cfg.tag = "a/b".into();
    assert!(Server::start(cfg).err().unwrap().to_string().contains("without '/'"));
    check_clean(&tag);
}

#[test]
fn an_advertisement_naming_another_servers_port_is_not_trusted() {
    let (a, b) = (tag("adv_a"), tag("adv_b"));
    let (_ca, _cb) = (Cleanup(a.clone()), Cleanup(b.clone()));
    let server = Server::start(config(&a, 4, 1)).unwrap();
    // What a dead server of tag b leaves behind when its port now belongs to server a.
    let d = MessageQueue::create(&discovery_name(&b), 2, MSG_SIZE, true).unwrap();
    assert!(d.try_send(&Msg::discovery(server.port()).encode()).unwrap());
    let mut opts = options(StopAt::Never);
    opts.connect_timeout = Some(Duration::from_millis(500));
    let e = Client::connect(&b, opts).err().expect("no server of tag b").to_string();
    assert!(e.contains(&format!("no shared-memory server with tag '{b}'")) && e.contains("stale advertisement"), "{e}");
    assert!(e.contains(&segment_name(&b)), "{e}");
    wait_until("server a sees the visitor leave", 5 * SEC, || server.stats().disconnects == 1);
    drop(d);
    MessageQueue::unlink(&discovery_name(&b)).unwrap();
    drop(server);
    check_clean(&a);
    check_clean(&b);
}
