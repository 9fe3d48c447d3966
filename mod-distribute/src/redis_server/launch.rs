//! Spawning `redis-server` so that it dies with the process that started it.
//!
//! On Linux the child asks the kernel, between `fork` and `exec`, for SIGKILL
//! when its parent goes away (`prctl(PR_SET_PDEATHSIG, SIGKILL)`). That
//! "parent" is the *thread* that forked, not the process: a server spawned
//! from a tokio worker, a `spawn_blocking` thread (those exit after 10 s idle)
//! or a libtest test thread would be killed as soon as that thread ends, while
//! its `RedisServer` is still in use. So every child is forked by one spawner
//! thread that lives until the process exits; the signal then fires exactly
//! when the process dies, however it dies (SIGKILL included, where no `Drop`
//! runs). The child also checks that its parent did not die before the
//! `prctl` (then it exits at once). Other platforms have no such call: there a
//! server outlives a killed owner (only `Drop` stops it).

use std::io;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Job = (Command, mpsc::Sender<io::Result<Child>>);

/// The spawner thread's inbox.
static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();

fn spawner() -> io::Result<mpsc::Sender<Job>> {
    if let Some(tx) = SPAWNER.get() {
        return Ok(tx.lock().unwrap_or_else(|e| e.into_inner()).clone());
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("modkit-redis-spawner".into())
        .spawn(move || {
            // Never returns while the process lives: a `Sender` stays in SPAWNER
            // (the loser of a first-call race ends at once: its sender is dropped).
            for (mut cmd, reply) in rx {
                let _ = reply.send(spawn_here(&mut cmd));
            }
        })?;
    // Two first callers may race: one thread wins.
    let tx = SPAWNER.get_or_init(|| Mutex::new(tx));
    Ok(tx.lock().unwrap_or_else(|e| e.into_inner()).clone())
}

#[cfg(target_os = "linux")]
fn spawn_here(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: `getpid` is always safe; taken here, before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the hook runs in the forked child before `exec` and calls only
    // async-signal-safe functions (prctl, getppid, _exit); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the prctl: nobody would signal us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
}

#[cfg(not(target_os = "linux"))]
fn spawn_here(cmd: &mut Command) -> io::Result<Child> {
    cmd.spawn()
}

/// Spawns `cmd` from the spawner thread, so the child dies with this process.
pub(super) fn spawn(cmd: Command) -> io::Result<Child> {
    let (reply, answer) = mpsc::channel();
    spawner()?
        .send((cmd, reply))
        .map_err(|_| io::Error::other("redis-server spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("redis-server spawner thread is gone"))?
}
