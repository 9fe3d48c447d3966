//! Which deployment package runs: the facade's choice between the packages it
//! can be built with (mod-api names none of them).

use crate::{Config, Error, Result};

/// A deployment package of the facade, chosen by `mode` ([`Config::mode`],
/// `MODKIT_MODE`) among those compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Everything in one process, in memory (feature `monolith`).
    Monolith,
    /// Services in many processes over RPC, sharing Redis (feature `distribute`).
    Distribute,
}

impl BackendKind {
    /// The package run when `mode` is unset: the monolith when it is compiled
    /// in, else the distributed package.
    pub const DEFAULT: BackendKind = if cfg!(feature = "monolith") {
        BackendKind::Monolith
    } else {
        BackendKind::Distribute
    };

    /// The package `config.mode` names, or [`BackendKind::DEFAULT`] when unset;
    /// an unknown name is a [`Config`](crate::ErrorKind::Config) error.
    pub fn of(config: &Config) -> Result<BackendKind> {
        config
            .mode
            .as_deref()
            .map_or(Ok(BackendKind::DEFAULT), str::parse)
    }

    /// The package's name, as `mode` and [`Backend::name`](crate::Backend::name) spell it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Monolith => "monolith",
            BackendKind::Distribute => "distribute",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "monolith" => Ok(BackendKind::Monolith),
            "distribute" | "distributed" => Ok(BackendKind::Distribute),
            other => Err(Error::config(format!(
                "unknown mode {other:?}: expected \"monolith\" or \"distribute\""
            ))),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The configuration sections the packages compiled in read (mod-api's own
/// `[invoke]` and `[registry]` are typed fields of [`Config`]; the monolith
/// reads only those).
pub(crate) fn known_sections() -> &'static [&'static str] {
    #[cfg(feature = "distribute")]
    return mod_distribute::config::SECTIONS;
    #[cfg(not(feature = "distribute"))]
    return &[];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn mode_names_a_package_or_is_a_config_error() {
        let with = |mode: Option<&str>| {
            BackendKind::of(&Config {
                mode: mode.map(String::from),
                ..Config::default()
            })
        };
        assert_eq!(with(None).unwrap(), BackendKind::DEFAULT);
        assert_eq!(with(Some("Monolith")).unwrap(), BackendKind::Monolith);
        assert_eq!(with(Some("distributed")).unwrap(), BackendKind::Distribute);
        let err = with(Some("cloud")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("unknown mode \"cloud\""), "{err}");
        assert_eq!(BackendKind::Distribute.to_string(), "distribute");
    }

    #[tokio::test]
    async fn a_section_no_package_reads_is_a_config_error_at_start() {
        let config = Config::from_toml("[rediss]\nurl = \"redis://x\"\n").unwrap();
        let err = crate::App::start(config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let text = err.to_string();
        assert!(
            text.contains("unknown configuration section [rediss]"),
            "{text}"
        );
        for known in known_sections() {
            assert!(text.contains(&format!("[{known}]")), "{text}");
        }
    }
}
