//! The example's login page in a real browser: headless Chromium fills the
//! form, clicks "Log in", lands on the greeting, clicks "Log out", and is sent
//! back to the login page when it asks for the greeting again.
//!
//! Needs Chromium (Debian: `apt-get install -y chromium`; another binary:
//! `MODKIT_CHROMIUM=/path/to/chrome`). A screenshot of the run is kept under
//! the target directory (`<target>/tmp/web-browser/`), printed at the end.

#[path = "../examples/web/app.rs"]
#[allow(dead_code)]
mod app;
mod browser;
#[path = "../examples/web/greeter.rs"]
mod greeter;
#[path = "../examples/web/pages.rs"]
mod pages;
mod web_support;

use std::path::{Path, PathBuf};

use axum::response::Html;
use browser::{chromium, chromium_async};
use modkit::prelude::*;
use modkit::web::CookieConfig;
use web_support::{serve_with, Package};

/// A page of the same origin that drives the real login page in an iframe,
/// as a user would (typing, clicking), and writes what it saw into `#result`.
/// `document.cookie` is read to show that `HttpOnly` hides the session id.
const DRIVER: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>driver</title></head><body>
<iframe id="app" src="/login" width="760" height="420"></iframe>
<pre id="result">pending</pre>
<script>
const frame = document.getElementById('app');
const seen = [];
let step = 0;
frame.addEventListener('load', () => {
  const doc = frame.contentDocument;
  const path = frame.contentWindow.location.pathname;
  seen.push('step ' + step + ': ' + path);
  if (step === 0) {
    doc.querySelector('input[name=user]').value = 'ada';
    doc.querySelector('input[name=password]').value = 'lovelace';
    doc.querySelector('button[type=submit]').click();
  } else if (step === 1) {
    const greeting = doc.getElementById('greeting');
    seen.push('greeting: ' + (greeting ? greeting.textContent : 'none'));
    seen.push('script sees cookies: [' + doc.cookie + ']');
    doc.getElementById('logout').click();
  } else if (step === 2) {
    frame.src = '/hello';
  } else {
    seen.push('done');
  }
  step += 1;
  document.getElementById('result').textContent = seen.join('\n');
});
</script>
</body></html>
"#;

fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_through_the_form_and_out_again() {
    chromium(); // fail first, and clearly, when it is missing
    let package = match cfg!(feature = "monolith") {
        true => Package::Monolith,
        false => Package::Distribute,
    };
    fn driver(_: &App) -> axum::Router {
        axum::Router::new().route("/driver", axum::routing::get(|| async { Html(DRIVER) }))
    }
    let server = serve_with(
        package,
        SessionConfig::default(),
        CookieConfig::default(),
        driver,
    )
    .await;

    // The login page as the browser renders it.
    let dom = chromium_async(server.url("/login"), vec!["--dump-dom".into()]).await;
    assert!(
        dom.contains("<form method=\"post\" action=\"/login\">"),
        "{dom}"
    );
    assert!(dom.contains("name=\"password\""), "{dom}");

    // Log in by the form, see the service's greeting, log out, try again.
    let dom = chromium_async(server.url("/driver"), vec!["--dump-dom".into()]).await;
    let start = dom
        .find("<pre id=\"result\">")
        .expect("the driver's result")
        + 17;
    let result = &dom[start..dom[start..].find("</pre>").unwrap() + start];
    let expected = "step 0: /login\nstep 1: /hello\ngreeting: hello, ada (visit 1)\n\
                    script sees cookies: []\nstep 2: /login\nstep 3: /login\ndone";
    assert_eq!(result, expected, "what the browser saw");

    let shot = artefacts().join("login-driver.png");
    let _ = std::fs::remove_file(&shot);
    chromium_async(
        server.url("/driver"),
        vec![format!("--screenshot={}", shot.display())],
    )
    .await;
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "no screenshot at {}", shot.display());
    println!("screenshot: {}", shot.display());
}
