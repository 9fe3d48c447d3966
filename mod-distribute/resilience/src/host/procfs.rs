//! What a host agent reads about its host and its processes: `/proc` (Linux)
//! and `statvfs(3)`.
//!
//! The parsers take the text and never panic: a missing field, a number
//! that does not parse, a process name with spaces and parentheses — each
//! gives `None` or zero, never a crash of the agent. Elsewhere than Linux
//! the files are missing: processes read as [`ProcState::Gone`], the host's
//! figures as zero.

use std::path::Path;

use crate::faults::report::ProcState;

/// One process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Its state letter, mapped.
    pub state: ProcState,
    /// `utime` + `stime`, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parses the text of `/proc/<pid>/stat`: `None` when it is not one.
///
/// The process name (field 2) is in parentheses and may itself hold spaces
/// and `)`: the fields are counted from its last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    // Fields from 3 (state) on: state is rest[0], utime (14) rest[11],
    // stime (15) rest[12], rss (24) rest[21].
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let state = match fields.first()?.chars().next()? {
        'R' | 'S' | 'D' | 'I' | 'W' | 'P' | 'K' => ProcState::Running,
        'T' | 't' => ProcState::Stopped,
        'Z' | 'X' | 'x' => ProcState::Zombie,
        _ => return None,
    };
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let cpu_ticks = number(11)
        .unwrap_or(0)
        .saturating_add(number(12).unwrap_or(0));
    // rss is signed in the kernel's format; a negative one reads as 0.
    let rss_pages = number(21).unwrap_or(0);
    Some(ProcStat {
        state,
        cpu_ticks,
        rss_pages,
    })
}

/// The 1-minute load average from the text of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    let load: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    load.is_finite().then_some(load)
}

/// `MemAvailable` and `MemTotal`, in bytes, from the text of
/// `/proc/meminfo` (each 0 when missing).
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let mut available = 0;
    let mut total = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let mut words = value.split_ascii_whitespace();
        let Some(number) = words.next().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let bytes = match words.next() {
            Some(unit) if unit.eq_ignore_ascii_case("kb") => number.saturating_mul(1024),
            _ => number,
        };
        match key.trim() {
            "MemAvailable" => available = bytes,
            "MemTotal" => total = bytes,
            _ => {}
        }
    }
    (available, total)
}

/// Process `pid` now: `None` when it does not exist (or `/proc` cannot be
/// read).
pub fn process(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// The 1-minute load average (0 when unknown).
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg(&t))
        .unwrap_or(0.0)
}

/// `MemAvailable` and `MemTotal` in bytes (0 when unknown).
pub fn memory() -> (u64, u64) {
    std::fs::read_to_string("/proc/meminfo")
        .map(|t| parse_meminfo(&t))
        .unwrap_or((0, 0))
}

/// The size of a memory page in bytes (4096 when unknown).
pub fn page_size() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf with a valid name has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if size > 0 {
            return size as u64;
        }
    }
    4096
}

/// Free bytes (for unprivileged users) on the file system of `path` (0 when
/// unknown).
pub fn disk_free(path: &Path) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return 0;
        };
        // SAFETY: an all-zero statvfs is a valid value of that plain C struct.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a pointer to a statvfs we own.
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return 0;
        }
        #[allow(clippy::unnecessary_cast)] // the field types differ by platform
        (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                        150 37 0 0 20 0 9 0 123456 987654321 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn a_stat_line_with_an_odd_name() {
        let stat = parse_stat(STAT).unwrap();
        assert_eq!(stat.state, ProcState::Running);
        assert_eq!(stat.cpu_ticks, 187);
        assert_eq!(stat.rss_pages, 2500);
    }

    #[test]
    fn state_letters() {
        let with = |letter: &str| {
            parse_stat(&STAT.replace(") S ", &format!(") {letter} "))).map(|s| s.state)
        };
        assert_eq!(with("R"), Some(ProcState::Running));
        assert_eq!(with("D"), Some(ProcState::Running));
        assert_eq!(with("I"), Some(ProcState::Running));
        assert_eq!(with("T"), Some(ProcState::Stopped));
        assert_eq!(with("t"), Some(ProcState::Stopped));
        assert_eq!(with("Z"), Some(ProcState::Zombie));
        assert_eq!(with("X"), Some(ProcState::Zombie));
        assert_eq!(with("?"), None);
    }

    #[test]
    fn odd_stat_text_never_panics() {
        for text in [
            "",
            ")",
            "1 (x)",
            "1 (x) ",
            "1 (x) T",
            "1 (x) R 1 2 3",
            "1 (x) S a b c d e f g h i j k l m n o p q r s t u v w",
            "1 (x) Z 1 1 1 0 -1 0 0 0 0 0 -5 99999999999999999999999 0 0 20 0 1 0 1 1 -3",
            "garbage without parentheses",
            "1 (\u{1F600}) \u{1F600}",
        ] {
            let _ = parse_stat(text);
        }
        let short = parse_stat("1 (x) T").unwrap();
        assert_eq!(
            (short.state, short.cpu_ticks, short.rss_pages),
            (ProcState::Stopped, 0, 0)
        );
        let negative = parse_stat("1 (x) Z 1 1 1 0 -1 0 0 0 0 0 -5 7 0 0 20 0 1 0 1 1 -3").unwrap();
        assert_eq!((negative.cpu_ticks, negative.rss_pages), (7, 0));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn loadavg() {
        assert_eq!(parse_loadavg("0.52 0.58 0.59 2/345 6789\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("abc 1 2"), None);
        assert_eq!(parse_loadavg("NaN 1 2"), None);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16314236 kB\nMemFree:         1234 kB\n\
                    MemAvailable:    8000000 kB\nBuffers: x kB\nnonsense\n:::\nHugePages_Total:       0\n";
        assert_eq!(parse_meminfo(text), (8_000_000 * 1024, 16_314_236 * 1024));
        assert_eq!(parse_meminfo(""), (0, 0));
        assert_eq!(parse_meminfo("MemTotal: 99999999999999999999 kB"), (0, 0));
        assert_eq!(
            parse_meminfo("MemTotal: 18446744073709551615 kB").1,
            u64::MAX
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_host_and_process() {
        let me = process(std::process::id()).expect("our own /proc/<pid>/stat");
        assert_eq!(me.state, ProcState::Running);
        assert!(me.rss_pages > 0);
        let (available, total) = memory();
        assert!(total > 0 && available <= total);
        assert!(load1() >= 0.0);
        assert!(disk_free(Path::new(".")) > 0);
        assert!(page_size() >= 1024);
        assert_eq!(process(u32::MAX), None);
        assert_eq!(disk_free(Path::new("/nonexistent/dir")), 0);
    }
}
