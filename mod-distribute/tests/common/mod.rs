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
