//! Poison messages: stream entries whose field `m` does not decode as the
//! queue's message type (written by another program, an older build, or by
//! hand with `XADD`).
//!
//! Such an entry is a failed delivery that can never succeed: decoding the same
//! bytes again gives the same error. Waiting for `max_deliveries` would only
//! hide it for `max_deliveries` visibility timeouts and then hand it to every
//! consumer once more, so it is moved to the dead-letter stream at once, with a
//! `reason` field (`undecodable: …`) and its `source_id`, and acknowledged in
//! the group, so it never comes back. The poll goes on with the next entry.
//! The same holds for a poison entry redelivered (through `XCLAIM`) after a
//! consumer crashed holding it: it takes this path when it is handed out again.

use mod_api::{Error, Result};

use super::ops::{Core, Raw};
use super::scripts::DEAD_LETTER_SCRIPT;
use crate::redis::script::{evalsha, run};

/// Longest `reason` written to the dead-letter stream (an error chain can be long).
const MAX_REASON: usize = 512;

/// Moves the undecodable entry `raw`, delivered in `group`, to the dead-letter
/// stream with the decode error `error` as its reason; logged once, at WARN.
///
/// Fails only when Redis does; the entry then stays pending and comes back
/// after the visibility timeout, to be moved then.
pub(super) async fn dead_letter_undecodable(
    core: &Core,
    group: &str,
    raw: &Raw,
    error: &Error,
) -> Result<()> {
    let detail = error.to_detached();
    let mut reason = format!("undecodable: {}", detail.message());
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    tracing::warn!(
        queue = %core.name, group, id = %raw.id, delivery_count = raw.count,
        error = %detail, dead_letters = %core.dead_letter_key,
        "message cannot be decoded: moved to the dead-letter queue at once"
    );
    let bytes =
        core.key.len() + core.dead_letter_key.len() + group.len() + raw.id.len() + reason.len();
    let mut cmd = evalsha(&DEAD_LETTER_SCRIPT, 2, 5, bytes);
    cmd.arg(&core.key)
        .arg(&core.dead_letter_key)
        .arg(group)
        .arg(&raw.id)
        .arg(&reason);
    let _: redis::Value = run(&mut core.redis.conn(), &DEAD_LETTER_SCRIPT, &cmd).await?;
    mod_api::layer::dead_lettered(&core.name, "undecodable");
    Ok(())
}
