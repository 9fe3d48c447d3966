//! The state machine: [`GroupState`] in a watch channel, and its snapshots
//! (the state as JSON).

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::watch;

use super::store::lock;
use super::TypeConfig;
use crate::consensus::{GroupState, VoterId};

/// A snapshot as kept by the state machine: its meta and the JSON of the
/// [`GroupState`] it captures.
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<VoterId, BasicNode>,
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn to_snapshot(&self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        }
    }
}

/// The state machine: applies each committed [`Command`](crate::Command) to
/// the [`GroupState`] held in a watch channel, so every apply is seen by
/// [`Consensus::state`](crate::Consensus::state) subscribers.
pub(crate) struct StateMachine {
    last_applied: Option<LogId<VoterId>>,
    membership: StoredMembership<VoterId, BasicNode>,
    state: Arc<watch::Sender<GroupState>>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    snapshots_built: u64,
}

impl StateMachine {
    /// An empty state machine publishing into `state`.
    pub(crate) fn new(state: Arc<watch::Sender<GroupState>>) -> StateMachine {
        StateMachine {
            last_applied: None,
            membership: StoredMembership::default(),
            state,
            snapshot: Arc::default(),
            snapshots_built: 0,
        }
    }
}

/// Captures the state machine at the moment it was asked for a snapshot;
/// building runs concurrently with later applies.
pub(crate) struct SnapshotBuilder {
    last_applied: Option<LogId<VoterId>>,
    membership: StoredMembership<VoterId, BasicNode>,
    state: GroupState,
    id: u64,
    slot: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<VoterId>> {
        let data = serde_json::to_vec(&self.state).map_err(|e| StorageError::IO {
            source: StorageIOError::write_snapshot(None, AnyError::new(&e)),
        })?;
        let snapshot_id = match self.last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id, log_id.index, self.id),
            None => format!("--{}", self.id),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data,
        };
        let snapshot = stored.to_snapshot();
        *lock(&self.slot) = Some(stored);
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<VoterId>>, StoredMembership<VoterId, BasicNode>), StorageError<VoterId>>
    {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<VoterId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => self.state.send_modify(|state| {
                    state.apply(&command);
                }),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            responses.push(());
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            state: self.state.borrow().clone(),
            id: self.snapshots_built,
            slot: self.snapshot.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<VoterId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<VoterId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<VoterId>> {
        let data = snapshot.into_inner();
        let state: GroupState = serde_json::from_slice(&data).map_err(|e| StorageError::IO {
            source: StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)),
        })?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.state.send_replace(state);
        *lock(&self.snapshot) = Some(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<VoterId>> {
        Ok(lock(&self.snapshot)
            .as_ref()
            .map(StoredSnapshot::to_snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::Command;
    use openraft::CommittedLeaderId;

    fn normal(index: u64, command: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    #[tokio::test]
    async fn applies_publish_and_a_snapshot_restores_the_state() {
        let state = Arc::new(watch::channel(GroupState::default()).0);
        let mut seen = state.subscribe();
        let mut sm = StateMachine::new(state.clone());
        let report = |voter| Command::Report {
            voter,
            node: "a:1".into(),
            down: true,
        };
        sm.apply(vec![normal(1, report(1)), normal(2, report(2))])
            .await
            .unwrap();
        assert!(seen.has_changed().unwrap());
        assert_eq!(seen.borrow_and_update().voters_down("a:1"), 2);

        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(2));
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);

        let other_state = Arc::new(watch::channel(GroupState::default()).0);
        let mut other = StateMachine::new(other_state.clone());
        other
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(*other_state.borrow(), *state.borrow());
        let (applied, _) = other.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));

        let garbage = Box::new(Cursor::new(b"not json".to_vec()));
        assert!(other
            .install_snapshot(&current.meta, garbage)
            .await
            .is_err());
        assert_eq!(
            *other_state.borrow(),
            *state.borrow(),
            "a bad snapshot changes nothing"
        );
    }
}
