//! What several of mod-distribute's test crates share.
#![allow(dead_code)] // each test crate uses its own part

/// Whether process `pid` is gone (or a zombie nobody reaped yet: an orphan
/// in a container whose init does not reap).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S …": the state letter after the command's parenthesis.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// This test binary run again as one of its own tests (a "role": a replica,
/// a node) with `env`; killed and reaped when dropped, whatever the test did.
/// The role prints a line containing `READY <text>` when it is up, and stops
/// gracefully when its stdin closes.
pub struct RoleProcess {
    child: std::process::Child,
}

impl RoleProcess {
    /// Starts test `role_test` of this binary with `env` and waits for its
    /// `READY` line; the text after `READY ` is returned, every later line
    /// of its stdout goes to `lines` (on a thread of its own).
    pub fn spawn(
        role_test: &str,
        env: &[(&str, &str)],
        mut lines: impl FnMut(String) + Send + 'static,
    ) -> (RoleProcess, String) {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", role_test, "--nocapture", "--test-threads", "1"])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the role");
        let stdout = child.stdout.take().expect("stdout");
        let mut out = BufReader::new(stdout).lines();
        let ready = out
            .by_ref()
            .map_while(|l| l.ok())
            .find_map(|l| l.split_once("READY ").map(|(_, rest)| rest.to_owned()));
        // Keep draining its stdout: a closed pipe would fail its last prints.
        std::thread::spawn(move || out.map_while(|l| l.ok()).for_each(&mut lines));
        let process = RoleProcess { child };
        let ready = ready.unwrap_or_else(|| panic!("{role_test} {env:?} did not become ready"));
        (process, ready)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it `signal` (`-STOP`, `-CONT`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills it for real (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes its stdin (its signal to shut down gracefully) and waits for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().expect("role exit")
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
