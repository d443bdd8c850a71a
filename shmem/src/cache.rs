//! The server's transition state (spec §6): 18 transition buffers with holder masks, the
//! cache stack of the DAQ's current state, and the not-ready rule.

use xtc::TransitionId;

use crate::msg::NTR;

/// What [`Cache::allocate`] did besides choosing a buffer, for the server's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A transition other than Configure with nothing cached: served, not cached.
    NotCached,
    /// A begin transition that skips a level (the reference aborts: "Irrecoverable").
    Irrecoverable { top: TransitionId },
}

#[derive(Clone, Debug)]
pub struct Cache {
    pub service: [TransitionId; NTR],
    pub holders: [u32; NTR],
    /// Buffer indices, oldest (Configure) first.
    pub stack: Vec<usize>,
    /// Every buffer not on the stack, in the order they were freed.
    pub free: Vec<usize>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache { service: [TransitionId::Reset; NTR], holders: [0; NTR], stack: Vec::new(), free: (0..NTR).collect() }
    }
}

impl Cache {
    fn top(&self) -> u8 {
        self.stack.last().map_or(TransitionId::Reset as u8, |&b| self.service[b] as u8)
    }

    fn pop(&mut self) -> Option<u8> {
        let b = self.stack.pop()?;
        self.free.push(b);
        Some(self.service[b] as u8)
    }

    /// Chooses the buffer for a new transition `id` and updates the stack (spec §6.2).
    /// `None`: no free buffer; the transition is skipped for shared memory.
    pub fn allocate(&mut self, id: TransitionId, not_ready: &mut u32, notes: &mut Vec<Note>) -> Option<usize> {
        use TransitionId::*;
        let top = self.top();
        let b = *self.free.iter().find(|&&b| self.holders[b] == 0)?;
        let n = id as u8;
        let mut push = false;
        if self.stack.is_empty() {
            if id == Configure {
                push = true;
            } else {
                notes.push(Note::NotCached);
            }
        } else if id == SlowUpdate {
        } else if n == top + 2 {
            push = true;
        } else if n == top + 1 {
            self.pop();
        } else if id == Disable {
            while !self.stack.is_empty() && self.top() > BeginStep as u8 {
                self.pop();
            }
        } else if n.is_multiple_of(2) {
            if n > top {
                // The reference aborts here. Serving and caching it keeps late joiners as close
                // to the DAQ's state as can be known.
                notes.push(Note::Irrecoverable { top: TransitionId::from_env((top as u32) << 24) });
            } else {
                while let Some(s) = self.pop() {
                    if s <= n {
                        break;
                    }
                }
            }
            push = true;
        } else {
            while !self.stack.is_empty() && n < self.top() + 3 {
                self.pop();
            }
        }
        if n.is_multiple_of(2) {
            for t in 0..NTR {
                if t != b && self.service[t] == Enable {
                    *not_ready |= self.holders[t];
                }
            }
        }
        if push {
            self.free.retain(|&x| x != b);
            self.stack.push(b);
        }
        Some(b)
    }

    /// Whether transition buffer `t` may go to client `c` now (spec §6.3).
    pub fn deliver_ok(&self, t: usize, c: usize, not_ready: u32) -> bool {
        let bit = 1u32 << c;
        if not_ready & bit == 0 {
            return true;
        }
        let last = (0..NTR)
            .filter(|&u| self.holders[u] & bit != 0 && (self.service[u] as u8) % 2 == 1)
            .map(|u| self.service[u] as u8)
            .min()
            .unwrap_or(13);
        let s = self.service[t] as u8;
        self.service[t] == TransitionId::SlowUpdate || (s % 2 == 1 && s < last)
    }

    pub fn holds_any(&self, c: usize) -> bool {
        self.holders.iter().any(|h| h & (1 << c) != 0)
    }

    pub fn release_all(&mut self, c: usize) {
        for h in &mut self.holders {
            *h &= !(1u32 << c);
        }
    }

    /// The services on the stack, oldest first.
    pub fn cached(&self) -> Vec<TransitionId> {
        self.stack.iter().map(|&b| self.service[b]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransitionId::*;

    /// Allocates and records the service, as the server does after copying.
    fn serve(c: &mut Cache, id: TransitionId, nr: &mut u32) -> Option<usize> {
        let mut notes = Vec::new();
        let b = c.allocate(id, nr, &mut notes)?;
        c.service[b] = id;
        Some(b)
    }

    #[test]
    fn a_run_builds_and_unwinds_the_stack() {
        let (mut c, mut nr) = (Cache::default(), 0);
        for id in [Configure, BeginRun, BeginStep, Enable] {
            serve(&mut c, id, &mut nr).unwrap();
        }
        assert_eq!(c.cached(), [Configure, BeginRun, BeginStep, Enable]);
        serve(&mut c, SlowUpdate, &mut nr);
        assert_eq!(c.cached().len(), 4);
        serve(&mut c, Disable, &mut nr);
        assert_eq!(c.cached(), [Configure, BeginRun, BeginStep]);
        serve(&mut c, EndStep, &mut nr);
        assert_eq!(c.cached(), [Configure, BeginRun]);
        serve(&mut c, BeginStep, &mut nr);
        serve(&mut c, Enable, &mut nr);
        // EndRun without Disable/EndStep: an unexpected end pops down to the Configure.
        serve(&mut c, EndRun, &mut nr);
        assert_eq!(c.cached(), [Configure]);
        serve(&mut c, Unconfigure, &mut nr);
        assert!(c.cached().is_empty());
    }

    #[test]
    fn unexpected_begin_and_irrecoverable() {
        let (mut c, mut nr) = (Cache::default(), 0);
        for id in [Configure, BeginRun, BeginStep, Enable] {
            serve(&mut c, id, &mut nr);
        }
        // A new BeginRun in the middle of a step replaces the old run.
        serve(&mut c, BeginRun, &mut nr);
        assert_eq!(c.cached(), [Configure, BeginRun]);
        // Enable right after BeginRun skips BeginStep: logged, served and cached.
        let mut notes = Vec::new();
        let b = c.allocate(Enable, &mut nr, &mut notes).unwrap();
        c.service[b] = Enable;
        assert_eq!(notes, [Note::Irrecoverable { top: BeginRun }]);
        assert_eq!(c.cached(), [Configure, BeginRun, Enable]);
        // Nothing cached: a BeginRun is served but not cached.
        let mut c = Cache::default();
        let mut notes = Vec::new();
        assert!(c.allocate(BeginRun, &mut nr, &mut notes).is_some());
        assert_eq!(notes, [Note::NotCached]);
        assert!(c.cached().is_empty());
    }

    #[test]
    fn held_buffers_are_not_reused_and_enable_holders_become_not_ready() {
        let (mut c, mut nr) = (Cache::default(), 0);
        let cfg = serve(&mut c, Configure, &mut nr).unwrap();
        serve(&mut c, BeginRun, &mut nr);
        serve(&mut c, BeginStep, &mut nr);
        let en = serve(&mut c, Enable, &mut nr).unwrap();
        c.holders[en] = 0b10; // client 1 still holds the Enable
        let dis = serve(&mut c, Disable, &mut nr).unwrap();
        assert_ne!(dis, en, "a held buffer is not reused");
        assert_eq!(nr, 0, "an end transition does not mark anyone");
        c.holders[dis] = 0b10;
        serve(&mut c, EndStep, &mut nr);
        let bs = serve(&mut c, BeginStep, &mut nr).unwrap();
        assert_eq!(nr, 0b10, "client 1 held an Enable when a begin came");
        // Client 1 (not ready) holds the Disable (9): it gets only older ends and SlowUpdates.
        assert!(!c.deliver_ok(bs, 1, nr));
        assert!(c.deliver_ok(bs, 0, nr));
        c.service[cfg] = Configure;
        let su = serve(&mut c, SlowUpdate, &mut nr).unwrap();
        assert!(c.deliver_ok(su, 1, nr));
        // Every buffer held: allocation fails (the transition is skipped).
        let mut c = Cache { holders: [1; NTR], ..Default::default() };
        assert_eq!(c.allocate(Configure, &mut nr, &mut Vec::new()), None);
    }
}
