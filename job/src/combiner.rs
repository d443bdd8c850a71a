//! A combiner: a worker that, in the merge tree ([`crate::tree`]), merges the latest states of
//! its children with its own and sends one state per query up (the partial-then-final split
//! of an aggregate, with one more partial step in the middle).
//!
//! States are cumulative, so the latest one from each child replaces the one before and a
//! repeated or late message never double-counts; a lost child's last states still count.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use contract::{codec, Command};
use polars::prelude::*;
use query::{LiveMode, LiveQuery};

use crate::wire::{self, Member, StatePart, States};

struct CombinedQuery {
    sql: String,
    mode: LiveMode,
    generation: u64,
    plan: Option<LiveQuery>,
    columns: Vec<String>,
}

/// One child's latest states (the combiner's own count as a child's).
#[derive(Default)]
struct Held {
    members: Vec<Member>,
    parts: BTreeMap<String, (u64, Vec<String>, DataFrame)>,
}

pub struct Combiner {
    rank: i32,
    children: Vec<i32>,
    queries: BTreeMap<String, CombinedQuery>,
    held: BTreeMap<i32, Held>,
    /// Workers the collector found lost: nothing more will come from them.
    dead: BTreeSet<i32>,
    /// Queries with new states since the last message up.
    dirty: BTreeSet<String>,
    /// Members' counters or final flags changed since the last message up.
    members_changed: bool,
    /// A member's data ended: its final flag goes up at once (its rank may be leaving).
    urgent: bool,
    /// When the last message went up, and its size (large states go less often).
    sent: Option<(Instant, usize)>,
}

impl Combiner {
    pub fn new(rank: i32, children: Vec<i32>) -> Self {
        Combiner {
            rank,
            children,
            queries: BTreeMap::new(),
            held: BTreeMap::new(),
            dead: BTreeSet::new(),
            dirty: BTreeSet::new(),
            members_changed: false,
            urgent: false,
            sent: None,
        }
    }

    /// Follows the collector's commands like a worker: a new generation forgets older states.
    pub fn command(&mut self, cmd: &Command) {
        match cmd {
            Command::Set { name, sql, mode, generation, .. } => {
                let mode = LiveMode::parse(mode).unwrap_or_default();
                self.queries.insert(name.clone(), CombinedQuery { sql: sql.clone(), mode, generation: *generation, plan: None, columns: Vec::new() });
                self.renew(name, *generation);
            }
            Command::Reset { name, generation } => {
                let names: Vec<String> = self.queries.keys().filter(|n| name.as_ref().is_none_or(|x| x == *n)).cloned().collect();
                for n in names {
                    self.queries.get_mut(&n).unwrap().generation = *generation;
                    self.renew(&n, *generation);
                }
            }
            Command::Remove { name } => {
                self.queries.remove(name);
                for h in self.held.values_mut() {
                    h.parts.remove(name);
                }
                self.dirty.remove(name);
            }
            Command::Stop | Command::Resend { .. } | Command::Library { .. } => {}
        }
    }

    /// A query at `generation`: older states go; states a child already has for it count.
    fn renew(&mut self, name: &str, generation: u64) {
        let mut any = false;
        for h in self.held.values_mut() {
            if h.parts.get(name).is_some_and(|(g, _, _)| *g < generation) {
                h.parts.remove(name);
            }
            any |= h.parts.contains_key(name);
        }
        if any {
            self.dirty.insert(name.to_string());
        } else {
            self.dirty.remove(name);
        }
    }

    /// A [`States`] message from a child (or this rank's own worker, `from` = its rank).
    pub fn absorb(&mut self, from: i32, msg: &[u8]) -> Result<(), String> {
        let (states, mut body): (States, &[u8]) = wire::decode("states", msg).map_err(|e| e.to_string())?;
        let mut parts = Vec::with_capacity(states.parts.len());
        for p in states.parts {
            let bytes = body.get(..p.bytes).ok_or_else(|| format!("states from rank {from}: body shorter than its parts"))?;
            body = &body[p.bytes..];
            if bytes.is_empty() {
                continue;
            }
            let df = codec::decode(bytes).map_err(|e| format!("states from rank {from}, query {}: {e}", p.name))?;
            parts.push((p, df));
        }
        self.hold(from, states.members, parts);
        Ok(())
    }

    /// The latest states of `from` (this rank's own worker's come straight from it,
    /// [`crate::worker::Worker::take_state_frames`]).
    pub fn hold(&mut self, from: i32, members: Vec<Member>, parts: Vec<(StatePart, DataFrame)>) {
        let h = self.held.entry(from).or_default();
        let newly_final = members.iter().any(|m| m.last && !h.members.iter().any(|o| o.rank == m.rank && o.last));
        self.urgent |= newly_final;
        h.members = members;
        for (p, df) in parts {
            if self.queries.get(&p.name).is_none_or(|q| q.generation == p.generation) {
                self.dirty.insert(p.name.clone());
            }
            h.parts.insert(p.name, (p.generation, p.columns, df));
        }
        self.members_changed = true;
    }

    /// The collector's list of lost workers.
    pub fn set_dead(&mut self, dead: &BTreeSet<i32>) {
        if *dead != self.dead {
            self.urgent |= dead.iter().any(|r| !self.dead.contains(r) && self.covers(*r));
            self.dead = dead.clone();
            self.members_changed = true;
        }
    }

    fn covers(&self, rank: i32) -> bool {
        self.held.values().any(|h| h.members.iter().any(|m| m.rank == rank))
    }

    /// Every state this rank will combine is in: its own worker's and each child's are
    /// final, or the child is lost.
    pub fn complete(&self) -> bool {
        let last = |r: i32| self.dead.contains(&r) || self.held.get(&r).is_some_and(|h| !h.members.is_empty() && h.members.iter().all(|m| m.last || self.dead.contains(&m.rank)));
        last(self.rank) && self.children.iter().all(|&c| last(c))
    }

    /// Something should go up now: new states or counters, at most every `every` (longer
    /// for large states), or at once when a member's data ended.
    pub fn due(&self, every: Duration) -> bool {
        if self.dirty.is_empty() && !self.members_changed {
            return false;
        }
        self.urgent || self.sent.is_none_or(|(at, bytes)| at.elapsed() >= every.max(crate::worker::big_state_interval(bytes)))
    }

    /// Everything goes up again (the parent changed: the new one has nothing).
    pub fn resend_all(&mut self) {
        self.dirty = self.queries.keys().cloned().collect();
        self.members_changed = true;
        self.urgent = true;
    }

    /// The message up: every member's counters and, per query with new states, the merge of
    /// all states of its current generation. Also the queries whose merge failed, with why.
    pub fn report(&mut self) -> (Vec<u8>, Vec<(String, String)>) {
        let mut msg = States::default();
        for h in self.held.values() {
            for m in &h.members {
                msg.members.push(Member { last: m.last || self.dead.contains(&m.rank), ..m.clone() });
            }
        }
        // This rank and the children not heard from yet are members too, not final: without
        // them, a message after one child's last states would read as the whole group's last.
        for r in std::iter::once(self.rank).chain(self.children.iter().copied()) {
            if !self.held.contains_key(&r) {
                msg.members.push(Member { rank: r, events_read: 0, last: self.dead.contains(&r) });
            }
        }
        let mut bodies = Vec::new();
        let mut errors = Vec::new();
        for name in std::mem::take(&mut self.dirty) {
            let Some(q) = self.queries.get_mut(&name) else { continue };
            let mut inputs = Vec::new();
            for h in self.held.values() {
                if let Some((_, columns, df)) = h.parts.get(&name).filter(|(g, _, _)| *g == q.generation) {
                    if q.columns.is_empty() {
                        q.columns.clone_from(columns);
                    }
                    inputs.push(df.clone());
                }
            }
            if inputs.is_empty() {
                continue;
            }
            if q.plan.is_none() {
                match LiveQuery::plan_mode(&q.sql, &q.columns, q.mode) {
                    Ok(p) => q.plan = Some(p),
                    Err(e) => {
                        errors.push((name, e.to_string()));
                        continue;
                    }
                }
            }
            let merged = q.plan.as_ref().unwrap().merge(&inputs).map_err(|e| e.to_string()).and_then(|mut m| codec::encode(&mut m).map_err(|e| e.to_string()));
            match merged {
                Ok(b) => {
                    msg.parts.push(StatePart { name, generation: q.generation, columns: q.columns.clone(), bytes: b.len() });
                    bodies.push(b);
                }
                Err(e) => errors.push((name, format!("merging the states of ranks {:?}: {e}", self.held.keys().collect::<Vec<_>>()))),
            }
        }
        self.members_changed = false;
        self.urgent = false;
        let size = bodies.iter().map(|b| b.len()).sum();
        self.sent = Some((Instant::now(), size));
        let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
        (wire::encode(&msg, &refs), errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(generation: u64) -> Command {
        Command::Set { name: "s".into(), sql: "SELECT sum(x) AS t, count(*) AS n FROM events".into(), mode: String::new(), generation, save: None }
    }

    /// A worker's states message for events with x = `xs`.
    fn states(rank: i32, generation: u64, xs: &[f64], last: bool) -> Vec<u8> {
        let cols = vec!["x".to_string()];
        let plan = LiveQuery::plan_mode("SELECT sum(x) AS t, count(*) AS n FROM events", &cols, LiveMode::default()).unwrap();
        let mut part = plan.partial(&df!("x" => xs).unwrap()).unwrap();
        let b = codec::encode(&mut part).unwrap();
        let msg = States {
            members: vec![Member { rank, events_read: xs.len() as u64, last }],
            parts: vec![StatePart { name: "s".into(), generation, columns: cols, bytes: b.len() }],
        };
        wire::encode(&msg, &[&b])
    }

    fn result(msg: &[u8]) -> (States, (f64, u32)) {
        let (s, body): (States, &[u8]) = wire::decode("states", msg).unwrap();
        let cols = vec!["x".to_string()];
        let plan = LiveQuery::plan_mode("SELECT sum(x) AS t, count(*) AS n FROM events", &cols, LiveMode::default()).unwrap();
        let r = plan.finalize(&codec::decode(body).unwrap()).unwrap();
        let t = r.column("t").unwrap().f64().unwrap().get(0).unwrap();
        let n = r.column("n").unwrap().cast(&DataType::UInt32).unwrap().u32().unwrap().get(0).unwrap();
        (s, (t, n))
    }

    #[test]
    fn latest_states_of_every_child_merge_once_each() {
        let mut c = Combiner::new(2, vec![3, 4]);
        c.command(&set(1));
        c.absorb(2, &states(2, 1, &[1.0, 2.0], false)).unwrap();
        c.absorb(3, &states(3, 1, &[10.0], false)).unwrap();
        // A newer cumulative state replaces the child's last one; a state of a generation the
        // combiner has not heard of yet waits for it.
        c.absorb(3, &states(3, 1, &[10.0, 20.0], false)).unwrap();
        c.absorb(4, &states(4, 2, &[1000.0], false)).unwrap();
        assert!(c.due(Duration::ZERO));
        let (msg, errors) = c.report();
        assert!(errors.is_empty());
        let (s, (t, n)) = result(&msg);
        assert_eq!((t, n), (33.0, 4));
        assert_eq!(s.members.iter().map(|m| (m.rank, m.events_read)).collect::<Vec<_>>(), vec![(2, 2), (3, 2), (4, 1)]);
        assert!(!c.complete());
        // A reset to generation 2: rank 4's state counts now, the older ones are gone.
        c.command(&Command::Reset { name: None, generation: 2 });
        let (_, (t, n)) = result(&c.report().0);
        assert_eq!((t, n), (1000.0, 1));
        // Finals, and a lost child: complete, each member said last.
        c.absorb(2, &states(2, 2, &[5.0], true)).unwrap();
        c.absorb(4, &states(4, 2, &[1000.0, 1.0], true)).unwrap();
        assert!(c.urgent && !c.complete());
        c.set_dead(&[3].into());
        assert!(c.complete());
        let (s, (t, n)) = result(&c.report().0);
        assert_eq!((t, n), (1006.0, 3));
        assert!(s.members.iter().all(|m| m.last));
        assert!(!c.due(Duration::ZERO));
        let e = c.absorb(3, &states(3, 2, &[1.0], false)[..20]).unwrap_err();
        assert!(e.contains("states"), "{e}");
        // A child's last states before anything of the combiner's own: the group is not final.
        let mut c = Combiner::new(2, vec![3, 4]);
        c.command(&set(1));
        c.absorb(3, &states(3, 1, &[1.0], true)).unwrap();
        let (s, _) = result(&c.report().0);
        let members: Vec<(i32, bool)> = s.members.iter().map(|m| (m.rank, m.last)).collect();
        assert_eq!(members, vec![(3, true), (2, false), (4, false)]);
    }
}
