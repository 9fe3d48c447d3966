//! The registry's Lua scripts: every change of a service is one script, so the
//! change, its version bump and its notification are atomic.
//!
//! `ARGV[1]` is always the registry's key base (`<prefix>:reg`); keys are built
//! inside the scripts (the sweep can only know them from lease members), so the
//! registry needs a non-cluster Redis. Lease deadlines use the server's `TIME`,
//! so the clocks of the nodes never matter.

use redis::Script;

/// Helpers shared by every script (prepended to each body).
const PRELUDE: &str = r#"
local B = ARGV[1]
local LEASES = B .. ':leases'
local SERVICES = B .. ':services'
local VERSIONS = B .. ':versions'
local CHANNEL = B .. ':events'
local function inst_key(s) return B .. ':inst:' .. s end
local function ttl_key(s) return B .. ':ttl:' .. s end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A change of service s: bump its version, forget it when empty, tell every node.
local function changed(s)
  local v = redis.call('HINCRBY', VERSIONS, s, 1)
  if redis.call('HLEN', inst_key(s)) == 0 then redis.call('SREM', SERVICES, s) end
  redis.call('PUBLISH', CHANNEL, s .. ' ' .. v)
  return v
end
-- Removes one instance and its lease (no version bump); 1 when it was there.
local function remove(s, id)
  redis.call('HDEL', ttl_key(s), id)
  redis.call('ZREM', LEASES, s .. ' ' .. id)
  return redis.call('HDEL', inst_key(s), id)
end
-- Whether the lease of s/id ran out (a missing lease counts as run out).
local function expired(s, id, now)
  local dl = redis.call('ZSCORE', LEASES, s .. ' ' .. id)
  return (not dl) or tonumber(dl) <= now
end
"#;

/// `ARGV`: base, service, id, encoded instance, ttl ms → new version.
const REGISTER: &str = r#"
local s, id, ttl = ARGV[2], ARGV[3], tonumber(ARGV[5])
redis.call('HSET', inst_key(s), id, ARGV[4])
redis.call('HSET', ttl_key(s), id, ttl)
redis.call('ZADD', LEASES, now_ms() + ttl, s .. ' ' .. id)
redis.call('SADD', SERVICES, s)
return changed(s)
"#;

/// `ARGV`: base, service, id → 1 renewed, 0 unknown or expired (then removed).
const HEARTBEAT: &str = r#"
local s, id = ARGV[2], ARGV[3]
local ttl = redis.call('HGET', ttl_key(s), id)
if not ttl then return 0 end
local now = now_ms()
if expired(s, id, now) then
  remove(s, id)
  changed(s)
  return 0
end
redis.call('ZADD', LEASES, 'XX', now + tonumber(ttl), s .. ' ' .. id)
return 1
"#;

/// `ARGV`: base, service, id → 1 removed a live instance, 0 otherwise.
const DEREGISTER: &str = r#"
local s, id = ARGV[2], ARGV[3]
local live = not expired(s, id, now_ms())
if remove(s, id) == 1 then
  changed(s)
  if live then return 1 end
end
return 0
"#;

/// `ARGV`: base, service, id, expected encoded instance, new one →
/// 1 done, 0 the instance changed meanwhile (read again), -1 unknown or expired.
const SET_STATUS: &str = r#"
local s, id = ARGV[2], ARGV[3]
local cur = redis.call('HGET', inst_key(s), id)
if not cur then return -1 end
if expired(s, id, now_ms()) then
  remove(s, id)
  changed(s)
  return -1
end
if cur ~= ARGV[4] then return 0 end
if cur == ARGV[5] then return 1 end
redis.call('HSET', inst_key(s), id, ARGV[5])
changed(s)
return 1
"#;

/// `ARGV`: base, service, min version → `[version, instance…]`.
///
/// Expires the service's run-out leases first (so the content at a version never
/// changes), and raises the version to at least `min` (a watcher saw a higher
/// one before Redis lost data: versions must not go back).
const SNAPSHOT: &str = r#"
local s = ARGV[2]
local now = now_ms()
local all = redis.call('HGETALL', inst_key(s))
local out = {}
local gone = false
for i = 1, #all, 2 do
  if expired(s, all[i], now) then
    remove(s, all[i])
    gone = true
  else
    out[#out + 1] = all[i + 1]
  end
end
local v
if gone then v = changed(s) else v = tonumber(redis.call('HGET', VERSIONS, s) or '0') end
local min = tonumber(ARGV[3])
if v < min then
  redis.call('HSET', VERSIONS, s, min)
  redis.call('PUBLISH', CHANNEL, s .. ' ' .. min)
  v = min
end
table.insert(out, 1, v)
return out
"#;

/// `ARGV`: base, limit → the services that lost instances (each bumped and published).
const SWEEP: &str = r#"
local due = redis.call('ZRANGEBYSCORE', LEASES, '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
local seen, list = {}, {}
for _, m in ipairs(due) do
  local sp = string.find(m, ' ', 1, true)
  if sp then
    local s, id = string.sub(m, 1, sp - 1), string.sub(m, sp + 1)
    remove(s, id)
    if not seen[s] then
      seen[s] = true
      list[#list + 1] = s
    end
  else
    redis.call('ZREM', LEASES, m)
  end
end
for _, s in ipairs(list) do changed(s) end
return list
"#;

/// The compiled scripts (their SHA1s are computed once).
pub(super) struct Scripts {
    pub register: Script,
    pub heartbeat: Script,
    pub deregister: Script,
    pub set_status: Script,
    pub snapshot: Script,
    pub sweep: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        let make = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            register: make(REGISTER),
            heartbeat: make(HEARTBEAT),
            deregister: make(DEREGISTER),
            set_status: make(SET_STATUS),
            snapshot: make(SNAPSHOT),
            sweep: make(SWEEP),
        }
    }
}
