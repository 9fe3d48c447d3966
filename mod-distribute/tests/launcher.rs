//! The `RedisServer` launcher's guarantee: a `redis-server` it started dies
//! with the process that started it, even when that process is SIGKILLed
//! (no `Drop` runs then). The test runs this test binary again as a helper
//! (env `MODKIT_LAUNCHER_HELPER`), which starts a server from a short-lived
//! thread, prints its pid and port, and waits to be killed.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mod_distribute::RedisServer;

mod common;

use common::gone;

const HELPER_ENV: &str = "MODKIT_LAUNCHER_HELPER";

/// The helper's side: does nothing in a normal test run.
#[test]
fn launcher_helper() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    // Started from a thread that ends at once: the server must outlive the
    // thread (PR_SET_PDEATHSIG watches the thread that forked).
    let server = std::thread::spawn(|| RedisServer::start().expect("redis-server"))
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.pid().unwrap();
    println!("READY {pid} {}", server.port());
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn redis_server_dies_with_a_sigkilled_owner() {
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "launcher_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let ready = loop {
        let line = lines.next().expect("helper ended before READY").unwrap();
        // libtest may print "test launcher_helper ... " on the same line.
        if let Some((_, rest)) = line.split_once("READY ") {
            break rest.trim().to_owned();
        }
    };
    let (pid, port) = ready.split_once(' ').unwrap();
    let (pid, port): (u32, u16) = (pid.parse().unwrap(), port.parse().unwrap());
    assert!(!gone(pid), "redis-server {pid} runs while its owner lives");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "and serves"
    );

    helper.kill().unwrap(); // SIGKILL
    helper.wait().unwrap();
    let start = Instant::now();
    // The leader thread may show as a zombie while its other threads still
    // exit and hold the sockets: wait for both signs of death.
    while !gone(pid) || TcpStream::connect(("127.0.0.1", port)).is_ok() {
        if start.elapsed() > Duration::from_secs(5) {
            // Do not leave it behind ourselves.
            // SAFETY: kill(2) on a pid we checked is our helper's redis-server.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("redis-server {pid} (port {port}) outlived its SIGKILLed owner");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
