//! A node that is misconfigured says so at start: an unset host list is a WARN
//! with the fix, a host list naming a service never provided is a `Config`
//! error listing the known names, the node logs what it hosts and calls, and
//! Redis not running is an error that shows the URL and the cause.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mod_api::config::{InvokeConfig, RegistryConfig};
use mod_api::{async_trait, service, Backend, Config, Error, ErrorKind};
use mod_distribute::RedisConfig;
use mod_distribute::{Distributed, RedisServer, UNSET_HOST_WARNING};

/// A notes service named as an application would name it.
#[service(crate = mod_api, name = "todo.Notes")]
pub trait Notes {
    /// How many notes there are.
    async fn count(&self) -> Result<u64, Error>;
}

struct NoNotes;

#[async_trait]
impl Notes for NoNotes {
    async fn count(&self) -> Result<u64, Error> {
        Ok(0)
    }
}

/// Every log line of this test binary (plain text, INFO and above).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    static INIT: OnceLock<()> = OnceLock::new();
    let buffer = LOGS.get_or_init(Mutex::default);
    INIT.get_or_init(|| {
        struct Sink;
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                logs().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(|| Sink)
            .init();
    });
    buffer
}

/// The log lines that mention `node` (tests run in parallel, one node id each).
fn lines_of(node: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(node))
        .map(str::to_owned)
        .collect()
}

fn config(redis: &RedisServer, node: &str, host: Option<&[&str]>) -> Config {
    Config {
        node_id: Some(node.into()),
        registry: RegistryConfig {
            ttl: Duration::from_secs(5),
            sweep: Duration::from_millis(100),
        },
        invoke: InvokeConfig {
            host: host.map(|list| list.iter().map(|s| s.to_string()).collect()),
            ..InvokeConfig::default()
        },
        ..Config::default()
    }
    .with_section(&RedisConfig {
        url: redis.url(),
        prefix: node.into(),
        ..RedisConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unset_host_list_warns_with_the_fix_and_star_is_silent() {
    logs();
    let redis = RedisServer::start().expect("redis-server");
    let unset = Distributed::start(config(&redis, "unset-host", None))
        .await
        .expect("node");
    let warn = lines_of("unset-host")
        .into_iter()
        .find(|l| l.contains(" WARN "))
        .expect("a WARN about the unset host list");
    assert!(warn.contains(UNSET_HOST_WARNING), "{warn}");
    assert!(
        warn.contains("MODKIT_HOST= (empty)") && warn.contains("MODKIT_HOST=*"),
        "{warn}"
    );
    // It still hosts what it provides (the documented default), loudly.
    unset
        .container()
        .provide::<dyn Notes>(Arc::new(NoNotes))
        .await
        .unwrap();
    unset.container().check_hosting().unwrap();
    assert_eq!(
        unset.registry().lookup("todo.Notes").await.unwrap().len(),
        1
    );

    let star = Distributed::start(config(&redis, "star-host", Some(&["*"])))
        .await
        .expect("node");
    star.container()
        .provide::<dyn Notes>(Arc::new(NoNotes))
        .await
        .unwrap();
    star.container().check_hosting().unwrap();
    let star_lines = lines_of("star-host");
    assert!(
        !star_lines.iter().any(|l| l.contains(" WARN ")),
        "{star_lines:#?}"
    );
    assert!(
        star_lines
            .iter()
            .any(|l| l.contains("hosting checked") && l.contains("hosts=[\"todo.Notes\"]")),
        "{star_lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_list_naming_an_unknown_service_is_an_error_listing_the_known_ones() {
    logs();
    let redis = RedisServer::start().expect("redis-server");
    let node = Distributed::start(config(&redis, "wrong-name", Some(&["Notes"])))
        .await
        .expect("node");
    // `provide` cannot know yet that nothing named `Notes` will follow.
    node.container()
        .provide::<dyn Notes>(Arc::new(NoNotes))
        .await
        .unwrap();
    let err = node.container().check_hosting().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let text = err.to_string();
    assert!(text.contains("never provides: Notes"), "{text}");
    assert!(text.contains("provides are: todo.Notes"), "{text}");
    assert!(
        text.contains("did you mean todo.Notes for Notes?"),
        "{text}"
    );
    assert!(node
        .registry()
        .lookup("todo.Notes")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_logs_what_it_calls() {
    logs();
    let redis = RedisServer::start().expect("redis-server");
    let node = Distributed::start(config(&redis, "pure-caller", Some(&[])))
        .await
        .expect("node");
    node.container()
        .provide::<dyn Notes>(Arc::new(NoNotes))
        .await
        .unwrap();
    node.container().check_hosting().unwrap();
    let _client = node.container().get::<dyn Notes>().unwrap();
    let lines = lines_of("pure-caller");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("hosts=[]") && l.contains("calls=[\"todo.Notes\"]")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("calling service through the registry")
                && l.contains("todo.Notes")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_not_running_at_start_shows_the_url_and_the_cause() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}/");
    let config = Config::default().with_section(&RedisConfig {
        url,
        ..RedisConfig::default()
    });
    let err = Distributed::start(config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.starts_with("unavailable: cannot connect to redis"),
        "{text}"
    );
    // The URL, password redacted, as context.
    assert_eq!(
        err.context_value("url"),
        Some(format!("redis://:***@127.0.0.1:{port}/").as_str())
    );
    assert!(
        text.contains(&format!("(url: redis://:***@127.0.0.1:{port}/)")),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    // The source chain: down to the operating system's refusal.
    assert!(text.to_lowercase().contains("refused"), "{text}");
}
