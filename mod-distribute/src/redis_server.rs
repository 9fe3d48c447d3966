//! Starts a real, private `redis-server` process on a free loopback port.
//!
//! For tests, benchmarks, examples and local runs: each [`RedisServer`] has its
//! own port and data folder, and is killed when dropped. It never touches a
//! server already running on the machine (it never assumes port 6379).
//!
//! On Linux the server also dies when the process that started it dies, even
//! by SIGKILL (where `Drop` never runs): the kernel kills it
//! (`PR_SET_PDEATHSIG`; see `launch.rs` for why one long-lived thread spawns
//! every server). Elsewhere only `Drop` stops it.

mod launch;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mod_api::{Error, ErrorKind, Result};

/// A `redis-server` child process on `127.0.0.1:<port>`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

/// Spawns `cmd` so that the child dies with this process, however it dies
/// (Linux; elsewhere a plain spawn): for supervisors of Redis nodes, such
/// as the resilience layer's node agent.
pub fn spawn_tied(cmd: Command) -> std::io::Result<Child> {
    launch::spawn(cmd)
}

/// The `redis-server` binary: `$MODKIT_REDIS_SERVER`, else `redis-server` on `PATH`.
pub fn redis_server_binary() -> String {
    std::env::var("MODKIT_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl RedisServer {
    /// Starts a server with persistence off, on a free port.
    pub fn start() -> Result<RedisServer> {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--appendonly", "yes"]`).
    pub fn start_with_args(extra: &[&str]) -> Result<RedisServer> {
        // A port can be taken between probing and binding: try a few.
        let mut last = None;
        for _ in 0..5 {
            match Self::try_start(free_port()?, extra) {
                Ok(server) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::unavailable("redis-server did not start")))
    }

    /// Starts a server on `port` (to restart a killed one on the same address).
    pub fn start_on_port(port: u16, extra: &[&str]) -> Result<RedisServer> {
        Self::try_start(port, extra)
    }

    fn try_start(port: u16, extra: &[&str]) -> Result<RedisServer> {
        let dir = Self::dir_for(port)?;
        let port_text = port.to_string();
        let mut cmd = Command::new(redis_server_binary());
        cmd.args(["--port", &port_text, "--bind", "127.0.0.1", "--save", ""])
            .args([
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                // A replica's full sync starts at once, not after Redis 7's
                // default 5 s wait for more replicas to share it.
                "--repl-diskless-sync-delay",
                "0",
            ])
            .arg("--dir")
            .arg(&dir)
            .args(extra);
        Self::spawn(cmd, port, dir)
    }

    /// Starts a Redis Sentinel on a free port with the given `sentinel.conf`
    /// lines (e.g. `sentinel monitor m 127.0.0.1 7001 2`); for benchmarks
    /// that measure Sentinel beside modkit's controllers.
    pub fn start_sentinel(lines: &[String]) -> Result<RedisServer> {
        let port = free_port()?;
        let dir = Self::dir_for(port)?;
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n{}\n",
            dir.display(),
            lines.join("\n")
        );
        std::fs::write(&conf, text)?;
        let mut cmd = Command::new(redis_server_binary());
        cmd.arg(&conf).arg("--sentinel");
        Self::spawn(cmd, port, dir)
    }

    fn dir_for(port: u16) -> Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("modkit-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    fn spawn(mut cmd: Command, port: u16, dir: PathBuf) -> Result<RedisServer> {
        let binary = redis_server_binary();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = launch::spawn(cmd)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "cannot run {binary:?}: install redis-server (Debian: apt-get install redis-server) or set MODKIT_REDIS_SERVER"
                    ),
                )
                .with_source(e)
            })?;
        hold_dir(&dir);
        let mut server = RedisServer {
            child: Some(child),
            port,
            dir,
        };
        server.wait_ready(Duration::from_secs(10))?;
        tracing::debug!(port, "redis-server started");
        Ok(server)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::unavailable(format!(
                        "redis-server on port {} exited at start: {status}",
                        self.port
                    )));
                }
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(Error::timeout(format!(
            "redis-server on port {} not ready within {within:?}",
            self.port
        )))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the server, while it runs (after [`kill`](Self::kill): `None`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`: how the topology and `[ha] nodes` name it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts a server replicating (`--replicaof`) from the one on loopback
    /// port `primary`, and returns once the sync is done and the primary
    /// counts the replica online.
    pub fn start_replica_of(primary: u16) -> Result<RedisServer> {
        let primary_port = primary.to_string();
        let mut replica = Self::start_with_args(&["--replicaof", "127.0.0.1", &primary_port])?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            // Both sides: the replica linked, and the primary counts it online
            // (only then does `WAIT` on the primary ask it for acks).
            let online = format!("port={},state=online", replica.port);
            if raw_command(replica.port, "INFO replication").contains("master_link_status:up")
                && raw_command(primary, "INFO replication").contains(&online)
            {
                return Ok(replica);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        replica.kill();
        Err(Error::timeout(format!(
            "the replica of port {primary} did not link within 10 s"
        )))
    }

    /// Kills the process now (SIGKILL): what a crash looks like to clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

fn ping(port: u16) -> bool {
    // A server with a password answers NOAUTH: it is up all the same.
    let reply = raw_command(port, "PING");
    reply.starts_with("+PONG") || reply.starts_with("-NOAUTH")
}

/// The raw reply of the server on `port` to an inline `command` (empty if it
/// does not answer).
fn raw_command(port: u16, command: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(format!("{command}\r\n").as_bytes())
        .is_err()
    {
        return String::new();
    }
    let mut reply = vec![0u8; 8192];
    let n = stream.read(&mut reply).unwrap_or(0);
    String::from_utf8_lossy(&reply[..n]).into_owned()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if release_dir(&self.dir) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// How many live servers use each data folder: a server restarted on the
/// port of a killed one shares its folder (so persistence survives the
/// restart), and the old handle's drop must not delete it under the new one.
fn dirs_in_use() -> &'static Mutex<HashMap<PathBuf, usize>> {
    static DIRS: OnceLock<Mutex<HashMap<PathBuf, usize>>> = OnceLock::new();
    DIRS.get_or_init(Default::default)
}

fn hold_dir(dir: &Path) {
    let mut dirs = dirs_in_use().lock().unwrap_or_else(|e| e.into_inner());
    *dirs.entry(dir.to_owned()).or_default() += 1;
}

/// Whether `dir` is now unused (its last server gone).
fn release_dir(dir: &Path) -> bool {
    let mut dirs = dirs_in_use().lock().unwrap_or_else(|e| e.into_inner());
    match dirs.get_mut(dir) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        _ => {
            dirs.remove(dir);
            true
        }
    }
}
