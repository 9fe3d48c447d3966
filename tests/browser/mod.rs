//! Headless Chromium for the browser tests: the binary (`/usr/bin/chromium`
//! or `MODKIT_CHROMIUM`) run on one URL with a fresh profile.

#![allow(dead_code)] // each test target uses a part

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary; fails the test, saying what to install, when it is missing.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("MODKIT_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "headless Chromium is needed for this test and {} is missing: install it \
         (Debian: `apt-get install -y chromium`) or set MODKIT_CHROMIUM to a Chrome/Chromium binary",
        path.display()
    );
    path
}

/// Runs headless Chromium on `url` with `extra` flags (a fresh profile each
/// time); its standard output, or a failure after `within`.
pub fn run_chromium(url: &str, extra: &[String], within: Duration) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Virtual time waits for the page's navigations before the dump.
            "--virtual-time-budget=15000",
            "--window-size=800,600",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromium().display()));
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("chromium did not finish within {within:?} on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chromium failed ({}): {}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// [`run_chromium`] off the async runtime, within 60 s.
pub async fn chromium_async(url: String, extra: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || run_chromium(&url, &extra, Duration::from_secs(60)))
        .await
        .unwrap()
}
