//! The in-memory raft log and vote.
//!
//! Nothing here touches a disk: a voter that restarts comes back empty and
//! catches up from the leader (log entries or a snapshot).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, Vote};

use super::TypeConfig;
use crate::consensus::VoterId;

/// Locks `mutex`, ignoring poisoning: no code path panics while holding it.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct LogData {
    vote: Option<Vote<VoterId>>,
    committed: Option<LogId<VoterId>>,
    last_purged: Option<LogId<VoterId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

/// The raft log and vote, in memory; clones share the same log (the
/// replication tasks read it through clones).
#[derive(Clone, Default)]
pub(crate) struct LogStore {
    data: Arc<Mutex<LogData>>,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<VoterId>> {
        let data = lock(&self.data);
        Ok(data.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<VoterId>> {
        let data = lock(&self.data);
        let last = data.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: data.last_purged,
            last_log_id: last.or(data.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<VoterId>) -> Result<(), StorageError<VoterId>> {
        lock(&self.data).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<VoterId>>, StorageError<VoterId>> {
        Ok(lock(&self.data).vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<VoterId>>,
    ) -> Result<(), StorageError<VoterId>> {
        lock(&self.data).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<VoterId>>, StorageError<VoterId>> {
        Ok(lock(&self.data).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<VoterId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut data = lock(&self.data);
            for entry in entries {
                data.entries.insert(entry.log_id.index, entry);
            }
        }
        // In memory, "flushed" is "stored".
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<VoterId>) -> Result<(), StorageError<VoterId>> {
        lock(&self.data).entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<VoterId>) -> Result<(), StorageError<VoterId>> {
        let mut data = lock(&self.data);
        data.last_purged = Some(log_id);
        data.entries = data.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::GroupState;
    use crate::raft::state_machine::StateMachine;
    use openraft::testing::{StoreBuilder, Suite};
    use tokio::sync::watch;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine> for Builder {
        async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<VoterId>> {
            let state = Arc::new(watch::channel(GroupState::default()).0);
            Ok(((), LogStore::default(), StateMachine::new(state)))
        }
    }

    #[test]
    fn the_stores_pass_openraft_storage_suite() {
        Suite::test_all(Builder).expect("openraft's storage suite");
    }
}
