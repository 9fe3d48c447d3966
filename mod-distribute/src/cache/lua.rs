//! The cache's Lua scripts (run by [`crate::redis::script`]).

use std::sync::LazyLock;

use redis::Script;

use crate::redis::script::now_ms;

/// Score offset of index entries without expiry: above every real deadline
/// (2^50 ms is year ~37000), below 2^53 so scores stay exact doubles.
pub(crate) const NO_EXPIRY: u64 = 1 << 50;

/// `set` of an entry with an absolute TTL deadline in a TTI cache.
/// KEYS: entry, index. ARGV: payload (tag '0' + codec bytes), ttl ms, tti ms,
/// index member, channel ('' = no near cache), invalidation message.
/// Returns 1 when the member is new in the index.
pub(crate) static SET_DEADLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now_ms!(),
        r"
local deadline = now + tonumber(ARGV[2])
local exp = math.min(deadline, now + tonumber(ARGV[3]))
redis.call('SET', KEYS[1], '1' .. string.format('%015.0f', deadline) .. string.sub(ARGV[1], 2), 'PXAT', exp)
local new = redis.call('ZADD', KEYS[2], exp, ARGV[4])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return new"
    ))
});

/// A read that refreshes the idle timer: expiry = min(now + tti, TTL deadline).
/// KEYS: entry, index. ARGV: tti ms, index member.
/// Returns nil, or {stored bytes, remaining ms}.
pub(crate) static GET_TTI: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        "local v = redis.call('GET', KEYS[1])\nif not v then return false end\n",
        now_ms!(),
        r"
local exp = now + tonumber(ARGV[1])
if string.byte(v, 1) == 49 then
  local deadline = tonumber(string.sub(v, 2, 16))
  if deadline then
    if deadline <= now then
      redis.call('ZREM', KEYS[2], ARGV[2])
      redis.call('DEL', KEYS[1])
      return false
    end
    if deadline < exp then exp = deadline end
  end
end
redis.call('PEXPIREAT', KEYS[1], exp)
redis.call('ZADD', KEYS[2], 'XX', exp, ARGV[2])
return {v, exp - now}"
    ))
});

/// `compare_and_set`: compares the entry's codec bytes (after the header)
/// with the expected ones and, when they match, writes as `set` does (the
/// policy's expiry from now, stamped with the Redis clock; index; near
/// invalidation). A mismatch is a read: in a TTI cache it moves the expiry as
/// `GET_TTI` does.
/// KEYS: entry, index. ARGV: expect ('1' present, '0' absent), expected codec
/// bytes, payload (tag '0' + codec bytes), ttl ms (0 = none), tti ms (0 = none),
/// index member, channel ('' = no near cache), invalidation message.
/// Returns {1, new member '1'/'0'} when stored, {0, ''} when absent against
/// expectation, {2, current codec bytes} when present against expectation.
pub(crate) static COMPARE_AND_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now_ms!(),
        "local no_expiry = ",
        "1125899906842624",
        r"
local ttl, tti = tonumber(ARGV[4]), tonumber(ARGV[5])
local cur = redis.call('GET', KEYS[1])
local body, deadline = false, false
if cur then
  if string.byte(cur, 1) == 49 then
    deadline = tonumber(string.sub(cur, 2, 16))
    body = string.sub(cur, 17)
  else
    body = string.sub(cur, 2)
  end
end
local matches = (ARGV[1] == '1' and body == ARGV[2]) or (ARGV[1] == '0' and not body)
if not matches then
  if not body then return {0, ''} end
  if tti > 0 then
    local exp = now + tti
    if deadline and deadline < exp then exp = deadline end
    redis.call('PEXPIREAT', KEYS[1], exp)
    redis.call('ZADD', KEYS[2], 'XX', exp, ARGV[6])
  end
  return {2, body}
end
local payload, exp = ARGV[3], 0
if ttl > 0 and tti > 0 then
  exp = math.min(now + ttl, now + tti)
  payload = '1' .. string.format('%015.0f', now + ttl) .. string.sub(payload, 2)
elseif ttl > 0 then
  exp = now + ttl
elseif tti > 0 then
  exp = now + tti
end
local score = exp
if exp > 0 then
  redis.call('SET', KEYS[1], payload, 'PXAT', exp)
else
  redis.call('SET', KEYS[1], payload)
  score = no_expiry + now
end
local new = redis.call('ZADD', KEYS[2], score, ARGV[6])
if ARGV[7] ~= '' then redis.call('PUBLISH', ARGV[7], ARGV[8]) end
return {1, tostring(new)}"
    ))
});

/// Index upkeep: drops members whose entry is gone (re-scoring live ones that
/// were due), then evicts the lowest scores above `max`.
/// KEYS: index. ARGV: entry key base, max (0 = none), limit, channel ('' = none),
/// key-invalidation message prefix. Returns {swept, evicted, more work 0/1}.
pub(crate) static MAINTAIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        now_ms!(),
        "local no_expiry = ",
        "1125899906842624",
        r"
local limit = tonumber(ARGV[3])
local swept = 0
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, m in ipairs(due) do
  local pttl = redis.call('PTTL', ARGV[1] .. m)
  if pttl == -2 then
    redis.call('ZREM', KEYS[1], m)
    swept = swept + 1
  elseif pttl == -1 then
    redis.call('ZADD', KEYS[1], no_expiry + now, m)
  else
    redis.call('ZADD', KEYS[1], now + pttl, m)
  end
end
local more = #due == limit
local evicted = 0
local max = tonumber(ARGV[2])
if max > 0 then
  local excess = redis.call('ZCARD', KEYS[1]) - max
  if excess > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[1], math.min(excess, limit))
    for i = 1, #popped, 2 do
      redis.call('UNLINK', ARGV[1] .. popped[i])
      if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5] .. popped[i]) end
      evicted = evicted + 1
    end
    if excess > evicted then more = true end
  end
end
return {swept, evicted, more and 1 or 0}"
    ))
});

/// One step of `clear`: on the first step, moves the index into the
/// `clearing` set (merging a crashed clear's leftovers); then deletes up to
/// `limit` of its entries. Publishes the clear message when done.
/// KEYS: index, clearing. ARGV: entry key base, limit, first ('1'/'0'),
/// channel ('' = none), clear message. Returns how many are left.
pub(crate) static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[1], 'AGGREGATE', 'MAX')
  redis.call('DEL', KEYS[1])
end
local popped = redis.call('ZPOPMIN', KEYS[2], tonumber(ARGV[2]))
local keys = {}
for i = 1, #popped, 2 do keys[#keys + 1] = ARGV[1] .. popped[i] end
if #keys > 0 then redis.call('UNLINK', unpack(keys)) end
local left = redis.call('ZCARD', KEYS[2])
if left == 0 and ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return left",
    )
});
