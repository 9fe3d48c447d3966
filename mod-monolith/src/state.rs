//! Stateful services in the monolith: checkpoints in `data_dir`, restored at
//! start (a warm restart after a crash or an upgrade).
//!
//! One file per service, `<data_dir>/state/<service>.ckpt`, replaced
//! atomically: written to `….tmp`, fsynced, renamed over the old one, the
//! folder fsynced. A crash therefore leaves the previous checkpoint or the
//! new one, never a torn one. The file is a header (`MODKITCK`, format
//! version, length) and the state encoded with the default codec.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mod_api::state::{CheckpointInfo, Role, StateCell, StateConfig, StateControl};
use mod_api::{BoxFuture, Error, ErrorKind, Result};

const MAGIC: &[u8; 8] = b"MODKITCK";
const HEADER: usize = 8 + 4 + 8;

/// Keeps one service's state in its checkpoint file.
pub struct StateKeeper {
    service: &'static str,
    cell: Arc<dyn StateCell>,
    path: PathBuf,
    /// One write at a time (periodic, on demand, final).
    writing: tokio::sync::Mutex<()>,
    stopped: AtomicBool,
    periodic: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl StateKeeper {
    /// Restores `service` from its checkpoint in `dir` (if there is one) and
    /// starts its periodic checkpoints.
    ///
    /// A checkpoint that cannot be read or restored fails the start
    /// ([`ErrorKind::Codec`] or [`ErrorKind::Io`], naming the file): the
    /// service does not start empty over state it could not read.
    pub async fn start(
        service: &'static str,
        cell: Arc<dyn StateCell>,
        dir: &Path,
        config: &StateConfig,
    ) -> Result<Arc<StateKeeper>> {
        let path = dir.join(format!("{service}.ckpt"));
        let in_file = |e: Error| e.with_context("file", path.display().to_string());
        let found = read(path.clone()).await.map_err(in_file)?;
        if let Some((version, state)) = found {
            cell.restore(version, &state).await.map_err(in_file)?;
            tracing::info!(service, file = %path.display(), bytes = state.len(), "state restored from the last checkpoint");
        }
        let keeper = Arc::new(StateKeeper {
            service,
            cell,
            path,
            writing: tokio::sync::Mutex::new(()),
            stopped: AtomicBool::new(false),
            periodic: Mutex::new(None),
        });
        let (weak, period) = (Arc::downgrade(&keeper), config.period);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(keeper) = weak.upgrade() else { return };
                if let Err(e) = keeper.write().await {
                    tracing::warn!(service = keeper.service, error = %e, "periodic checkpoint failed");
                }
            }
        });
        *keeper.periodic.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(keeper)
    }

    async fn write(&self) -> Result<CheckpointInfo> {
        let _one = self.writing.lock().await;
        let state = self.cell.checkpoint().await?;
        let info = CheckpointInfo {
            epoch: 0,
            version: self.cell.version(),
            bytes: state.len(),
        };
        let (path, version) = (self.path.clone(), info.version);
        tokio::task::spawn_blocking(move || write_atomically(&path, version, &state))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Internal, "checkpoint writer failed").with_source(e)
            })?
            .map_err(|e| e.with_context("file", self.path.display().to_string()))?;
        tracing::debug!(
            service = self.service,
            bytes = info.bytes,
            "checkpoint written"
        );
        Ok(info)
    }
}

impl StateControl for StateKeeper {
    fn service(&self) -> &'static str {
        self.service
    }

    fn role(&self) -> Role {
        match self.stopped.load(Ordering::SeqCst) {
            true => Role::Stopped,
            false => Role::Owner { epoch: 0 },
        }
    }

    fn checkpoint_now(&self) -> BoxFuture<'_, Result<CheckpointInfo>> {
        Box::pin(self.write())
    }

    fn stop(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.stopped.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            if let Some(task) = self
                .periodic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                task.abort();
            }
            let info = self.write().await?;
            tracing::info!(
                service = self.service,
                bytes = info.bytes,
                "final checkpoint written"
            );
            Ok(())
        })
    }
}

impl Drop for StateKeeper {
    fn drop(&mut self) {
        if let Some(task) = self
            .periodic
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// The checkpoint in `path`: its format version and state; `None` when there is none.
async fn read(path: PathBuf) -> Result<Option<(u32, Vec<u8>)>> {
    tokio::task::spawn_blocking(move || read_file(&path))
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, "checkpoint reader failed").with_source(e))?
}

fn read_file(path: &Path) -> Result<Option<(u32, Vec<u8>)>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::from(e)),
    };
    let torn = || Error::codec("not a modkit checkpoint, or a damaged one (header or length)");
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(torn());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| torn())?);
    let len = u64::from_le_bytes(bytes[12..20].try_into().map_err(|_| torn())?);
    if len != (bytes.len() - HEADER) as u64 {
        return Err(torn());
    }
    Ok(Some((version, bytes[HEADER..].to_vec())))
}

/// Replaces the checkpoint in `path` so that a crash leaves the old one or the new one.
fn write_atomically(path: &Path, version: u32, state: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("ckpt.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(MAGIC)?;
    file.write_all(&version.to_le_bytes())?;
    file.write_all(&(state.len() as u64).to_le_bytes())?;
    file.write_all(state)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mod_api::state::{Stateful, TypedCell};

    #[derive(Default)]
    struct Counter(std::sync::Mutex<u64>);

    impl Stateful for Counter {
        type State = u64;
        async fn checkpoint(&self) -> Result<u64> {
            Ok(*self.0.lock().unwrap())
        }
        async fn restore(&self, state: u64) -> Result<()> {
            *self.0.lock().unwrap() = state;
            Ok(())
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("modkit-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn a_restart_restores_the_final_checkpoint_and_a_damaged_file_fails_the_start() {
        let dir = temp_dir("warm");
        let config = StateConfig::new();
        let first = Arc::new(Counter::default());
        let keeper = StateKeeper::start(
            "t.Counter",
            Arc::new(TypedCell(first.clone())),
            &dir,
            &config,
        )
        .await
        .unwrap();
        *first.0.lock().unwrap() = 41;
        keeper.stop().await.unwrap();
        assert_eq!(keeper.role(), Role::Stopped);

        let second = Arc::new(Counter::default());
        let again = StateKeeper::start(
            "t.Counter",
            Arc::new(TypedCell(second.clone())),
            &dir,
            &config,
        )
        .await
        .unwrap();
        assert_eq!(*second.0.lock().unwrap(), 41, "warm restart");
        drop(again);

        let file = dir.join("t.Counter.ckpt");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&file, bytes).unwrap();
        let err = StateKeeper::start(
            "t.Counter",
            Arc::new(TypedCell(Arc::new(Counter::default()))),
            &dir,
            &config,
        )
        .await
        .err()
        .expect("a torn checkpoint is refused");
        assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
        assert!(err.to_string().contains("t.Counter.ckpt"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn periodic_checkpoints_follow_the_state() {
        let dir = temp_dir("periodic");
        let counter = Arc::new(Counter::default());
        let config = StateConfig::new().period(std::time::Duration::from_millis(100));
        let _keeper = StateKeeper::start(
            "t.Periodic",
            Arc::new(TypedCell(counter.clone())),
            &dir,
            &config,
        )
        .await
        .unwrap();
        *counter.0.lock().unwrap() = 7;
        let path = dir.join("t.Periodic.ckpt");
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if let Ok(Some((1, state))) = read(path.clone()).await {
                assert_eq!(mod_api::codec::decode::<u64>(&state).unwrap(), 7);
                let _ = std::fs::remove_dir_all(&dir);
                return;
            }
        }
        panic!("no periodic checkpoint was written");
    }
}
