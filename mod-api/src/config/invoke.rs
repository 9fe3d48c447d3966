//! `[invoke]`: deadlines, retries, balancing, and which services a process hosts.

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
