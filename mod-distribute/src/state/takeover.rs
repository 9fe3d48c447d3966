//! Choosing where a stateful service goes, and asking it to go there.

use std::collections::HashSet;
use std::time::Duration;

use mod_api::{Error, Registry, Result, Status};

use super::store::{parse_token, StateStore};
use crate::Redis;

/// How long a takeover's reservation of the target lasts: longer than an
/// owner's lease, so that the target of a dead owner claims the service once
/// the lease runs out; after it, any standby may.
pub const TAKEOVER_HOLD: Duration = Duration::from_secs(10);

/// The standby a takeover of the service should move it to: the least
/// loaded one with a fresh heartbeat, on a node with no instance (of any
/// service) cordoned or down in the registry, and not in `except`. `None`
/// when there is none. Ties go to the lowest node id, so every caller
/// makes the same choice.
pub async fn choose_target(
    store: &StateStore,
    registry: &dyn Registry,
    except: &[&str],
) -> Result<Option<String>> {
    let standbys = store.standbys().await?;
    if standbys.is_empty() {
        return Ok(None);
    }
    let mut unhealthy = HashSet::new();
    for service in registry.services().await? {
        for instance in registry.lookup(&service).await? {
            if instance.status != Status::Up {
                let node = instance.metadata.get("node").unwrap_or(&instance.id);
                unhealthy.insert(node.clone());
            }
        }
    }
    Ok(standbys
        .into_iter()
        .filter(|(node, _)| !unhealthy.contains(node) && !except.contains(&node.as_str()))
        .min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
        .map(|(node, _)| node))
}

/// Moves stateful service `service` to `to`, or to the standby
/// [`choose_target`] picks (never the current owner): the owner, when it
/// answers, quiesces, writes a final checkpoint and releases the service at
/// once; when it does not (crashed, frozen, cut off), the target claims it
/// when the owner's lease has run out and restores the last periodic
/// checkpoint. Returns the target.
///
/// No healthy standby: [`Unavailable`](mod_api::ErrorKind::Unavailable).
pub async fn request_takeover(
    redis: &Redis,
    registry: &dyn Registry,
    service: &str,
    to: Option<&str>,
) -> Result<String> {
    let store = StateStore::new(redis.clone(), service);
    let target = match to {
        Some(to) => to.to_owned(),
        None => {
            let seen = store.ownership().await?;
            let owner = seen.owner.as_deref().and_then(parse_token).map(|(_, n)| n);
            let except: Vec<&str> = owner.into_iter().collect();
            choose_target(&store, registry, &except)
                .await?
                .ok_or_else(|| {
                    Error::unavailable(format!(
                        "no healthy standby of service {service} to take it over"
                    ))
                })?
        }
    };
    store.request(&target, TAKEOVER_HOLD).await?;
    tracing::info!(service, to = %target, "takeover requested");
    Ok(target)
}

/// Moves stateful service `service` away from `node` (at risk, or found
/// faulty), unless it has moved already — a standby takes over by itself
/// once a dead owner's lease runs out. Returns the owner, or the owner to be.
pub async fn move_away(
    redis: &Redis,
    registry: &dyn Registry,
    service: &str,
    node: &str,
) -> Result<String> {
    let seen = StateStore::new(redis.clone(), service).ownership().await?;
    let owner = seen.owner.as_deref().and_then(parse_token).map(|(_, n)| n);
    match owner {
        Some(owner) if owner != node => Ok(owner.to_owned()),
        _ => request_takeover(redis, registry, service, None).await,
    }
}
