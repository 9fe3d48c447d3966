//! `[invoke]`: deadlines, retries, balancing, outlier ejection, and which
//! services a process hosts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Invocation settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvokeConfig {
    /// Default deadline of a remote call.
    #[serde(with = "super::duration")]
    pub timeout: Duration,
    /// Services this process serves (hosts): it registers itself as their
    /// instance, and calls the others through the registry.
    ///
    /// `Some([])` (`MODKIT_HOST=`) hosts nothing: a pure caller. `["*"]`
    /// (`MODKIT_HOST=*`) hosts every service it provides. `None` (unset) also
    /// hosts every service it provides, but a distributed node then logs a
    /// WARN at start with the fix, because a caller that forgets the setting
    /// silently becomes a host. A name that the process never provides is a
    /// `Config` error at the readiness check (`Container::check_hosting`).
    pub host: Option<Vec<String>>,
    /// Call services hosted in this process directly, without the network.
    pub colocate: bool,
    /// How a client picks among a service's `Up` instances.
    pub balance: Balance,
    /// How many other instances an idempotent call (or one that never left the
    /// client) is retried on after a transport failure.
    pub retries: u32,
    /// When a client stops sending calls to an instance that keeps failing
    /// (`[invoke.outlier]`).
    pub outlier: OutlierConfig,
    /// The site (data centre, zone) this process runs in. Its instances carry
    /// it (metadata `site`), and its calls go to instances of the same site,
    /// to another site's only when none of its own is `Up` and answering; a
    /// call that failed on every instance of its own site is retried there
    /// too. Unset: no preference (every instance alike).
    pub site: Option<String>,
}

/// Outlier ejection (`[invoke.outlier]`), Envoy-style: an instance whose
/// calls keep failing is left out of balancing for a while, so a killed or
/// frozen instance stops costing callers before its lease runs out or the
/// registry marks it.
///
/// A refused or failed connection ejects at once (the process is not there);
/// other transport failures (a connection lost mid-call) and timeouts eject
/// after `consecutive_failures` in a row with no success between. An ejection
/// lasts `base_ejection` times the number of times the instance was ejected
/// in a row (capped at `max_ejection`); then the client sends it the RPC
/// server's built-in health probe (deadline `probe_timeout`): an answer
/// brings it back into balancing, none ejects it again. An instance that
/// serves without an ejection for `max_ejection` starts again from one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failures in a row (transport failures or timeouts) that eject an
    /// instance; 0 turns ejection off (a failed instance stays in balancing).
    pub consecutive_failures: u32,
    /// How long the first ejection lasts.
    #[serde(with = "super::duration")]
    pub base_ejection: Duration,
    /// The longest an ejection lasts.
    #[serde(with = "super::duration")]
    pub max_ejection: Duration,
    /// The most instances of a service ejected at once, in percent of its
    /// `Up` instances (at least one, never the last one left).
    pub max_ejected_percent: u8,
    /// Deadline of the health probe that ends an ejection.
    #[serde(with = "super::duration")]
    pub probe_timeout: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(2),
            max_ejection: Duration::from_secs(30),
            max_ejected_percent: 50,
            probe_timeout: Duration::from_millis(500),
        }
    }
}

impl OutlierConfig {
    /// Whether outlier ejection is on.
    pub fn enabled(&self) -> bool {
        self.consecutive_failures > 0
    }

    /// How many of `up` instances may be ejected at once.
    pub fn max_ejected(&self, up: usize) -> usize {
        let share = up * usize::from(self.max_ejected_percent.min(100)) / 100;
        share.max(1).min(up.saturating_sub(1))
    }

    /// How long the `nth` ejection in a row (from 1) lasts.
    pub fn ejection(&self, nth: u32) -> Duration {
        self.base_ejection
            .saturating_mul(nth.max(1))
            .min(self.max_ejection)
    }
}

/// Load-balancing policy of remote calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each instance in turn.
    #[default]
    RoundRobin,
    /// The instance with the fewest calls in flight from this process.
    LeastInFlight,
}

impl Default for InvokeConfig {
    fn default() -> Self {
        InvokeConfig {
            timeout: Duration::from_secs(5),
            host: None,
            colocate: true,
            balance: Balance::RoundRobin,
            retries: 2,
            outlier: OutlierConfig::default(),
            site: None,
        }
    }
}

impl InvokeConfig {
    /// Whether this process hosts `service`.
    pub fn hosts(&self, service: &str) -> bool {
        self.host
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == service || s == HOST_ALL))
    }

    /// Checks the host list against the services this process `provided`: a
    /// listed name that is none of them is a [`Config`](crate::ErrorKind::Config)
    /// error naming the known services (and the likely one, for a name given
    /// without its prefix or in another case).
    pub fn check_hosts(&self, provided: &[&str]) -> Result<()> {
        let Some(list) = &self.host else {
            return Ok(());
        };
        let unknown: Vec<&str> = list
            .iter()
            .map(String::as_str)
            .filter(|name| *name != HOST_ALL && !provided.contains(name))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut message = format!(
            "invoke.host (MODKIT_HOST) names {} that this process never provides: {}; \
             the services it provides are: {}",
            if unknown.len() == 1 {
                "a service"
            } else {
                "services"
            },
            unknown.join(", "),
            if provided.is_empty() {
                "none".to_owned()
            } else {
                provided.join(", ")
            },
        );
        for name in &unknown {
            if let Some(like) = provided.iter().find(|p| looks_like(name, p)) {
                message.push_str(&format!(" (did you mean {like} for {name}?)"));
            }
        }
        Err(Error::config(message))
    }
}

/// The host list entry that stands for every provided service.
pub const HOST_ALL: &str = "*";

/// `name` is `full` without its dotted prefix, or the same in another case.
fn looks_like(name: &str, full: &str) -> bool {
    let last = full.rsplit('.').next().unwrap_or(full);
    name.eq_ignore_ascii_case(full) || name.eq_ignore_ascii_case(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn outlier_shares_and_durations() {
        let o = OutlierConfig::default();
        // 50 %: one of two may go, never the last one, at least one of many.
        assert_eq!([1, 2, 3, 4, 5].map(|n| o.max_ejected(n)), [0, 1, 1, 2, 2]);
        let ten = OutlierConfig {
            max_ejected_percent: 10,
            ..o.clone()
        };
        assert_eq!([2, 5, 30].map(|n| ten.max_ejected(n)), [1, 1, 3]);
        assert_eq!(o.ejection(1), Duration::from_secs(2));
        assert_eq!(o.ejection(3), Duration::from_secs(6));
        assert_eq!(o.ejection(100), Duration::from_secs(30));
        assert!(!OutlierConfig {
            consecutive_failures: 0,
            ..o
        }
        .enabled());
        let parsed: InvokeConfig =
            toml::from_str("[outlier]\nconsecutive_failures = 5\nbase_ejection = \"500ms\"")
                .unwrap();
        assert_eq!(parsed.outlier.consecutive_failures, 5);
        assert_eq!(parsed.outlier.base_ejection, Duration::from_millis(500));
        assert_eq!(parsed.outlier.max_ejected_percent, 50);
    }

    #[test]
    fn host_list_meanings_and_check() {
        let with = |v: &str| {
            let mut c = Config::default();
            c.apply_env([("MODKIT_HOST", v)]).unwrap();
            c.invoke
        };
        assert!(InvokeConfig::default().hosts("todo.Notes"));
        assert!(!with("").hosts("todo.Notes"));
        assert!(with("*").hosts("todo.Notes"));
        assert!(with("*").check_hosts(&[]).is_ok());
        assert!(with("todo.Notes").check_hosts(&["todo.Notes"]).is_ok());
        let err = with("Notes, todo.Queue")
            .check_hosts(&["todo.Notes", "todo.Users"])
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        let text = err.to_string();
        assert!(text.contains("never provides: Notes, todo.Queue"), "{text}");
        assert!(
            text.contains("provides are: todo.Notes, todo.Users"),
            "{text}"
        );
        assert!(
            text.contains("did you mean todo.Notes for Notes?"),
            "{text}"
        );
    }
}
