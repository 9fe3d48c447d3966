//! Raising an alert: a `tracing` event, a line to every subscriber, and the
//! configured command hook (the alert as JSON on its stdin).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use mod_distribute::topology::{Alert, Publisher};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

/// How long the command hook may run before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a controller's alerts go.
#[derive(Clone)]
pub struct Alerts {
    publisher: Option<Arc<Publisher>>,
    local: broadcast::Sender<Alert>,
    command: Option<Arc<str>>,
}

impl Alerts {
    /// Alerts for `publisher`'s subscribers and `command` (run by `sh -c`).
    pub fn new(publisher: Arc<Publisher>, command: Option<String>) -> Alerts {
        Alerts {
            publisher: Some(publisher),
            local: broadcast::channel(256).0,
            command: command.map(Into::into),
        }
    }

    /// Alerts with no topology subscribers (a process that serves none, such
    /// as the fault monitor): the `tracing` event, [`subscribe`](Self::subscribe)
    /// and the command hook.
    pub fn without_publisher(command: Option<String>) -> Alerts {
        Alerts {
            publisher: None,
            local: broadcast::channel(256).0,
            command: command.map(Into::into),
        }
    }

    /// The alerts raised from now on, in this process.
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.local.subscribe()
    }

    /// Raises `alert` everywhere it goes.
    pub fn raise(&self, alert: Alert) {
        self.raise_also(alert, &[]);
    }

    /// Raises `alert` everywhere it goes, and to the commands `extra` (targets
    /// of their own, such as the client registered for one node).
    pub fn raise_also(&self, alert: Alert, extra: &[&str]) {
        let json = serde_json::to_string(&alert).unwrap_or_default();
        for command in extra {
            if self.command.as_deref() != Some(*command) {
                tokio::spawn(run_hook((*command).into(), json.clone()));
            }
        }
        tracing::warn!(alert = alert.kind(), detail = %json, "resilience alert");
        if let Some(publisher) = &self.publisher {
            publisher.alert(alert.clone());
        }
        let _ = self.local.send(alert);
        if let Some(command) = self.command.clone() {
            tokio::spawn(run_hook(command, json));
        }
    }
}

async fn run_hook(command: Arc<str>, json: String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&*command)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(command = %command, error = %e, "alert hook cannot start");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(json.as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
    }
    match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => tracing::error!(command = %command, %status, "alert hook failed"),
        Ok(Err(e)) => tracing::error!(command = %command, error = %e, "alert hook failed"),
        Err(_) => tracing::error!(command = %command, "alert hook timed out; killed"),
    }
}
