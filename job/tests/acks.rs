//! Commands from the driver are acknowledged one by one, each ack naming its query: a refused
//! query's ack can never be read as another query's.

use std::time::{Duration, Instant};

use contract::{AckOutcome, Command, Hello, JobEndpoint, JobMessage, JobSpec};
use job::inproc::Emitter;
use job::{Collector, Frame};

#[test]
fn each_ack_names_its_query() {
    let ep = JobEndpoint::bind().unwrap();
    let mut spec = JobSpec::new("files=/nonexistent.xtc2");
    spec.connect = Some(ep.endpoint().to_string());
    let mut on_frame = |_: &Frame| {};
    let mut emitter = Emitter::new(&spec, &mut on_frame).unwrap();
    emitter.hello(&Hello::new(1, vec![1], &spec.source));
    assert!(matches!(ep.recv_timeout(Duration::from_secs(5)), Some(Ok(JobMessage::Hello(_)))));
    let set = |name: &str, sql: &str| Command::Set { name: name.into(), sql: sql.into(), mode: String::new(), generation: 0, save: None };
    ep.send(set("bad", "SELECT median(x) AS m FROM events"));
    ep.send(set("good", "SELECT count(*) AS n FROM events"));
    let mut collector = Collector::new(vec![1]);
    let mut acks = Vec::new();
    let t = Instant::now();
    while acks.len() < 2 && t.elapsed() < Duration::from_secs(10) {
        emitter.commands(&mut collector);
        if let Some(Ok(JobMessage::Ack(a))) = ep.recv_timeout(Duration::from_millis(20)) {
            acks.push(a);
        }
    }
    let [bad, good] = &acks[..] else { panic!("two acks expected: {acks:?}") };
    assert_eq!(bad.query.as_deref(), Some("bad"));
    assert!(matches!(&bad.outcome, AckOutcome::Rejected(e) if e.contains("median")), "{bad:?}");
    assert_eq!(good.query.as_deref(), Some("good"));
    assert!(matches!(&good.outcome, AckOutcome::Accepted(Command::Set { generation, .. }) if *generation > 0), "{good:?}");
    emitter.finish(&collector);
}
