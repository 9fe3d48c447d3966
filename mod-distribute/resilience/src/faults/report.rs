//! What host agents and the fault monitor tell each other, through the
//! deployment's Redis (under its prefix): each agent writes its
//! [`HostReport`] to [`report_key`] every report period (with a TTL of three
//! periods, so a silent agent's report disappears), and takes
//! [`Instruction`]s from the list [`inbox_key`] (the monitor `RPUSH`es, the
//! agent `BLPOP`s); their outcomes come back in its next reports.

use serde::{Deserialize, Serialize};

/// The key of host `host`'s latest report (a JSON [`HostReport`]).
pub fn report_key(prefix: &str, host: &str) -> String {
    format!("{prefix}:hosts:{host}")
}

/// The key of host `host`'s instruction list (JSON [`Instruction`]s).
pub fn inbox_key(prefix: &str, host: &str) -> String {
    format!("{prefix}:hosts:{host}:inbox")
}

/// A host agent's report on its host and the processes it supervises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// The host's label (the deployment file's `host`).
    pub host: String,
    /// When it was written: milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The 1-minute load average (`/proc/loadavg`).
    pub load1: f64,
    /// `MemAvailable` and `MemTotal` (`/proc/meminfo`), in bytes.
    pub mem_available_bytes: u64,
    /// See `mem_available_bytes`.
    pub mem_total_bytes: u64,
    /// Free bytes on the file system of the agent's working directory.
    pub disk_free_bytes: u64,
    /// One per replica the agent supervises.
    pub processes: Vec<ProcessReport>,
    /// The outcomes of the latest instructions (the last 16, oldest first).
    pub actions: Vec<ActionResult>,
}

/// One supervised replica, as its host agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    /// The replica's node id (`<process>-<i>`): the id of its registry instances.
    pub node: String,
    /// The deployment file's process name.
    pub process: String,
    /// The services it hosts.
    pub services: Vec<String>,
    /// Its pid, while one runs.
    pub pid: Option<u32>,
    /// Its state in `/proc/<pid>/stat`.
    pub state: ProcState,
    /// User + system CPU time, in clock ticks (`/proc/<pid>/stat`).
    pub cpu_ticks: u64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
    /// How often the supervisor restarted it.
    pub restarts: u32,
    /// The agent's own health probe of it, on the address it listens on
    /// (not the advertised one: from inside the host).
    pub local_probe: LocalProbe,
}

/// A process's state, from the state letter of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcState {
    /// `R`, `S`, `D`, `I`: alive.
    Running,
    /// `T`, `t`: stopped (SIGSTOP) or traced: alive but not running.
    Stopped,
    /// `Z`, `X`: exited, not yet reaped.
    Zombie,
    /// No such process (not started, exited, or between restarts).
    Gone,
}

/// The agent's local health probe of a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum LocalProbe {
    /// It answered, in this many milliseconds.
    Ok {
        /// Round trip.
        ms: u64,
    },
    /// No answer within the probe's deadline.
    Timeout,
    /// It could not be reached (nothing listening, connection reset).
    Failed {
        /// The error.
        reason: String,
    },
    /// Not probed yet (no registered address known for it).
    Unknown,
}

/// An instruction to a host agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "do")]
pub enum Instruction {
    /// Kill the replica (SIGKILL) and start it again at once.
    Restart {
        /// The instruction's id (echoed in its [`ActionResult`]).
        id: u64,
        /// The replica.
        node: String,
    },
    /// Stop the replica gracefully (SIGTERM, then SIGKILL after the grace)
    /// and do not restart it.
    Stop {
        /// The instruction's id.
        id: u64,
        /// The replica.
        node: String,
    },
    /// Start a new replica `node` of the deployment file's process `process`
    /// on this host (a migration target).
    Start {
        /// The instruction's id.
        id: u64,
        /// The process (its services, env and restart policy come from the file).
        process: String,
        /// The new replica's node id.
        node: String,
    },
}

impl Instruction {
    /// The instruction's id.
    pub fn id(&self) -> u64 {
        match self {
            Instruction::Restart { id, .. }
            | Instruction::Stop { id, .. }
            | Instruction::Start { id, .. } => *id,
        }
    }
}

/// What came of one instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The instruction's id.
    pub id: u64,
    /// The replica it concerned.
    pub node: String,
    /// Whether it did what it said (the process runs again, stopped, started).
    pub ok: bool,
    /// What happened, for people.
    pub detail: String,
    /// How long it took.
    pub took_ms: u64,
}
