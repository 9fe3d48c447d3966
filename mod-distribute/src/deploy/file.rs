//! The deployment file: which OS processes run which services, how many
//! replicas of each, where, with which extra configuration, and how they are
//! restarted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mod_api::{Error, Result};
use serde::{Deserialize, Serialize};

use super::{HOST_ENV, PROCESS_ENV, REPLICA_ENV};

/// A deployment file (TOML): a list of `[[process]]` tables.
///
/// ```toml
/// [[process]]
/// name = "orders"                # node ids are orders-0, orders-1, …
/// services = ["shop.Orders"]     # what it hosts (MODKIT_HOST)
/// replicas = 2                   # default 1
/// host = "local"                 # label of the host that runs it (default "local")
/// restart = "on-failure"         # or "always", "never"
///
/// [process.env]                  # extra environment of this process's replicas
/// MODKIT_INVOKE_TIMEOUT = "2s"
/// ```
///
/// Unknown fields are errors, as are a process without services, zero
/// replicas and two processes of one name ([`DeploymentFile::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentFile {
    /// The processes, in launch order.
    #[serde(default)]
    pub process: Vec<ProcessSpec>,
}

/// One `[[process]]` of a deployment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// Its name: letters, digits, `-`, `_` and `.`; replica `i` runs as node
    /// `<name>-<i>`.
    pub name: String,
    /// The services it hosts (`MODKIT_HOST`), by their registered names.
    pub services: Vec<String>,
    /// How many copies of it run (default 1).
    #[serde(default = "one")]
    pub replicas: usize,
    /// A label of the host that runs it (default `"local"`), given to the
    /// process as `MODKIT_DEPLOY_HOST`. The agent of that host launches it
    /// ([`Launcher::host`](super::Launcher::host)); a deployment launched
    /// without a host runs every process on this machine.
    #[serde(default = "local")]
    pub host: String,
    /// When an exited replica is started again (default `on-failure`).
    #[serde(default)]
    pub restart: Restart,
    /// Extra environment variables of its replicas: its own configuration,
    /// such as `MODKIT_INVOKE_TIMEOUT` or `RUST_LOG`. The variables the
    /// deployer sets itself (`MODKIT_HOST`, `MODKIT_NODE_ID`, …) are refused.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The restart policy of a process: what the supervisor does when one of its
/// replicas exits while the deployment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Start it again unless it exited with status 0 (a signal, such as
    /// `kill -9`, is a failure).
    #[default]
    OnFailure,
    /// Start it again however it exited.
    Always,
    /// Leave it stopped.
    Never,
}

impl Restart {
    /// Whether a replica that exited `successfully` is started again.
    pub fn restarts(self, successfully: bool) -> bool {
        match self {
            Restart::OnFailure => !successfully,
            Restart::Always => true,
            Restart::Never => false,
        }
    }

    /// Its name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
            Restart::Never => "never",
        }
    }
}

fn one() -> usize {
    1
}

fn local() -> String {
    "local".into()
}

/// Variables the deployer sets on every replica: a process's `env` may not
/// name them.
pub(super) const RESERVED_ENV: &[&str] = &[
    PROCESS_ENV,
    REPLICA_ENV,
    HOST_ENV,
    "MODKIT_NODE_ID",
    "MODKIT_MODE",
    "MODKIT_HOST",
    "MODKIT_REDIS_URL",
    "MODKIT_REDIS_PREFIX",
];

impl DeploymentFile {
    /// Reads and checks the deployment file at `path`; a
    /// [`Config`](mod_api::ErrorKind::Config) error names the file and the
    /// problem.
    pub fn load(path: impl AsRef<Path>) -> Result<DeploymentFile> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read deployment file {}", path.display())).with_source(e)
        })?;
        Self::parse_named(&text, &path.display().to_string())
    }

    /// Parses and checks a deployment file's text: a
    /// [`Config`](mod_api::ErrorKind::Config) error for invalid TOML, an
    /// unknown field, a process without services or with zero replicas, an
    /// empty or repeated name, or an `env` entry the deployer sets itself.
    pub fn parse(text: &str) -> Result<DeploymentFile> {
        Self::parse_named(text, "<text>")
    }

    fn parse_named(text: &str, origin: &str) -> Result<DeploymentFile> {
        let file: DeploymentFile = toml::from_str(text)
            .map_err(|e| Error::config(format!("invalid deployment file {origin}: {e}")))?;
        file.check().map_err(|problem| {
            Error::config(format!("invalid deployment file {origin}: {problem}"))
        })?;
        Ok(file)
    }

    /// Checks what the TOML types cannot say; `Err` is the problem, naming the field.
    fn check(&self) -> std::result::Result<(), String> {
        if self.process.is_empty() {
            return Err("no [[process]]: a deployment runs at least one process".into());
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.process.iter().enumerate() {
            let at = format!("process[{i}]");
            let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            if p.name.is_empty() || !p.name.chars().all(valid) {
                return Err(format!(
                    "{at}.name: {:?} is not a process name (letters, digits, `-`, `_`, `.`)",
                    p.name
                ));
            }
            let at = format!("{at} (`{}`)", p.name);
            if !names.insert(p.name.as_str()) {
                return Err(format!("{at}.name: two processes are named `{}`", p.name));
            }
            if p.services.is_empty() {
                return Err(format!(
                    "{at}.services: empty; a process hosts at least one service"
                ));
            }
            if let Some(bad) = p
                .services
                .iter()
                .find(|s| s.trim().is_empty() || s.contains(','))
            {
                return Err(format!("{at}.services: {bad:?} is not a service name"));
            }
            if p.replicas == 0 {
                return Err(format!("{at}.replicas: must be at least 1"));
            }
            if p.host.trim().is_empty() {
                return Err(format!("{at}.host: empty"));
            }
            for key in p.env.keys() {
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    return Err(format!("{at}.env: {key:?} is not a variable name"));
                }
                if RESERVED_ENV.contains(&key.as_str()) {
                    return Err(format!(
                        "{at}.env: {key} is set by the deployer (from name, services and the \
                         deployment's Redis); it cannot be set per process"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every service, with the node ids (`<process>-<i>`) that host it.
    pub fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &self.process {
            for service in &p.services {
                let nodes = services.entry(service.clone()).or_default();
                nodes.extend((0..p.replicas).map(|i| node_id(&p.name, i)));
            }
        }
        services
    }
}

/// The node id of replica `i` of process `name`.
pub(super) fn node_id(name: &str, i: usize) -> String {
    format!("{name}-{i}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use mod_api::ErrorKind;

    fn bad(text: &str) -> String {
        let e = DeploymentFile::parse(text).expect_err("an invalid file");
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        e.to_string()
    }

    #[test]
    fn a_full_file_with_defaults() {
        let file = DeploymentFile::parse(
            r#"
            [[process]]
            name = "front"
            services = ["shop.Catalog", "shop.Auth"]

            [[process]]
            name = "orders"
            services = ["shop.Orders"]
            replicas = 2
            host = "box-b"
            restart = "always"
            [process.env]
            MODKIT_INVOKE_TIMEOUT = "2s"
            "#,
        )
        .unwrap();
        let front = &file.process[0];
        assert_eq!(
            (front.replicas, front.host.as_str(), front.restart),
            (1, "local", Restart::OnFailure)
        );
        assert!(front.env.is_empty());
        let orders = &file.process[1];
        assert_eq!(
            (orders.replicas, orders.host.as_str(), orders.restart),
            (2, "box-b", Restart::Always)
        );
        assert_eq!(orders.env["MODKIT_INVOKE_TIMEOUT"], "2s");
        let services = file.services();
        assert_eq!(services["shop.Orders"], ["orders-0", "orders-1"]);
        assert_eq!(services["shop.Auth"], ["front-0"]);
    }

    #[test]
    fn restart_policies() {
        let policy = |text: &str| {
            let file =
                format!("[[process]]\nname = \"a\"\nservices = [\"s\"]\nrestart = \"{text}\"");
            DeploymentFile::parse(&file).map(|f| f.process[0].restart)
        };
        assert_eq!(policy("never").unwrap(), Restart::Never);
        assert_eq!(policy("on-failure").unwrap(), Restart::OnFailure);
        assert!(policy("sometimes")
            .unwrap_err()
            .to_string()
            .contains("restart"));
        assert!(Restart::OnFailure.restarts(false) && !Restart::OnFailure.restarts(true));
        assert!(Restart::Always.restarts(true) && !Restart::Never.restarts(false));
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = bad("[[process]]\nname = \"a\"\nservices = [\"s\"]\nreplica = 2\n");
        assert!(e.contains("unknown field `replica`"), "{e}");
        let e = bad("[[processes]]\nname = \"a\"\n");
        assert!(e.contains("unknown field `processes`"), "{e}");
    }

    #[test]
    fn what_the_types_cannot_say() {
        let e = bad("[[process]]\nname = \"a\"\nservices = [\"s\"]\nreplicas = 0\n");
        assert!(
            e.contains("process[0] (`a`).replicas: must be at least 1"),
            "{e}"
        );
        let e = bad("[[process]]\nname = \"a\"\nservices = []\n");
        assert!(e.contains("process[0] (`a`).services: empty"), "{e}");
        let e = bad(
            "[[process]]\nname = \"a\"\nservices = [\"s\"]\n[[process]]\nname = \"a\"\nservices = [\"t\"]\n",
        );
        assert!(
            e.contains("process[1] (`a`).name: two processes are named `a`"),
            "{e}"
        );
        let e = bad("[[process]]\nname = \"a b\"\nservices = [\"s\"]\n");
        assert!(e.contains("process[0].name"), "{e}");
        let e = bad(
            "[[process]]\nname = \"a\"\nservices = [\"s\"]\n[process.env]\nMODKIT_HOST = \"x\"\n",
        );
        assert!(e.contains("MODKIT_HOST is set by the deployer"), "{e}");
        let e = bad("");
        assert!(e.contains("no [[process]]"), "{e}");
        let e = bad("[[process]]\nname = \"a\"\nservices = [\"s\"]\nreplicas = -1\n");
        assert!(e.contains("replicas"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let e = DeploymentFile::load("/nonexistent/deploy.toml").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("/nonexistent/deploy.toml"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.toml");
        std::fs::write(
            &path,
            "[[process]]\nname = \"a\"\nservices = [\"s\"]\nhost = 3\n",
        )
        .unwrap();
        let e = DeploymentFile::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("host"),
            "{e}"
        );
    }
}
