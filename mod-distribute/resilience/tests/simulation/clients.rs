//! Writers that follow the committed topology: each keeps the highest epoch
//! it heard (pushed by every voter it reaches on each commit, polled every
//! 500 ms, and asked again at once after an error or a timeout), and writes
//! one new key at a time with `SET` + `WAIT 1`.

use super::world::{Ev, Party, Reply, World};
use super::Time;

const POLL: Time = 500;

pub struct Client {
    pub epoch: u64,
    pub primary: Option<usize>,
    /// The key in flight.
    pub op: Option<u64>,
}

impl World {
    fn think(&mut self) -> Time {
        self.rng.range(20, 120)
    }

    pub fn client_wake(&mut self, c: usize) {
        if self.clients[c].op.is_some() || self.now >= self.cfg.stop_writes_at {
            return;
        }
        let Some(node) = self.clients[c].primary else {
            let at = self.now + POLL;
            return self.schedule(at, Ev::ClientWake(c));
        };
        let epoch = self.clients[c].epoch;
        let key = self.hist.invoke(c, node, epoch, self.now);
        self.clients[c].op = Some(key);
        let (a, b) = (Party::Client(c), Party::Node(node));
        if self.reachable(a, b) {
            let at = self.now + self.delay(a, b);
            self.schedule(at, Ev::Write(node, c, key));
        }
        self.schedule(
            self.now + self.cfg.client_timeout,
            Ev::ClientTimeout(c, key),
        );
    }

    /// A reply (`None`: the client's timeout) for `key`.
    pub fn client_done(&mut self, c: usize, key: u64, reply: Option<Reply>) {
        if self.clients[c].op != Some(key) {
            return;
        }
        self.clients[c].op = None;
        let acked = matches!(reply, Some(Reply::Ok(n)) if n >= 1);
        if let Some(violation) = self.hist.complete(key, acked, self.now) {
            self.fail(violation);
        }
        if !matches!(reply, Some(Reply::Ok(_))) {
            // READONLY, NOREPLICAS or no answer: ask the controllers again.
            self.client_lookup(c);
        }
        let at = self.now + self.think();
        self.schedule(at, Ev::ClientWake(c));
    }

    /// The highest epoch among the voters `c` reaches.
    fn client_lookup(&mut self, c: usize) {
        let best = (0..self.voters.len())
            .filter(|&v| self.reachable(Party::Client(c), Party::Voter(v)))
            .map(|v| self.voters[v].state.topology.epoch)
            .max();
        if let Some(epoch) = best {
            self.client_learn(c, epoch);
        }
    }

    pub fn client_poll(&mut self, c: usize) {
        self.client_lookup(c);
        self.schedule(self.now + POLL, Ev::ClientPoll(c));
    }

    /// Only a higher epoch replaces the one held.
    pub fn client_learn(&mut self, c: usize, epoch: u64) {
        if epoch > self.clients[c].epoch {
            if let Some(&p) = self.topos.get(&epoch) {
                self.clients[c].epoch = epoch;
                self.clients[c].primary = Some(p);
            }
        }
    }
}
