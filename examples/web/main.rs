//! A small web application on axum and modkit: log in with a form, a page that
//! calls a modkit service, a versioned session update, log out.
//!
//! ```text
//! cargo run --example web --features axum                                      # monolith
//! cargo run --example web --no-default-features --features distribute,axum     # distributed
//! ```
//!
//! Then open <http://localhost:3000> (`MODKIT_WEB_LISTEN` changes the address).
//! The distributed run is one process on the distributed backends: it starts
//! its own `redis-server` (unless `MODKIT_REDIS_URL` names one), keeps the
//! sessions and the visit counters there and hosts the `Greeter` service over
//! RPC, so more processes of this binary pointed at the same Redis share the
//! logins. Ctrl-C stops it.
//!
//! The cookie is `Secure`: browsers accept that over plain HTTP from
//! `localhost` and `127.0.0.1` only; anything else needs HTTPS in front.

mod app;
mod greeter;
mod pages;

use std::time::Duration;

use modkit::prelude::*;
use modkit::web::CookieConfig;

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    #[allow(unused_mut)]
    let mut config = Config::load(None)?;
    #[cfg(feature = "distribute")]
    let _redis = own_redis(&mut config)?;

    let app = App::start(config).await?;
    app::provide(&app).await?;
    let router = app::router(&app, SessionConfig::default(), CookieConfig::default())?;

    let listen = std::env::var("MODKIT_WEB_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    println!(
        "web: {} package, http://localhost:{}/ (Ctrl-C stops)",
        app.kind(),
        addr.port()
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    app.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// On the distributed package: a private `redis-server` unless
/// `MODKIT_REDIS_URL` names one, and this process hosting the `Greeter`.
#[cfg(feature = "distribute")]
fn own_redis(config: &mut Config) -> modkit::Result<Option<modkit::distribute::RedisServer>> {
    if modkit::BackendKind::of(config)? != modkit::BackendKind::Distribute {
        return Ok(None);
    }
    // Named, not left unset (unless MODKIT_HOST says): this process serves
    // the service it calls.
    if config.invoke.host.is_none() {
        config.invoke.host = Some(vec![<dyn greeter::Greeter as Service>::NAME.into()]);
    }
    if std::env::var("MODKIT_REDIS_URL").is_ok() {
        return Ok(None);
    }
    let server = modkit::distribute::RedisServer::start()?;
    config.edit_section(|r: &mut modkit::distribute::RedisConfig| r.url = server.url())?;
    Ok(Some(server))
}
