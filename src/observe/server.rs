//! The HTTP server of `/metrics`, `/status` and `/status.json`.

use std::net::SocketAddr;

use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};

use super::{scrape, status};
use crate::App;

/// The page itself: inline CSS and JS, no external resource.
const PAGE: &str = include_str!("status.html");

/// A running metrics server; it stops when the last clone of its `App` is dropped.
pub(crate) struct Observer {
    addr: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl Observer {
    /// Serves `app`'s metrics and status on `listener` (bound at `addr`).
    /// `app` must not hold this observer (it would never be dropped).
    pub(crate) fn start(app: App, listener: tokio::net::TcpListener, addr: SocketAddr) -> Observer {
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/status", get(|| async { Html(PAGE) }))
            .route("/status.json", get(status_json))
            .with_state(app);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(%addr, error = %e, "metrics server stopped");
            }
        });
        tracing::info!(url = %format!("http://{addr}/metrics"), status = %format!("http://{addr}/status"), "serving metrics and the status page");
        Observer {
            addr,
            task: task.abort_handle(),
        }
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The recorder's text: the one place where every response's numbers are read.
async fn scrape() -> String {
    // Sampled gauges (queue depths) are refreshed here, before rendering.
    mod_api::layer::refresh_gauges().await;
    match super::handle() {
        Ok(handle) => handle.render(),
        // Unreachable in practice: the server starts after the recorder.
        Err(e) => format!("# {e}\n"),
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        scrape().await,
    )
}

async fn status_json(axum::extract::State(app): axum::extract::State<App>) -> impl IntoResponse {
    let samples = scrape::parse(&scrape().await);
    Json(status::status(&app, &samples).await)
}
