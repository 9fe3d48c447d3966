//! The sections of the configuration that belong to a backend (`[name]` tables
//! this crate does not know), kept as raw TOML until their backend parses them.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Config;
use crate::error::{Error, Result};

/// A backend's own section of the configuration: the typed struct a backend
/// parses its `[NAME]` table into (with `#[serde(deny_unknown_fields)]`, so a
/// misspelt field is an error naming it), and its `MODKIT_<NAME>_*` overrides.
///
/// Read one with [`Config::section`], set one with [`Config::set_section`] or
/// [`Config::edit_section`].
pub trait Section: Serialize + DeserializeOwned + Default {
    /// The section's table name in the file (`[NAME]`).
    const NAME: &'static str;

    /// Applies this section's environment overrides, read through `var`; a
    /// malformed value is a [`Config`](crate::ErrorKind::Config) error naming
    /// the variable.
    fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<()>;
}

/// The backends' sections of a [`Config`], as raw TOML tables by name, and the
/// `MODKIT_*` variables [`Config::apply_env`] saw, which a backend applies to
/// its sections when it parses them (so files and variables keep their
/// precedence: defaults, then the file, then the environment).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sections {
    tables: toml::Table,
    #[serde(skip)]
    env: BTreeMap<String, String>,
}

impl Sections {
    /// The names of the sections present, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// Records the `MODKIT_*` variables of `vars` for the backends' sections.
    pub(super) fn record_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        let modkit = vars.into_iter().filter(|(k, _)| k.starts_with("MODKIT_"));
        self.env.extend(modkit);
    }

    /// A recorded `MODKIT_*` variable.
    pub(super) fn env(&self, key: &str) -> Option<String> {
        self.env.get(key).cloned()
    }

    /// Fails on a top-level key that is not a table: every top-level setting
    /// outside a table is one of [`Config`]'s own fields.
    pub(super) fn check_tables(&self) -> Result<()> {
        match self.tables.iter().find(|(_, v)| !v.is_table()) {
            Some((key, _)) => Err(Error::config(format!(
                "invalid configuration: unknown setting `{key}` (the top-level settings are \
                 mode, node_id and data_dir; a backend's settings go in its [section])"
            ))),
            None => Ok(()),
        }
    }

    /// Fails with a [`Config`](crate::ErrorKind::Config) error on a section
    /// none of `known` names, listing the known ones: a misspelt `[section]`
    /// must not be silently ignored. The facade calls it with the sections of
    /// every package compiled in.
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        let unknown: Vec<&str> = self.names().filter(|n| !known.contains(n)).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let list = |names: &[&str]| {
            let tables: Vec<String> = names.iter().map(|n| format!("[{n}]")).collect();
            tables.join(", ")
        };
        tracing::warn!(unknown = ?unknown, known = ?known, "unknown configuration section");
        let read = if known.is_empty() {
            "none".to_owned()
        } else {
            list(known)
        };
        Err(Error::config(format!(
            "unknown configuration section {}; the packages compiled in read {read} \
             (besides mod-api's own, such as [invoke] and [registry])",
            list(&unknown),
        )))
    }
}

impl Config {
    /// Section `S`: its table (defaults for fields it leaves out, all defaults
    /// when absent), then the `MODKIT_*` variables [`Config::apply_env`] saw.
    ///
    /// Fails with a [`Config`](crate::ErrorKind::Config) error naming the
    /// section and the problem (an unknown field, a wrong type, a bad variable).
    pub fn section<S: Section>(&self) -> Result<S> {
        let mut section: S = self.raw_section()?;
        section.apply_env(&|key| self.sections.env(key))?;
        Ok(section)
    }

    /// Replaces section `S` with `section`.
    ///
    /// # Panics
    ///
    /// If `S` does not serialize to a TOML table: a bug of the section type
    /// (each backend tests that its sections round-trip), not of any input.
    pub fn set_section<S: Section>(&mut self, section: &S) -> &mut Self {
        let table = toml::Table::try_from(section).unwrap_or_else(|e| {
            panic!(
                "section [{}] does not serialize to a TOML table: {e}",
                S::NAME
            )
        });
        self.sections
            .tables
            .insert(S::NAME.to_owned(), table.into());
        self
    }

    /// `self` with section `S` replaced by `section`: for building a
    /// configuration in one expression (panics as [`Config::set_section`]).
    pub fn with_section<S: Section>(mut self, section: &S) -> Self {
        self.set_section(section);
        self
    }

    /// Changes section `S` in place: `config.edit_section(|b: &mut BrokerConfig| b.url = url)`.
    ///
    /// `edit` sees the section as set so far (file and code; not the
    /// environment, which [`Config::section`] still applies on top). Fails as
    /// [`Config::section`] does when the section present is invalid.
    pub fn edit_section<S: Section>(&mut self, edit: impl FnOnce(&mut S)) -> Result<&mut Self> {
        let mut section: S = self.raw_section()?;
        edit(&mut section);
        Ok(self.set_section(&section))
    }

    fn raw_section<S: Section>(&self) -> Result<S> {
        let Some(value) = self.sections.tables.get(S::NAME) else {
            return Ok(S::default());
        };
        value
            .clone()
            .try_into()
            .map_err(|e| Error::config(format!("invalid configuration section [{}]: {e}", S::NAME)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    /// A backend's section, as a backend writes one.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Broker {
        url: String,
        lanes: u32,
    }

    impl Default for Broker {
        fn default() -> Self {
            Broker {
                url: "broker://localhost".into(),
                lanes: 4,
            }
        }
    }

    impl Section for Broker {
        const NAME: &'static str = "broker";

        fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<()> {
            if let Some(v) = var("MODKIT_BROKER_URL") {
                self.url = v;
            }
            Ok(())
        }
    }

    #[test]
    fn defaults_then_file_then_env() {
        assert_eq!(
            Config::default().section::<Broker>().unwrap(),
            Broker::default()
        );
        let mut c = Config::from_toml("[broker]\nlanes = 8\n").unwrap();
        assert_eq!(c.section::<Broker>().unwrap().lanes, 8);
        assert_eq!(c.section::<Broker>().unwrap().url, "broker://localhost");
        c.apply_env([("MODKIT_BROKER_URL", "broker://b:1"), ("HOME", "/root")])
            .unwrap();
        let parsed: Broker = c.section().unwrap();
        assert_eq!((parsed.url.as_str(), parsed.lanes), ("broker://b:1", 8));
        // The environment wins over what code sets too.
        c.edit_section(|b: &mut Broker| b.url = "broker://code".into())
            .unwrap();
        assert_eq!(c.section::<Broker>().unwrap().url, "broker://b:1");
    }

    #[test]
    fn set_and_edit_round_trip() {
        let mut c = Config::default();
        c.set_section(&Broker {
            url: "broker://x".into(),
            lanes: 2,
        });
        c.edit_section(|b: &mut Broker| b.lanes += 1).unwrap();
        let back: Broker = c.section().unwrap();
        assert_eq!((back.url.as_str(), back.lanes), ("broker://x", 3));
        assert_eq!(c.sections.names().collect::<Vec<_>>(), ["broker"]);
    }

    #[test]
    fn a_misspelt_field_is_an_error_naming_section_and_field() {
        let c = Config::from_toml("[broker]\nlane = 8\n").unwrap();
        let err = c.section::<Broker>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let text = err.to_string();
        assert!(
            text.contains("[broker]") && text.contains("`lane`"),
            "{text}"
        );
    }

    #[test]
    fn unknown_sections_and_settings_are_errors() {
        let c = Config::from_toml("[broker]\n[brokr]\nurl = \"x\"\n").unwrap();
        assert!(c.sections.check_known(&["broker", "brokr"]).is_ok());
        let err = c.sections.check_known(&["broker"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let text = err.to_string();
        assert!(
            text.contains("unknown configuration section [brokr]") && text.contains("[broker]"),
            "{text}"
        );
        let err = Config::from_toml("lanes = 3\n").unwrap_err();
        assert!(err.to_string().contains("unknown setting `lanes`"), "{err}");
    }
}
