//! Opening a Redis endpoint: the client for a URL (with TLS files for
//! `rediss://`), and the URL as logs may show it (without its password).

use crate::config::RedisTlsConfig;
use mod_api::{Error, Result};
use redis::{Client, ClientTlsConfig, TlsCertificates};

/// The TLS material of `[redis.tls]`, read once (PEM bytes).
#[derive(Clone, Default)]
pub(super) struct TlsFiles {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    /// Reads the files `config` names; an unreadable file is a `Config` error.
    pub(super) fn read(config: &RedisTlsConfig) -> Result<TlsFiles> {
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                Error::config(format!("redis.tls.{what}: cannot read {}", path.display()))
                    .with_source(e)
            })
        };
        let ca = config.ca.as_deref().map(|p| read(p, "ca")).transpose()?;
        let client = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => Some((read(cert, "cert")?, read(key, "key")?)),
            (None, None) => None,
            _ => {
                return Err(Error::config(
                    "redis.tls: cert and key go together (client certificate and its key)",
                ))
            }
        };
        Ok(TlsFiles { ca, client })
    }
}

/// A client for `url`; with `tls`, its files serve a `rediss://` URL.
pub(super) fn client(url: &str, tls: Option<&TlsFiles>) -> Result<Client> {
    let invalid = |e| Error::config(format!("invalid redis url {}", redact(url))).with_source(e);
    match tls {
        Some(files) if url.starts_with("rediss://") => {
            let certs = TlsCertificates {
                client_tls: files
                    .client
                    .clone()
                    .map(|(client_cert, client_key)| ClientTlsConfig {
                        client_cert,
                        client_key,
                    }),
                root_cert: files.ca.clone(),
            };
            Client::build_with_tls(url, certs).map_err(invalid)
        }
        Some(_) => Err(Error::config(format!(
            "redis.tls is set but the url {} is not rediss://",
            redact(url)
        ))),
        None => Client::open(url).map_err(invalid),
    }
}

/// `url` with its password replaced by `***`, for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let credentials = &rest[..at];
    let user = credentials.split_once(':').map_or(credentials, |(u, _)| u);
    if user.len() == credentials.len() {
        // `user@host`: a user name without a password.
        return url.to_owned();
    }
    format!("{}{user}:***@{}", &url[..scheme_end], &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("rediss://alice:p@ss@h:1"), "rediss://alice:***@h:1");
        assert_eq!(redact("redis://alice@h"), "redis://alice@h");
        assert_eq!(redact("not a url"), "not a url");
    }
}
