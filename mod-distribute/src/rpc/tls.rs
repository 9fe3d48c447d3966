//! TLS of the RPC transport: rustls (ring provider, TLS 1.3) configured from
//! the PEM files of `[rpc.tls]`, and the errors of a failed handshake.
//!
//! Certificates and keys are read once, when a server binds or a connection
//! pool is made, not per connection.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::config::{RpcConfig, RpcTlsConfig};
use mod_api::{Error, ErrorKind, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: impl fmt::Display) -> Error {
    Error::config(format!("rpc.tls: {what}"))
}

fn certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let read = |e: &dyn fmt::Display| {
        config_error(format!(
            "{field}: cannot read certificates from {}: {e}",
            path.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| read(&e))?;
    if certs.is_empty() {
        return Err(read(&"no certificate in the file"));
    }
    Ok(certs)
}

fn key(field: &str, path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        config_error(format!(
            "{field}: cannot read a private key from {}: {e}",
            path.display()
        ))
    })
}

fn roots(field: &str, path: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certs(field, path)? {
        roots
            .add(cert)
            .map_err(|e| config_error(format!("{field}: {}: {e}", path.display())))?;
    }
    Ok(Arc::new(roots))
}

/// The server's TLS, when `[rpc.tls]` names a certificate and key.
pub(crate) fn acceptor(config: &RpcConfig) -> Result<Option<TlsAcceptor>> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let (cert, key_path) = match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) if tls.client_ca.is_some() => {
            return Err(config_error("client_ca is set but cert and key are not"))
        }
        (None, None) => return Ok(None),
        _ => return Err(config_error("cert and key go together: set both")),
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots("client_ca", ca)?, provider())
                    .build()
                    .map_err(|e| config_error(format!("client_ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(certs("cert", cert)?, key("key", key_path)?)
        .map_err(|e| config_error(format!("cert and key: {e}")))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

/// A client's TLS: how to connect, and the name to expect.
#[derive(Clone)]
pub(crate) struct ClientTls {
    connector: TlsConnector,
    server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// The client's TLS, when `[rpc.tls]` names a CA to verify servers against.
pub(crate) fn connector(config: &RpcConfig) -> Result<Option<ClientTls>> {
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let Some(ca) = &tls.ca else {
        if tls.client_cert.is_some() || tls.client_key.is_some() {
            return Err(config_error("client_cert and client_key need ca to be set"));
        }
        return Ok(None);
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_root_certificates(roots("ca", ca)?);
    let client = match client_identity(tls)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| config_error(format!("client_cert and client_key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Some(ClientTls {
        connector: TlsConnector::from(Arc::new(client)),
        server_name: tls.server_name.clone(),
    }))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(tls: &RpcTlsConfig) -> Result<Option<Identity>> {
    match (&tls.client_cert, &tls.client_key) {
        (Some(c), Some(k)) => Ok(Some((certs("client_cert", c)?, key("client_key", k)?))),
        (None, None) => Ok(None),
        _ => Err(config_error(
            "client_cert and client_key go together: set both",
        )),
    }
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl ClientTls {
    /// Runs the TLS handshake on `stream` to the server at `addr`; a failure
    /// is `Unauthenticated` (bad certificate, unknown CA, wrong name) or
    /// `Unavailable` (the connection failed meanwhile).
    pub(crate) async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>> {
        let name = self.server_name.as_deref().unwrap_or_else(|| host_of(addr));
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| config_error(format!("{name:?} is not a valid server name: {e}")))?;
        match self.connector.connect(name, stream).await {
            Ok(s) => Ok(TlsStream::Client(s)),
            Err(e) => Err(handshake_error(addr, e)),
        }
    }
}

/// The rustls error inside an I/O error, if it is one.
pub(crate) fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The typed error of a client's failed TLS handshake with `addr`.
pub(crate) fn handshake_error(addr: &str, e: io::Error) -> Error {
    match rustls_error(&e) {
        Some(tls) => Error::new(
            ErrorKind::Unauthenticated,
            format!("rpc {addr}: TLS handshake failed: {tls}"),
        ),
        None => Error::unavailable(format!("rpc {addr}: TLS handshake failed")).with_source(e),
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_an_address() {
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("node-a.internal:7000"), "node-a.internal");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}
