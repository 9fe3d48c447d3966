//! What one voter sees of one Redis node: reachable or not (and how), its
//! role, replication id and offset — from `PING` and `INFO replication`.

use std::time::Duration;

use mod_api::{Error, Result};
use mod_distribute::redis::redis_error;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

/// How a node answered a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It answered.
    Up(Replication),
    /// Its host refused the connection: the process is gone (a host that is
    /// itself gone or cut off does not answer at all).
    Refused,
    /// No answer in time (a frozen process, a lost host, a partition).
    Silent,
}

/// Redis's default `replica-priority`.
pub const DEFAULT_PRIORITY: u32 = 100;

/// The fields of `INFO replication` a failover needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replication {
    /// `role:master`.
    pub master: bool,
    /// `master_replid`: the history this node is on.
    pub replid: String,
    /// `master_replid2`: the history it was on before its promotion.
    pub replid2: String,
    /// `master_repl_offset`: how far along it.
    pub offset: u64,
    /// `second_repl_offset` (−1 → `None`): one past where a promoted
    /// node's previous history ended.
    pub second_offset: Option<u64>,
    /// A replica's `master_host:master_port`.
    pub following: Option<String>,
    /// A replica's `master_link_status:up`.
    pub link_up: bool,
    /// A primary's replicas that are `state=online`, with their lag (s).
    pub online_replicas: Vec<(String, u64)>,
    /// A replica's `slave_priority` (`replica-priority`: lower is preferred,
    /// 0 never promoted; 100, Redis's default, when not reported).
    pub priority: u32,
}

impl Replication {
    /// Parses the text of `INFO replication`.
    pub fn parse(info: &str) -> Replication {
        let mut r = Replication {
            priority: DEFAULT_PRIORITY,
            ..Replication::default()
        };
        let (mut host, mut port) = (None, None);
        for line in info.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            match key {
                "role" => r.master = value == "master",
                "master_replid" => r.replid = value.to_owned(),
                "master_replid2" => r.replid2 = value.to_owned(),
                "master_repl_offset" => r.offset = value.parse().unwrap_or(0),
                "second_repl_offset" => r.second_offset = value.parse().ok(),
                "master_host" => host = Some(value.to_owned()),
                "master_port" => port = Some(value.to_owned()),
                "master_link_status" => r.link_up = value == "up",
                "slave_priority" => r.priority = value.parse().unwrap_or(DEFAULT_PRIORITY),
                k if k.starts_with("slave") && k[5..].bytes().all(|b| b.is_ascii_digit()) => {
                    // slave0:ip=127.0.0.1,port=7002,state=online,offset=42,lag=0
                    let field = |name: &str| {
                        value
                            .split(',')
                            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    };
                    if field("state") == Some("online") {
                        if let (Some(ip), Some(p)) = (field("ip"), field("port")) {
                            let lag = field("lag")
                                .and_then(|l| l.parse().ok())
                                .unwrap_or(u64::MAX);
                            r.online_replicas.push((format!("{ip}:{p}"), lag));
                        }
                    }
                }
                _ => {}
            }
        }
        if let (Some(h), Some(p)) = (host, port) {
            r.following = Some(format!("{h}:{p}"));
        }
        r
    }
}

/// One node, with the connection its probes and commands reuse.
pub struct Node {
    /// `host:port`.
    pub addr: String,
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    timeout: Duration,
}

impl Node {
    /// A node reached through `url` (scheme, credentials) at `addr`, whose
    /// every exchange is bounded by `timeout`.
    pub fn new(url: &str, addr: &str, timeout: Duration) -> Result<Node> {
        let url = mod_distribute::topology::url_for(url, addr);
        let client = redis::Client::open(url.as_str())
            .map_err(|e| Error::config(format!("[ha] nodes: cannot use {addr}")).with_source(e))?;
        Ok(Node {
            addr: addr.to_owned(),
            client,
            conn: None,
            timeout,
        })
    }

    /// `INFO replication`, classified as [`Probe`].
    pub async fn probe(&mut self) -> Probe {
        match self
            .query::<String>(redis::cmd("INFO").arg("replication"))
            .await
        {
            Ok(info) => Probe::Up(Replication::parse(&info)),
            Err(e) if refused(&e) => Probe::Refused,
            Err(_) => Probe::Silent,
        }
    }

    /// Runs `cmd` on the node (a new connection when the last one failed).
    pub async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                let conn = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await;
                self.conn.insert(conn.map_err(redis_error)?)
            }
        };
        let result = cmd.query_async(conn).await.map_err(redis_error);
        if result.as_ref().is_err_and(Error::is_retryable) {
            self.conn = None;
        }
        result
    }
}

/// Whether `err` is a refused connection (no process on the port).
fn refused(err: &Error) -> bool {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<redis::RedisError>())
        .is_some_and(|e| e.is_connection_refusal())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_primary_and_a_replica() {
        let primary = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=127.0.0.1,port=7002,state=online,offset=420,lag=0\r\n\
            slave1:ip=127.0.0.1,port=7003,state=wait_bgsave,offset=0,lag=0\r\n\
            master_replid:abc\r\nmaster_repl_offset:420\r\nsecond_repl_offset:-1\r\n";
        let p = Replication::parse(primary);
        assert!(p.master);
        assert_eq!(
            (p.replid.as_str(), p.offset, p.second_offset),
            ("abc", 420, None)
        );
        assert_eq!(p.online_replicas, vec![("127.0.0.1:7002".to_owned(), 0)]);
        let replica = "role:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7001\r\n\
            master_link_status:down\r\nslave_priority:10\r\nmaster_replid:abc\r\nmaster_repl_offset:400\r\nsecond_repl_offset:101\r\n";
        let r = Replication::parse(replica);
        assert!(!r.master && !r.link_up);
        assert_eq!(r.following.as_deref(), Some("127.0.0.1:7001"));
        assert_eq!((r.offset, r.second_offset), (400, Some(101)));
        assert_eq!((r.priority, p.priority), (10, DEFAULT_PRIORITY));
    }
}
