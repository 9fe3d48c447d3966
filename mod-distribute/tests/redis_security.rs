//! Redis AUTH, ACL users and TLS, passed through to real `redis-server`s:
//! a node with the right credentials works, wrong ones are a clear error that
//! never shows the password, and `rediss://` verifies the server against the
//! configured CA (and presents a client certificate when Redis requires one).

use std::net::TcpListener;

use mod_api::{Backend, CachePolicy, Config, ErrorKind};
use mod_distribute::{Distributed, RedisConfig, RedisServer, RedisTlsConfig};

mod pki;
use pki::Pki;

fn config(redis: RedisConfig) -> Config {
    Config::default().with_section(&redis)
}

fn url(url: String) -> RedisConfig {
    RedisConfig {
        url,
        prefix: "sec".into(),
        ..RedisConfig::default()
    }
}

/// A node on `redis` can write and read back through the cache.
async fn works(redis: RedisConfig) {
    let node = Distributed::start(config(redis))
        .await
        .expect("node starts");
    let cache = node.cache::<String>("c", CachePolicy::new()).unwrap();
    cache.set("k", "v".into()).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_password_and_acl_user_pass_through() {
    let server = RedisServer::start_with_args(&[
        "--requirepass",
        "default-pw-1",
        "--user",
        "alice",
        "on",
        ">alice-pw-2",
        "~*",
        "&*",
        "+@all",
    ])
    .expect("redis-server");
    let port = server.port();
    works(url(format!("redis://:default-pw-1@127.0.0.1:{port}"))).await;
    works(url(format!("redis://alice:alice-pw-2@127.0.0.1:{port}"))).await;

    for wrong in [
        format!("redis://:not-the-pw@127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}"),
    ] {
        let err = Distributed::start(config(url(wrong))).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
        assert!(!err.is_retryable(), "a wrong password stays wrong: {err}");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
        assert!(
            !shown.contains("not-the-pw"),
            "the password leaked: {shown}"
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server that also listens with TLS; `clients` is `tls-auth-clients`.
fn tls_server(pki: &Pki, clients: &str) -> (RedisServer, u16) {
    let (cert, key) = pki.server();
    let tls_port = free_port();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let server = RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &path(&cert),
        "--tls-key-file",
        &path(&key),
        "--tls-ca-cert-file",
        &path(&pki.path("ca.pem")),
        "--tls-auth-clients",
        clients,
    ])
    .expect("redis-server with TLS (Debian's is built with it)");
    (server, tls_port)
}

fn tls(tls_port: u16, tls: RedisTlsConfig) -> RedisConfig {
    RedisConfig {
        tls: Some(tls),
        ..url(format!("rediss://127.0.0.1:{tls_port}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_verifies_the_server_against_the_configured_ca() {
    let pki = Pki::new("redis test CA");
    let (_server, tls_port) = tls_server(&pki, "no");
    let ca = RedisTlsConfig {
        ca: Some(pki.path("ca.pem")),
        ..RedisTlsConfig::default()
    };
    works(tls(tls_port, ca)).await;

    // Another CA: the server's certificate is not trusted.
    let other = Pki::new("someone else");
    let untrusted = RedisTlsConfig {
        ca: Some(other.path("ca.pem")),
        ..RedisTlsConfig::default()
    };
    let err = Distributed::start(config(tls(tls_port, untrusted)))
        .await
        .unwrap_err();
    assert!(
        format!("{err}").contains(&format!("127.0.0.1:{tls_port}")),
        "{err}"
    );

    // TLS files with a redis:// URL: a configuration mistake, said at once.
    let plain = RedisConfig {
        tls: Some(RedisTlsConfig::default()),
        ..url(format!("redis://127.0.0.1:{tls_port}"))
    };
    let err = Distributed::start(config(plain)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_presents_a_client_certificate_when_redis_requires_one() {
    let pki = Pki::new("redis test CA");
    let (_server, tls_port) = tls_server(&pki, "yes");
    let (cert, key) = pki.client();
    let mutual = RedisTlsConfig {
        ca: Some(pki.path("ca.pem")),
        cert: Some(cert),
        key: Some(key),
    };
    works(tls(tls_port, mutual)).await;

    let without = RedisTlsConfig {
        ca: Some(pki.path("ca.pem")),
        ..RedisTlsConfig::default()
    };
    assert!(Distributed::start(config(tls(tls_port, without)))
        .await
        .is_err());
}
