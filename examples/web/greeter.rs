//! The example's service: greets a user and counts their visits in a cache.
//!
//! Plain business code: it names no backend, so the page that calls it works
//! the same with the service in this process or behind RPC.

use std::sync::Arc;
use std::time::Duration;

use modkit::prelude::*;
use serde::{Deserialize, Serialize};

/// What the greeting page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Greeting {
    pub text: String,
    pub visits: u64,
}

#[service(name = "web.Greeter")]
pub trait Greeter {
    /// Greets `user` (shown as `nickname`) and counts the visit.
    async fn greet(&self, user: String, nickname: String) -> Result<Greeting, Error>;
}

/// The implementation: visit counters in a modkit cache (Redis when distributed).
pub struct CountingGreeter {
    visits: Arc<dyn Cache<u64>>,
}

impl CountingGreeter {
    pub fn new(app: &App) -> Result<Self> {
        let policy = CachePolicy::new().ttl(Duration::from_secs(24 * 3600));
        Ok(CountingGreeter {
            visits: app.cache::<u64>("web.visits", policy)?,
        })
    }
}

#[async_trait]
impl Greeter for CountingGreeter {
    async fn greet(&self, user: String, nickname: String) -> Result<Greeting, Error> {
        // Read-modify-write is racy across concurrent visits; a visit counter may
        // miss one, which is fine for a greeting.
        let visits = self.visits.get(&user).await?.unwrap_or(0) + 1;
        self.visits.set(&user, visits).await?;
        Ok(Greeting {
            text: format!("hello, {nickname}"),
            visits,
        })
    }
}
