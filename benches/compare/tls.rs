//! TLS for the benches: a throwaway CA and one certificate for the loopback
//! host, made at run time (rcgen) in a temporary folder removed on drop.

use std::path::PathBuf;

use modkit::distribute::{RpcConfig, RpcTlsConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::BoxError;

/// The PEM files of one run, and the RPC configuration that uses them.
pub struct BenchTls {
    dir: PathBuf,
    /// TLS both ways (server certificate, CA to verify it), no client certificate.
    pub rpc: RpcConfig,
}

impl BenchTls {
    /// Makes the CA and a certificate for `127.0.0.1` and `localhost`.
    pub fn make() -> Result<BenchTls, BoxError> {
        let dir = std::env::temp_dir().join(format!("modkit-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?
            .signed_by(&key, &ca)?;
        let file = |name: &str, text: String| -> Result<PathBuf, BoxError> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        let tls = RpcTlsConfig {
            cert: Some(file("node.pem", cert.pem())?),
            key: Some(file("node.key", key.serialize_pem())?),
            ca: Some(file("ca.pem", ca.pem())?),
            ..RpcTlsConfig::default()
        };
        Ok(BenchTls {
            dir: dir.clone(),
            rpc: RpcConfig {
                tls: Some(tls),
                ..RpcConfig::default()
            },
        })
    }
}

impl Drop for BenchTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
