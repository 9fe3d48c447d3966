//! The session store's Lua scripts (one per operation, each atomic).
//!
//! Shared shape: read the record, take `now` from Redis `TIME`, check it is
//! live (now < min(last seen + idle, created + absolute); Redis already
//! expires it then, the check covers nodes configured differently), write,
//! and move the key's expiry to the new end (`PXAT`), so Redis removes the
//! session itself. Record layout: `session/record.rs`.

use std::sync::LazyLock;

use redis::Script;

use crate::redis::script::now_ms;

/// Parses the header of record `v` into c, l, ver, plen and checks liveness
/// (`idle`, `abs_end` must be set; returns `dead` when ended).
macro_rules! parse_live {
    ($dead:literal) => {
        concat!(
            r"
local c = tonumber(string.sub(v, 1, 15))
local l = tonumber(string.sub(v, 16, 30))
local ver = tonumber(string.sub(v, 31, 50))
local plen = tonumber(string.sub(v, 51, 55))
if not (c and l and ver and plen) then return redis.error_reply('corrupt session record') end
local abs_end = c + abs
if math.min(l + idle, abs_end) <= now then
  redis.call('DEL', KEYS[1])
  return ",
            $dead,
            r"
end
local function header(l2, ver2)
  return string.format('%015.0f%015.0f%020.0f', c, l2, ver2)
end
"
        )
    };
}

/// KEYS: session, principal index. ARGV: body (principal length, principal,
/// data), idle ms, absolute ms, id, session key base. Returns `now`, or nil
/// when the id is taken.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        "if redis.call('EXISTS', KEYS[1]) == 1 then return false end\n",
        now_ms!(),
        r"
local abs_end = now + tonumber(ARGV[3])
local v = string.format('%015.0f%015.0f%020.0f', now, now, 1) .. ARGV[1]
redis.call('SET', KEYS[1], v, 'PXAT', math.min(now + tonumber(ARGV[2]), abs_end))
for _, id in ipairs(redis.call('SRANDMEMBER', KEYS[2], 3)) do
  if redis.call('EXISTS', ARGV[5] .. id) == 0 then redis.call('SREM', KEYS[2], id) end
end
redis.call('SADD', KEYS[2], ARGV[4])
if redis.call('PEXPIRETIME', KEYS[2]) < abs_end then redis.call('PEXPIREAT', KEYS[2], abs_end) end
return now"
    ))
});

/// Reads and slides: rewrites only the last-seen field in place (the hot
/// path parses just the two timestamps). KEYS: session. ARGV: idle ms,
/// absolute ms, least ms between two refreshes.
/// Returns nil, or {record as stored before, last seen}.
pub(super) static VALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        "local v = redis.call('GET', KEYS[1])\nif not v then return false end\n",
        now_ms!(),
        r"
local idle = tonumber(ARGV[1])
local c = tonumber(string.sub(v, 1, 15))
local l = tonumber(string.sub(v, 16, 30))
if not (c and l) then return redis.error_reply('corrupt session record') end
local abs_end = c + tonumber(ARGV[2])
if math.min(l + idle, abs_end) <= now then
  redis.call('DEL', KEYS[1])
  return false
end
if now - l >= tonumber(ARGV[3]) then
  l = now
  redis.call('SETRANGE', KEYS[1], 15, string.format('%015.0f', l))
  redis.call('PEXPIREAT', KEYS[1], math.min(l + idle, abs_end))
end
return {v, l}"
    ))
});

/// Compare-and-set of the data. KEYS: session. ARGV: expected version, data,
/// idle ms, absolute ms. Returns {0} ended, {1, stored version} conflict,
/// {2, new record without data} done.
pub(super) static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        "local v = redis.call('GET', KEYS[1])\nif not v then return {0, false} end\n",
        now_ms!(),
        "local idle = tonumber(ARGV[3])\nlocal abs = tonumber(ARGV[4])\n",
        parse_live!("{0, false}"),
        r"
if ver ~= tonumber(ARGV[1]) then return {1, ver} end
l = math.max(l, now)
local head = header(l, ver + 1) .. string.sub(v, 51, 55 + plen)
redis.call('SET', KEYS[1], head .. ARGV[2], 'PXAT', math.min(l + idle, abs_end))
return {2, head}"
    ))
});

/// Moves a session to a new id. KEYS: old session, new session. ARGV:
/// principal index base, old id, new id, idle ms, absolute ms.
/// Returns nil or the new record.
pub(super) static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        "local v = redis.call('GET', KEYS[1])\nif not v then return false end\n",
        now_ms!(),
        "local idle = tonumber(ARGV[4])\nlocal abs = tonumber(ARGV[5])\n",
        parse_live!("false"),
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.error_reply('session id collision') end
l = math.max(l, now)
v = header(l, ver + 1) .. string.sub(v, 51)
redis.call('SET', KEYS[2], v, 'PXAT', math.min(l + idle, abs_end))
redis.call('DEL', KEYS[1])
local idx = ARGV[1] .. string.sub(v, 56, 55 + plen)
redis.call('SREM', idx, ARGV[2])
redis.call('SADD', idx, ARGV[3])
if redis.call('PEXPIRETIME', idx) < abs_end then redis.call('PEXPIREAT', idx, abs_end) end
return v"
    ))
});

/// KEYS: session. ARGV: principal index base, id. Returns 1 when it was live.
pub(super) static DESTROY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GETDEL', KEYS[1])
if not v then return 0 end
local plen = tonumber(string.sub(v, 51, 55))
if plen then redis.call('SREM', ARGV[1] .. string.sub(v, 56, 55 + plen), ARGV[2]) end
return 1",
    )
});

/// KEYS: principal index. ARGV: session key base. Returns how many were live.
pub(super) static DESTROY_PRINCIPAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. id)
end
redis.call('DEL', KEYS[1])
return n",
    )
});
