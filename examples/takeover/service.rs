//! The stateful service: `demo.Leaderboard`, its state and what a checkpoint
//! holds, and the node role that hosts it (as its owner or a standby).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock};

use modkit::prelude::*;
use modkit::state::{Role, StateConfig, StateHandle, Stateful};
use serde::{Deserialize, Serialize};

use crate::{lock, LEASE, PERIOD, PLAYERS};

/// A leaderboard whose scores live in the memory of one process at a time.
#[service(name = "demo.Leaderboard")]
pub trait Leaderboard {
    /// Adds `points` to `player` as update `id` (an id already applied
    /// counts once, so a retry is safe); who applied it.
    #[idempotent]
    async fn add(&self, id: u64, player: String, points: u64) -> Result<Answer, Error>;
    /// The whole board, as its owner holds it now.
    #[idempotent]
    async fn scores(&self) -> Result<(Answer, Scores), Error>;
}

/// Who answered a call: the node and its owner epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The node that owns the service.
    pub node: String,
    /// Its owner epoch.
    pub epoch: u64,
}

/// The leaderboard's state: what a checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Points per player.
    pub points: BTreeMap<String, u64>,
    /// The ids of the updates applied.
    pub applied: BTreeSet<u64>,
}

impl Scores {
    /// Applies update `id`, once.
    fn apply(&mut self, id: u64, player: &str, points: u64) {
        if self.applied.insert(id) {
            *self.points.entry(player.to_owned()).or_default() += points;
        }
    }

    /// Whether the points are exactly those of the updates applied.
    pub fn consistent(&self) -> bool {
        let mut again = Scores::default();
        for &id in &self.applied {
            again.apply(id, player(id), points(id));
        }
        again == *self
    }
}

/// The player of update `id`.
pub fn player(id: u64) -> &'static str {
    PLAYERS[id as usize % PLAYERS.len()]
}

/// The points of update `id`.
pub fn points(id: u64) -> u64 {
    1 + id % 3
}

/// The service in a node process: the scores, and the state handle that
/// tells its owner epoch.
struct Board {
    /// This process's node id.
    node: String,
    /// The state.
    scores: Mutex<Scores>,
    /// Set once the service is provided.
    handle: OnceLock<StateHandle>,
}

impl Board {
    /// This node, with its epoch while it owns the service.
    fn answer(&self) -> Answer {
        let epoch = match self.handle.get().map(StateHandle::role) {
            Some(Role::Owner { epoch }) => epoch,
            _ => 0,
        };
        Answer {
            node: self.node.clone(),
            epoch,
        }
    }
}

#[async_trait]
impl Leaderboard for Board {
    async fn add(&self, id: u64, player: String, points: u64) -> Result<Answer, Error> {
        lock(&self.scores).apply(id, &player, points);
        Ok(self.answer())
    }

    async fn scores(&self) -> Result<(Answer, Scores), Error> {
        Ok((self.answer(), lock(&self.scores).clone()))
    }
}

impl Stateful for Board {
    type State = Scores;

    async fn checkpoint(&self) -> modkit::Result<Scores> {
        Ok(lock(&self.scores).clone())
    }

    async fn restore(&self, state: Scores) -> modkit::Result<()> {
        *lock(&self.scores) = state;
        Ok(())
    }
}

/// A node process (this binary, started by the deployer): hosts the
/// leaderboard, as its owner or a standby, until SIGTERM.
pub async fn serve() -> modkit::Result<()> {
    let app = App::start(Config::load(None)?).await?;
    let board = Arc::new(Board {
        node: app.node_id().to_owned(),
        scores: Mutex::default(),
        handle: OnceLock::new(),
    });
    let state = StateConfig::new().period(PERIOD).lease(LEASE);
    let handle = app
        .provide_stateful::<dyn Leaderboard, _>(board.clone(), board.clone(), state)
        .await?;
    let _ = board.handle.set(handle);
    app.ready()?;
    app.serve_until_signal().await
}
