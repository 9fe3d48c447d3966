//! What happens on and between the nodes: writes, the replication stream
//! (a replica pulls what reached its primary at least one delay ago),
//! acknowledgements, `PSYNC` handshakes, full resyncs, the controller's
//! commands, kills, SIGSTOP/SIGCONT (rules: `redis_model.rs`).

use super::redis_model::{Admin, Msg, Node, Slave, Waiter, NO_REPLID};
use super::world::{Ev, Party, Reply, World};
use super::Time;

const RECONNECT: Time = 1000;
const FULL_SYNC: Time = 100;
const PAUSE: Time = 30_000;

impl World {
    /// A message arrives at `node`: lost if it cannot be received, kept
    /// if the node is stopped, handled otherwise.
    pub fn deliver(&mut self, node: usize, msg: Msg) {
        let from = match &msg {
            Msg::Write { client, .. } => Party::Client(*client),
            Msg::Ack { replica, .. } | Msg::SlaveGone { replica } => Party::Node(*replica),
            Msg::Admin(_) => Party::Node(node),
        };
        if !self.node_gets(from, node) {
            return;
        }
        if self.nodes[node].stopped {
            self.nodes[node].inbox.push(msg);
            return;
        }
        self.handle(node, msg);
    }

    fn handle(&mut self, n: usize, msg: Msg) {
        match msg {
            Msg::Write { client, key } => self.exec_write(n, client, key),
            Msg::Ack { replica, offset } => {
                let now = self.now;
                if let Some(s) = self.nodes[n].slave(replica) {
                    s.ack_time = now;
                    s.ack_off = s.ack_off.max(offset);
                    self.release_waiters(n);
                }
            }
            Msg::SlaveGone { replica } => {
                self.nodes[n].slaves.retain(|s| s.node != replica);
                let now = self.now;
                self.nodes[n].refresh_good(now);
            }
            Msg::Admin(cmd) => self.admin(n, cmd),
        }
    }

    fn reply(&mut self, n: usize, client: usize, key: u64, r: Reply) {
        let (a, b) = (Party::Node(n), Party::Client(client));
        if self.reachable(a, b) {
            let at = self.now + self.delay(a, b);
            self.schedule(at, Ev::ClientReply(client, key, r));
        }
    }

    fn exec_write(&mut self, n: usize, client: usize, key: u64) {
        let now = self.now;
        let node = &self.nodes[n];
        if !node.primary {
            return self.reply(n, client, key, Reply::ReadOnly);
        }
        if node.paused(now) {
            // Blocked until the pause ends; the client gives up first
            // (model: the blocked write is dropped).
            return;
        }
        if node.noreplicas() {
            return self.reply(n, client, key, Reply::NoReplicas);
        }
        let node = &mut self.nodes[n];
        node.data.push((key, now));
        let offset = node.offset();
        node.waiters.push(Waiter {
            client,
            key,
            offset,
        });
        let stint = node.stint;
        self.hist.executed(key, n, stint, now);
        self.schedule(now + self.cfg.wait_timeout, Ev::WaitDeadline(n, key));
        self.feed_slaves(n);
    }

    /// Schedules a pull for every replica linked to `n`.
    pub fn feed_slaves(&mut self, n: usize) {
        for r in 0..self.nodes.len() {
            if self.nodes[r].master == Some(n) && self.nodes[r].link_up {
                let at = self.now + self.delay(Party::Node(n), Party::Node(r));
                self.schedule_pump(r, at);
            }
        }
    }

    pub fn schedule_pump(&mut self, r: usize, at: Time) {
        if self.nodes[r]
            .pump_at
            .is_some_and(|t| t <= at && t >= self.now)
        {
            return;
        }
        self.nodes[r].pump_at = Some(at);
        self.schedule(at, Ev::Pump(r));
    }

    fn release_waiters(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let mut done = Vec::new();
        node.waiters.retain(|w| {
            let acks = node.slaves.iter().filter(|s| s.ack_off >= w.offset).count() as u32;
            if acks >= 1 {
                done.push((w.client, w.key, acks));
                false
            } else {
                true
            }
        });
        for (client, key, acks) in done {
            self.reply(n, client, key, Reply::Ok(acks));
        }
    }

    pub fn wait_deadline(&mut self, n: usize, key: u64) {
        if self.nodes[n].stopped {
            // A frozen node answers nothing; its clients time out.
            return;
        }
        let node = &mut self.nodes[n];
        if let Some(i) = node.waiters.iter().position(|w| w.key == key) {
            let w = node.waiters.remove(i);
            self.reply(n, w.client, key, Reply::Ok(0));
        }
    }

    /// The replica `r` pulls from its primary what reached it a delay ago.
    pub fn pump(&mut self, r: usize) {
        if self.nodes[r].pump_at != Some(self.now) {
            return;
        }
        self.nodes[r].pump_at = None;
        let Some(p) = self.nodes[r].master else {
            return;
        };
        if !self.nodes[r].link_up || !self.nodes[r].running() {
            return;
        }
        let (a, b) = (Party::Node(p), Party::Node(r));
        if !self.nodes[p].running() || !self.reachable(a, b) {
            // TCP holds the bytes: retry (a dead primary's link broke).
            if self.nodes[p].alive || !self.nodes[p].host_up {
                self.schedule_pump(r, self.now + 100);
            }
            return;
        }
        if self.nodes[p].replid != self.nodes[r].link_replid {
            // Its primary changed history: the link is re-established.
            self.nodes[r].link_up = false;
            let at = self.now + self.delay(a, b);
            self.schedule(at, Ev::Handshake(r));
            return;
        }
        let d = self.delay(a, b);
        let from = self.nodes[r].data.len();
        let upto = self.now.saturating_sub(d);
        let pd = &self.nodes[p].data;
        let new: Vec<u64> = pd[from.min(pd.len())..]
            .iter()
            .take_while(|(_, at)| *at <= upto)
            .map(|(k, _)| *k)
            .collect();
        let rest = pd.get(from + new.len()).map(|(_, at)| *at + d);
        let now = self.now;
        if !new.is_empty() {
            self.nodes[r].data.extend(new.into_iter().map(|k| (k, now)));
            let off = self.nodes[r].offset();
            if !self.nodes[p].paused(now) {
                // The GETACK of a WAIT (a paused primary sends none).
                self.schedule(now + d, Ev::Ack(p, r, off));
            }
            self.feed_slaves(r);
        }
        if let Some(at) = rest {
            self.schedule_pump(r, at);
        }
    }

    /// The replica `r` connects to its primary and `PSYNC`s.
    pub fn handshake(&mut self, r: usize) {
        let Some(p) = self.nodes[r].master else {
            return;
        };
        if !self.nodes[r].running() || self.nodes[r].link_up || self.nodes[r].syncing.is_some() {
            return;
        }
        let p_node = &self.nodes[p];
        let nomasterlink = !p_node.primary && !p_node.link_up;
        if !self.node_gets(Party::Node(r), p) || p_node.stopped || nomasterlink {
            self.schedule(self.now + RECONNECT, Ev::Handshake(r));
            return;
        }
        let (replid, off) = (self.nodes[r].replid, self.nodes[r].offset());
        let d = self.delay(Party::Node(p), Party::Node(r));
        if self.nodes[p].partial_ok(replid, off) {
            let (pd, rd) = (&self.nodes[p].data, &self.nodes[r].data);
            if pd[..rd.len()].iter().zip(rd).any(|(a, b)| a.0 != b.0) {
                self.fail(format!(
                    "MODEL: partial resync of node {r} from {p} on a diverged history"
                ));
                return;
            }
            let new_replid = self.nodes[p].replid;
            let node = &mut self.nodes[r];
            if node.replid != new_replid {
                node.replid2 = node.replid;
                node.second_offset = Some(off + 1);
                node.replid = new_replid;
                self.drop_slaves(r);
            }
            self.link_online(r, p);
        } else {
            let id = self.next_sync;
            self.next_sync += 1;
            self.nodes[r].syncing = Some(id);
            let snap = self.nodes[p].offset();
            let replid = self.nodes[p].replid;
            self.schedule(
                self.now + 2 * d + FULL_SYNC,
                Ev::FullSyncDone(r, id, snap, replid),
            );
        }
    }

    fn link_online(&mut self, r: usize, p: usize) {
        let now = self.now;
        let replid = self.nodes[p].replid;
        let node = &mut self.nodes[r];
        node.link_up = true;
        node.link_replid = replid;
        let off = self.nodes[r].offset();
        let primary = &mut self.nodes[p];
        primary.slaves.retain(|s| s.node != r);
        primary.slaves.push(Slave {
            node: r,
            ack_time: now,
            ack_off: off,
        });
        primary.refresh_good(now);
        self.schedule_pump(r, now);
    }

    pub fn full_sync_done(&mut self, r: usize, id: u64, snap: u64, replid: u64) {
        if self.nodes[r].syncing != Some(id) {
            return;
        }
        self.nodes[r].syncing = None;
        let Some(p) = self.nodes[r].master else {
            return;
        };
        let ok = self.node_gets(Party::Node(r), p)
            && self.nodes[p].running()
            && self.nodes[r].running()
            && self.nodes[p].replid == replid
            && self.nodes[p].offset() >= snap;
        if !ok {
            self.schedule(self.now + RECONNECT, Ev::Handshake(r));
            return;
        }
        let now = self.now;
        let data: Vec<(u64, Time)> = self.nodes[p].data[..snap as usize]
            .iter()
            .map(|(k, _)| (*k, now))
            .collect();
        self.replace_data(r, data, false);
        let node = &mut self.nodes[r];
        node.replid = replid;
        node.replid2 = NO_REPLID;
        node.second_offset = None;
        self.drop_slaves(r);
        self.link_online(r, p);
    }

    /// Replaces a node's data, checking that no acknowledged write is gone
    /// from every node (`killed`: the data was destroyed by a fault).
    pub fn replace_data(&mut self, n: usize, data: Vec<(u64, Time)>, killed: bool) {
        let old = std::mem::replace(&mut self.nodes[n].data, data);
        let lost = self.hist.vanished(&old, &self.nodes);
        for key in lost {
            if killed {
                self.hist.destroyed += 1;
                self.hist.acked.remove(&key);
            } else {
                self.hist.lost += 1;
                self.fail(format!(
                    "acknowledged write {key} lost: node {n} discarded it in a full resync and no node holds it"
                ));
            }
        }
    }

    /// `n`'s replicas are disconnected (they re-`PSYNC` with it).
    pub fn drop_slaves(&mut self, n: usize) {
        let slaves: Vec<usize> = self.nodes[n].slaves.drain(..).map(|s| s.node).collect();
        let now = self.now;
        self.nodes[n].refresh_good(now);
        for s in 0..self.nodes.len() {
            let linked = self.nodes[s].master == Some(n) && self.nodes[s].link_up;
            if linked || slaves.contains(&s) && self.nodes[s].master == Some(n) {
                self.nodes[s].link_up = false;
                let at = now + self.delay(Party::Node(n), Party::Node(s));
                self.schedule(at, Ev::Handshake(s));
            }
        }
    }

    /// `r` leaves its primary: the primary sees the connection close.
    fn leave_master(&mut self, r: usize) {
        if let Some(p) = self.nodes[r].master {
            if self.nodes[p].slaves.iter().any(|s| s.node == r) {
                // The close is seen at once when it can be.
                self.deliver(p, Msg::SlaveGone { replica: r });
            }
        }
        let node = &mut self.nodes[r];
        node.link_up = false;
        node.syncing = None;
    }

    /// A controller command executed on `n`.
    pub fn admin(&mut self, n: usize, cmd: Admin) {
        let now = self.now;
        match cmd {
            Admin::ReplicaOf(target) => {
                let node = &self.nodes[n];
                if !node.primary && node.master == target && target.is_some() {
                    return;
                }
                self.leave_master(n);
                if self.nodes[n].primary {
                    self.nodes[n].primary = false;
                    self.drop_slaves(n);
                }
                // Blocked clients are disconnected (master → replica).
                self.nodes[n].waiters.clear();
                self.nodes[n].master = target;
                if target.is_some() {
                    self.schedule(now + self.base_delay, Ev::Handshake(n));
                }
            }
            Admin::NoOne => {
                if self.nodes[n].primary {
                    return;
                }
                self.leave_master(n);
                let id = self.new_replid();
                self.nodes[n].promote(id);
                self.drop_slaves(n);
                self.nodes[n].refresh_good(now);
            }
            Admin::MinReplicas(v) => {
                self.nodes[n].min_replicas = v;
                self.nodes[n].refresh_good(now);
            }
            Admin::Pause => self.nodes[n].paused_until = now + PAUSE,
            Admin::Unpause => self.nodes[n].paused_until = now,
            Admin::KillClients => self.nodes[n].waiters.clear(),
        }
    }

    /// Redis's once-a-second replication cron.
    pub fn cron(&mut self, n: usize) {
        self.schedule(self.now + 1000, Ev::NodeCron(n));
        if !self.nodes[n].running() {
            return;
        }
        let now = self.now;
        if self.nodes[n].primary {
            self.nodes[n].refresh_good(now);
        }
        if let (Some(p), true) = (self.nodes[n].master, self.nodes[n].link_up) {
            let (a, b) = (Party::Node(n), Party::Node(p));
            if self.reachable(a, b) {
                let off = self.nodes[n].offset();
                self.schedule(now + self.delay(a, b), Ev::Ack(p, n, off));
            }
        }
        // A closed replica connection is seen once the pair talks again.
        let gone: Vec<usize> = self.nodes[n]
            .slaves
            .iter()
            .map(|s| s.node)
            .filter(|&s| {
                let r = &self.nodes[s];
                let linked = r.alive && r.master == Some(n) && (r.link_up || r.syncing.is_some());
                !linked && (r.host_up && self.reachable(Party::Node(n), Party::Node(s)))
            })
            .collect();
        if !gone.is_empty() {
            self.nodes[n].slaves.retain(|s| !gone.contains(&s.node));
            self.nodes[n].refresh_good(now);
        }
    }

    /// `kill -9`; `refused`: the host stays up (connections refused).
    pub fn kill(&mut self, n: usize, refused: bool) {
        if !self.nodes[n].alive {
            return;
        }
        self.nodes[n].alive = false;
        self.nodes[n].host_up = refused;
        self.nodes[n].stopped = false;
        if refused {
            // Its peers see their connections close.
            if let Some(p) = self.nodes[n].master {
                self.deliver(p, Msg::SlaveGone { replica: n });
            }
            for s in 0..self.nodes.len() {
                if self.nodes[s].master == Some(n) && self.nodes[s].link_up {
                    self.nodes[s].link_up = false;
                    self.schedule(self.now + RECONNECT, Ev::Handshake(s));
                }
            }
        }
        self.replace_data(n, Vec::new(), true);
        let node = &mut self.nodes[n];
        node.waiters.clear();
        node.inbox.clear();
        node.slaves.clear();
    }

    /// The node agent starts `n` again, empty, as a replica of `master`.
    pub fn restart(&mut self, n: usize, master: Option<usize>) {
        let replid = self.new_replid();
        let stint = self.nodes[n].stint + 1;
        let mut node = Node::new(replid, false, master);
        node.stint = stint;
        node.min_replicas = self.cfg.min_replicas_to_write;
        node.max_lag_s = self.cfg.max_lag_s;
        self.nodes[n] = node;
        self.schedule(self.now + self.base_delay, Ev::Handshake(n));
    }

    /// SIGCONT: the node runs what reached it while stopped, in order.
    pub fn resume(&mut self, n: usize) {
        if !self.nodes[n].stopped {
            return;
        }
        self.nodes[n].stopped = false;
        let inbox = std::mem::take(&mut self.nodes[n].inbox);
        for msg in inbox {
            self.handle(n, msg);
        }
        let now = self.now;
        self.schedule(now, Ev::Handshake(n));
        if self.nodes[n].link_up {
            self.schedule_pump(n, now);
        }
        self.feed_slaves(n);
        let keys: Vec<u64> = self.nodes[n].waiters.iter().map(|w| w.key).collect();
        for key in keys {
            self.schedule(now + self.cfg.wait_timeout, Ev::WaitDeadline(n, key));
        }
    }
}
