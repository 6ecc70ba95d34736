"""The Lua scripts of `RedisStore`: each runs atomically in Redis, so a batch is written whole or not at all.

`RECORD` records a batch of outcomes and queues their graded rollouts; `REGISTER` assigns problems to groups;
`ACK` acknowledges and deletes queue entries. The per-problem encoding ("recorded frozen bits v1 v2 ...")
keeps the verdicts as one string of bits, so the scripts count and shift them with string functions.
"""

# chunked(): Lua's unpack() takes at most about 8,000 values, so long lists go to Redis in parts.
LUA_HELPERS = """
local function bucket(pa, pb, c, n)
  local d = pa + pb + n
  local p = 0.5
  if d > 0 then p = (pa + c) / d end
  local b = math.floor(p * 20)
  if b > 19 then b = 19 end
  return b
end
local function chunked(cmd, key, list, out)
  for i = 1, #list, 4000 do
    local part = redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
    if out then for j = 1, #part do out[#out + 1] = part[j] end end
  end
end
-- recorded, frozen ('0'/'1'), verdict bits and versions of a window "recorded frozen bits v1 v2 ..."
local function parse(s)
  return string.match(s, '^(%d+) ([01]) ([01]*) ?([%d ]*)$')
end
local function ones(bits)
  return select(2, string.gsub(bits, '1', ''))
end
"""

# KEYS: rollout_ids, problems, hist, groups, hist_by_group, graded (the queue's stream), rollout_ids_previous
# ARGV: capacity, prior_a, prior_b, frozen mode (0/1),
#       JSON [rollout_id, problem_id, correct ("0"/"1"), version (decimal string), ...],
#       JSON [rollout_id, graded rollout JSON, problem id, ...] to queue when that outcome is new,
#       recent-list cap, key prefix of the recent lists, ids per generation (`idempotency.ROLLOUT_IDS_KEPT`)
# Rollout ids are known in two generations (sets): a write that finds the current one full first drops the
# previous one and makes the current one previous.
# Returns {new outcomes, then the queue entry ids}: both written in one script, so atomically.
RECORD = (
    LUA_HELPERS
    + """
local cap, pa, pb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local frozen_mode = ARGV[4] == '1'
local flat = cjson.decode(ARGV[5])
local rids = {}
for i = 1, #flat, 4 do rids[#rids + 1] = flat[i] end
local known, known_before = {}, {}
chunked('SMISMEMBER', KEYS[1], rids, known)
chunked('SMISMEMBER', KEYS[7], rids, known_before)
local new_rids, in_batch, order, batch = {}, {}, {}, {}
for j = 1, #rids do
  local rid = rids[j]
  if known[j] == 0 and known_before[j] == 0 and not in_batch[rid] then
    in_batch[rid] = true  -- a rollout id twice in one batch counts once
    new_rids[#new_rids + 1] = rid
    local i = 4 * j - 3
    local pid = flat[i + 1]
    local list = batch[pid]
    if not list then list = {}; batch[pid] = list; order[#order + 1] = pid end
    list[#list + 1] = flat[i + 2]; list[#list + 1] = flat[i + 3]
  end
end
if #new_rids == 0 then return {0} end
local states = {}
chunked('HMGET', KEYS[2], order, states)
-- Every stored window is checked before the first write: a script's writes are not rolled back.
for j, pid in ipairs(order) do
  if states[j] and not parse(states[j]) then
    return redis.error_reply('bad window in ' .. KEYS[2] .. ' field ' .. pid)
  end
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[9]) then
  redis.call('UNLINK', KEYS[7])
  redis.call('RENAME', KEYS[1], KEYS[7])
end
chunked('SADD', KEYS[1], new_rids)
local groups = {}
if redis.call('EXISTS', KEYS[4]) == 1 then chunked('HMGET', KEYS[4], order, groups) end
local delta, gdelta, writes = {}, {}, {}
local function add(t, f, d) t[f] = (t[f] or 0) + d end
for j, pid in ipairs(order) do
  local recorded, frozen, bits, vers = 0, '0', '', ''
  if states[j] then
    recorded, frozen, bits, vers = parse(states[j])
    recorded = tonumber(recorded)
  end
  local c = ones(bits)
  local n = #bits
  local c0, n0 = c, n
  local list = batch[pid]
  for m = 1, #list, 2 do
    recorded = recorded + 1
    if frozen == '0' then
      bits = bits .. list[m]
      vers = n > 0 and (vers .. ' ' .. list[m + 1]) or list[m + 1]
      n = n + 1
      if list[m] == '1' then c = c + 1 end
      if n > cap then
        if string.sub(bits, 1, 1) == '1' then c = c - 1 end
        bits = string.sub(bits, 2)
        vers = string.sub(vers, string.find(vers, ' ', 1, true) + 1)
        n = n - 1
      end
      if frozen_mode and n >= cap then frozen = '1' end
    end
  end
  writes[#writes + 1] = pid
  writes[#writes + 1] = recorded .. ' ' .. frozen .. ' ' .. bits .. ' ' .. vers
  if n > 0 then
    local b1 = bucket(pa, pb, c, n)
    local b0 = n0 > 0 and bucket(pa, pb, c0, n0) or nil
    if b0 ~= b1 then
      local g = groups[j]
      add(delta, tostring(b1), 1)
      if g then add(gdelta, b1 .. ':' .. g, 1) end
      if b0 then
        add(delta, tostring(b0), -1)
        if g then add(gdelta, b0 .. ':' .. g, -1) end
      else
        add(delta, 'seen', 1)
        if g then add(gdelta, 'seen:' .. g, 1) end
      end
    end
  end
end
chunked('HSET', KEYS[2], writes)
for f, d in pairs(delta) do if d ~= 0 then redis.call('HINCRBY', KEYS[3], f, d) end end
for f, d in pairs(gdelta) do if d ~= 0 then redis.call('HINCRBY', KEYS[5], f, d) end end
local out = {#new_rids}
local queue, cap, recent = cjson.decode(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
for i = 1, #queue, 3 do
  if in_batch[queue[i]] then
    out[#out + 1] = redis.call('XADD', KEYS[6], '*', 'r', queue[i + 1])
    redis.call('LPUSH', recent .. queue[i + 2], queue[i + 1])
    redis.call('LTRIM', recent .. queue[i + 2], 0, cap - 1)
  end
end
return out
"""
)

# KEYS: groups, problems, hist_by_group, group_names
# ARGV: prior_a, prior_b, then problem_id, group ...
REGISTER = (
    LUA_HELPERS
    + """
local pa, pb = tonumber(ARGV[1]), tonumber(ARGV[2])
-- Every stored window is checked before the first write: a script's writes are not rolled back.
for i = 3, #ARGV, 2 do
  local s = redis.call('HGET', KEYS[2], ARGV[i])
  if s and not parse(s) then return redis.error_reply('bad window in ' .. KEYS[2] .. ' field ' .. ARGV[i]) end
end
for i = 3, #ARGV, 2 do
  local pid, g = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', KEYS[1], pid)
  if old ~= g then
    redis.call('HSET', KEYS[1], pid, g)
    redis.call('SADD', KEYS[4], g)
    local s = redis.call('HGET', KEYS[2], pid)
    if s then
      local _, _, bits = parse(s)
      if #bits > 0 then
        local b = bucket(pa, pb, ones(bits), #bits)
        if old then
          redis.call('HINCRBY', KEYS[3], b .. ':' .. old, -1)
          redis.call('HINCRBY', KEYS[3], 'seen:' .. old, -1)
        end
        redis.call('HINCRBY', KEYS[3], b .. ':' .. g, 1)
        redis.call('HINCRBY', KEYS[3], 'seen:' .. g, 1)
      end
    end
  end
end
return 0
"""
)

# KEYS: graded; ARGV: group, entry ids. Deletes an entry only if it was pending (XACK said so).
ACK = """
local done = 0
for i = 2, #ARGV do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    done = done + 1
  end
end
return done
"""
