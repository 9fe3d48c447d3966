//! The Lua scripts of [`RedisQueue`](super::RedisQueue): every change that
//! touches more than one command runs in one script, so it is atomic and costs
//! one round trip.
//!
//! Stream entries hold the message in field `m`. A message is *settled* for a
//! group when the group's last-delivered id is at or past it and it is not in the
//! group's pending entries list; it leaves the stream once it is settled for every
//! group (and at least one group exists). Checking that costs one `XINFO GROUPS`
//! plus one `XPENDING id id 1` per group: O(groups).

use std::sync::LazyLock;

use redis::Script;

/// Helpers shared by the scripts.
const PRELUDE: &str = r#"
-- Exact comparison of decimal digit strings without leading zeros.
local function num_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

-- Whether stream id a <= stream id b.
local function id_le(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then return num_lt(am, bm) end
  return not num_lt(bs, as)
end

-- The groups of stream `key` (which must exist) as {name, last-delivered-id},
-- read once per script run; whatever makes a group or moves its last-delivered
-- id (XGROUP CREATE, XREADGROUP) clears `group_cache`.
local group_cache
local function groups(key)
  if group_cache then return group_cache end
  local out = {}
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1]
      elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    out[#out + 1] = {name, last}
  end
  group_cache = out
  return out
end

-- Whether every group has received and settled `id`; `done` (a group that just
-- acked it) needs no check.
local function settled(key, id, done)
  for _, g in ipairs(groups(key)) do
    if g[1] ~= done then
      if not id_le(id, g[2]) then return false end
      if #redis.call('XPENDING', key, g[1], id, id, 1) > 0 then return false end
    end
  end
  return true
end

-- Moves `id`, pending in `group`, to the dead-letter stream `dlq`: its fields
-- as they are (an earlier `reason`/`source_id` replaced), then `reason` and
-- `source_id` (its id here), so an operator sees why. False when it was not
-- pending there. Copies before it acks: a failing XADD (dlq of the wrong type)
-- stops the script before anything changed.
local function dead_letter(key, dlq, group, id, reason)
  if #redis.call('XPENDING', key, group, id, id, 1) == 0 then return false end
  local e = redis.call('XRANGE', key, id, id)
  if #e > 0 then
    local from, fields = e[1][2], {}
    for i = 1, #from, 2 do
      if from[i] ~= 'reason' and from[i] ~= 'source_id' then
        fields[#fields + 1] = from[i]
        fields[#fields + 1] = from[i + 1]
      end
    end
    fields[#fields + 1] = 'reason'
    fields[#fields + 1] = reason
    fields[#fields + 1] = 'source_id'
    fields[#fields + 1] = id
    redis.call('XADD', dlq, '*', unpack(fields))
  end
  redis.call('XACK', key, group, id)
  if #e > 0 and settled(key, id, group) then redis.call('XDEL', key, id) end
  return true
end

-- The value of field `name` of an entry, false when missing.
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return false
end
"#;

/// `KEYS[1]` stream; `ARGV` capacity, policy, then one message per offer.
/// → one flat array, three items per offer: `'enqueued', id, false` |
/// `'displaced', id, dropped` | `'discarded', false, false` |
/// `'full', false, false` | `'error', message, false` (flat because Redis
/// converts every nested table of a script's reply at a cost of its own).
const OFFER: &str = r#"
local key = KEYS[1]
local capacity, policy = tonumber(ARGV[1]), ARGV[2]
local len = redis.call('XLEN', key)
local out = {}
local function put(tag, a, b)
  out[#out + 1] = tag
  out[#out + 1] = a
  out[#out + 1] = b
end
for i = 3, #ARGV do
  if len < capacity then
    -- One refused append (out of memory) fails only its own offer.
    local id = redis.pcall('XADD', key, '*', 'm', ARGV[i])
    if type(id) == 'table' and id.err then
      put('error', id.err, false)
    else
      len = len + 1
      put('enqueued', id, false)
    end
  elseif policy == 'drop_oldest' then
    local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
    local id = redis.call('XADD', key, '*', 'm', ARGV[i])
    if #first == 0 then
      put('enqueued', id, false)
    else
      local old = first[1][1]
      -- Pending deliveries of the dropped message can no longer be acked.
      for _, g in ipairs(groups(key)) do redis.call('XACK', key, g[1], old) end
      redis.call('XDEL', key, old)
      put('displaced', id, old)
    end
  elseif policy == 'drop_newest' then
    put('discarded', false, false)
  else
    put('full', false, false)
  end
end
return out
"#;

/// `KEYS[1]` stream, `KEYS[2]` dead-letter stream; `ARGV` visibility timeout
/// (ms), max deliveries, the idle time (ms) from which a delivery counts as
/// expiring soon, then group and consumer per poll.
/// → one flat array: per poll, the number of ids dead-lettered on the way,
/// those ids, the delivery count (`0`: nothing to deliver) and, when not `0`,
/// the entry's id and its field `m` (`false` when missing); then the number of
/// *calm* groups (no delivery expired or expiring soon) and their names.
///
/// Creates a group at `0` on its first poll. Expired deliveries (oldest id
/// first) come before new messages; one delivered max-deliveries times already
/// is dead-lettered instead.
const POLL: &str = r#"
local key, dlq = KEYS[1], KEYS[2]
local idle, max, soon = ARGV[1], tonumber(ARGV[2]), ARGV[3]
-- Polls still to answer per group: a group's new entries are read at once.
local wanted = {}
for i = 4, #ARGV, 2 do wanted[ARGV[i]] = (wanted[ARGV[i]] or 0) + 1 end
-- Groups without deliveries expiring soon (nor expired).
local calm = {}
-- Groups found with nothing expired in this run.
local quiet = {}
-- Per group: the new entries read in this run and the next to hand out. They
-- are read at once under the name of the first consumer asking (re-assigning
-- each with XCLAIM would cost a stream seek per entry): the PEL may name a
-- consumer of the group other than the one that received the delivery.
local fresh = {}

local out = {}
-- Appends one poll's answer to `out`: `dead` ids, then the entry if any.
local function answer(dead, id, bytes, count)
  out[#out + 1] = #dead
  for _, d in ipairs(dead) do out[#out + 1] = d end
  out[#out + 1] = count
  if count > 0 then
    out[#out + 1] = id
    out[#out + 1] = bytes
  end
end

-- The oldest expired delivery of `group`, claimed for `consumer`, dead-lettering
-- (into `dead`) the ones that had max deliveries: its id, field `m` and delivery
-- count, or nil. Makes the group if new.
local function redeliver(group, consumer, dead)
  local near = redis.pcall('XPENDING', key, group, 'IDLE', soon, '-', '+', 1)
  if near.err then
    if string.find(near.err, 'NOGROUP', 1, true) == nil then error(near.err) end
    redis.call('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
    group_cache = nil
    calm[#calm + 1] = group
    return nil
  end
  if #near == 0 then
    calm[#calm + 1] = group
    return nil
  end
  local batch = redis.call('XPENDING', key, group, 'IDLE', idle, '-', '+', 8)
  while #batch > 0 do
    local last
    for _, p in ipairs(batch) do
      local id, count = p[1], tonumber(p[4])
      last = id
      if count >= max then
        local why = 'max deliveries: delivered ' .. count .. ' times'
        if dead_letter(key, dlq, group, id, why) then dead[#dead + 1] = id end
      else
        local claimed = redis.call('XCLAIM', key, group, consumer, idle, id)
        if #claimed > 0 and claimed[1][2] then
          return id, field(claimed[1][2], 'm'), count + 1
        end
      end
    end
    if #batch < 8 then break end
    batch = redis.call('XPENDING', key, group, 'IDLE', idle, '(' .. last, '+', 8)
  end
  return nil
end

local function poll(group, consumer)
  local dead = {}
  if not quiet[group] then
    local id, bytes, count = redeliver(group, consumer, dead)
    if id then return answer(dead, id, bytes, count) end
    quiet[group] = true
  end
  local f = fresh[group]
  if f == nil then
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer,
      'COUNT', wanted[group], 'STREAMS', key, '>')
    f = {entries = read and read[1][2] or {}, next = 1}
    fresh[group] = f
    group_cache = nil
  end
  local e = f.entries[f.next]
  if e == nil then return answer(dead, false, false, 0) end
  f.next = f.next + 1
  answer(dead, e[1], field(e[2], 'm'), 1)
end

for i = 4, #ARGV, 2 do
  poll(ARGV[i], ARGV[i + 1])
  wanted[ARGV[i]] = wanted[ARGV[i]] - 1
end
out[#out + 1] = #calm
for _, g in ipairs(calm) do out[#out + 1] = g end
return out
"#;

/// `KEYS[1]` stream; `ARGV` group and id per ack. → per ack 1 when it was
/// pending in the group, else 0.
const ACK: &str = r#"
local key = KEYS[1]
local out, gone = {}, {}
for i = 1, #ARGV, 2 do
  if redis.call('XACK', key, ARGV[i], ARGV[i + 1]) == 1 then
    if settled(key, ARGV[i + 1], ARGV[i]) then gone[#gone + 1] = ARGV[i + 1] end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #gone > 0 then redis.call('XDEL', key, unpack(gone)) end
return out
"#;

/// `KEYS[1]` stream; `ARGV` id. → 1 when removed (no group had received it).
const REMOVE: &str = r#"
local key, id = KEYS[1], ARGV[1]
if redis.call('EXISTS', key) == 0 then return 0 end
for _, g in ipairs(groups(key)) do
  if id_le(id, g[2]) then return 0 end
end
return redis.call('XDEL', key, id)
"#;

/// `KEYS[1]` stream, `KEYS[2]` dead-letter stream; `ARGV` group, id, reason.
/// → 1 when moved (it was pending in the group).
const DEAD_LETTER: &str = r#"
if dead_letter(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]) then return 1 end
return 0
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// Appends with the capacity check and backlog policy.
pub(super) static OFFER_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(OFFER));
/// Redelivers, dead-letters or reads the next message for a consumer.
pub(super) static POLL_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(POLL));
/// Acknowledges and settles.
pub(super) static ACK_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(ACK));
/// Withdraws a message no group has received.
pub(super) static REMOVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(REMOVE));
/// Moves one pending delivery to the dead-letter stream.
pub(super) static DEAD_LETTER_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(DEAD_LETTER));
