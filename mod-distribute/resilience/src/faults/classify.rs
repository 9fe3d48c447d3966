//! The decision table: which kind of fault the evidence on one replica shows.
//! Pure, so that every row is a unit test.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::report::{LocalProbe, ProcState, ProcessReport};

/// The kinds of fault (seed 002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The host is lost: its agent is silent and its replicas do not answer.
    Host,
    /// The replica and its agent are alive by their own report, but
    /// observers cannot reach the replica.
    Network,
    /// The replica itself: its process is dead, or hung (stopped, or silent
    /// to its own agent's probe).
    Service,
}

impl FaultKind {
    /// `"host"`, `"network"` or `"service"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Host => "host",
            FaultKind::Network => "network",
            FaultKind::Service => "service",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The monitor's own health probe of a replica's advertised address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// Answered in this long.
    Ok(Duration),
    /// No answer within the deadline.
    Timeout,
    /// Not reachable (refused, reset).
    Failed(String),
}

/// What the replica's host agent says, if anything.
#[derive(Debug, Clone, Copy)]
pub enum AgentView<'a> {
    /// A fresh report of its host lists it, written after the replica
    /// stopped answering the monitor.
    Reports(&'a ProcessReport),
    /// Its host's latest report predates the failure: what it says (still
    /// running, answering) may be out of date.
    Stale,
    /// The host it was last reported on has no fresh report: its agent is
    /// silent (gone, or cut off from Redis).
    Silent,
    /// No agent ever reported it (a process the agents do not supervise).
    Unmanaged,
}

/// The verdict on one replica in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It answers the monitor.
    Healthy,
    /// A fault of this kind; `why` says which row of the table.
    Fault {
        /// The kind.
        kind: FaultKind,
        /// The evidence, for people.
        why: String,
    },
    /// It does not answer, and nothing tells why (no agent, or the agent has
    /// not probed it yet): reported, not acted on.
    Unexplained(String),
}

/// The decision table.
///
/// | monitor's probe | agent's report | process | agent's own probe | verdict |
/// |---|---|---|---|---|
/// | answers | any | any | any | healthy |
/// | fails | silent | – | – | **host** |
/// | fails | older than the failure | – | – | unexplained (next round) |
/// | fails | fresh | gone, zombie | – | **service** (dead) |
/// | fails | fresh | stopped | – | **service** (hung) |
/// | fails | fresh | running | timeout | **service** (hung) |
/// | fails | fresh | running | failed | **service** (not listening) |
/// | fails | fresh | running | answers | **network** |
/// | fails | fresh | running | not yet | unexplained |
/// | fails | none ever | – | – | unexplained |
pub fn classify(remote: &Probed, agent: AgentView<'_>) -> Verdict {
    let missing = match remote {
        Probed::Ok(_) => return Verdict::Healthy,
        Probed::Timeout => "no answer to the monitor's probe".to_owned(),
        Probed::Failed(e) => format!("the monitor's probe failed ({e})"),
    };
    let fault = |kind, why: &str| Verdict::Fault {
        kind,
        why: format!("{missing}; {why}"),
    };
    let process = match agent {
        AgentView::Silent => return fault(FaultKind::Host, "its host agent is silent"),
        AgentView::Unmanaged => {
            return Verdict::Unexplained(format!("{missing}; no host agent supervises it"))
        }
        AgentView::Stale => {
            return Verdict::Unexplained(format!("{missing}; its agent has not reported since"))
        }
        AgentView::Reports(process) => process,
    };
    match (process.state, &process.local_probe) {
        (ProcState::Gone | ProcState::Zombie, _) => {
            fault(FaultKind::Service, "its process is dead (agent)")
        }
        (ProcState::Stopped, _) => fault(FaultKind::Service, "its process is stopped (agent)"),
        (ProcState::Running, LocalProbe::Timeout) => fault(
            FaultKind::Service,
            "its process runs but does not answer its own agent (hung)",
        ),
        (ProcState::Running, LocalProbe::Failed { reason }) => fault(
            FaultKind::Service,
            &format!("its process runs but its agent cannot reach it either ({reason})"),
        ),
        (ProcState::Running, LocalProbe::Ok { .. }) => fault(
            FaultKind::Network,
            "it answers its own agent: observers cannot reach it",
        ),
        (ProcState::Running, LocalProbe::Unknown) => {
            Verdict::Unexplained(format!("{missing}; its agent has not probed it yet"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(state: ProcState, local_probe: LocalProbe) -> ProcessReport {
        ProcessReport {
            node: "orders-0".into(),
            process: "orders".into(),
            services: vec!["shop.Orders".into()],
            pid: Some(42),
            state,
            cpu_ticks: 0,
            rss_bytes: 0,
            restarts: 0,
            local_probe,
        }
    }

    fn kind(v: Verdict) -> Option<FaultKind> {
        match v {
            Verdict::Fault { kind, .. } => Some(kind),
            _ => None,
        }
    }

    #[test]
    fn every_row_of_the_table() {
        let ok = LocalProbe::Ok { ms: 1 };
        let failed = LocalProbe::Failed {
            reason: "refused".into(),
        };
        let down = Probed::Timeout;
        let running_ok = process(ProcState::Running, ok.clone());
        // Answers the monitor: healthy, whatever the agent says.
        for agent in [AgentView::Silent, AgentView::Unmanaged] {
            assert_eq!(
                classify(&Probed::Ok(Duration::from_millis(1)), agent),
                Verdict::Healthy
            );
        }
        let stopped = process(ProcState::Stopped, LocalProbe::Timeout);
        assert_eq!(
            classify(&Probed::Ok(Duration::ZERO), AgentView::Reports(&stopped)),
            Verdict::Healthy
        );
        assert_eq!(
            kind(classify(&down, AgentView::Silent)),
            Some(FaultKind::Host)
        );
        for state in [ProcState::Gone, ProcState::Zombie, ProcState::Stopped] {
            let p = process(state, ok.clone());
            assert_eq!(
                kind(classify(&down, AgentView::Reports(&p))),
                Some(FaultKind::Service),
                "{state:?}"
            );
        }
        for local in [LocalProbe::Timeout, failed] {
            let p = process(ProcState::Running, local);
            assert_eq!(
                kind(classify(&down, AgentView::Reports(&p))),
                Some(FaultKind::Service)
            );
        }
        let refused = Probed::Failed("connection refused".into());
        assert_eq!(
            kind(classify(&refused, AgentView::Reports(&running_ok))),
            Some(FaultKind::Network)
        );
        let unprobed = process(ProcState::Running, LocalProbe::Unknown);
        assert!(matches!(
            classify(&down, AgentView::Reports(&unprobed)),
            Verdict::Unexplained(_)
        ));
        for agent in [AgentView::Unmanaged, AgentView::Stale] {
            assert!(matches!(classify(&down, agent), Verdict::Unexplained(_)));
        }
    }
}
