"""Lua for priority reading and per-user fairness; `lua.py` composes these into its scripts.

A user's running task ids are a set and the tasks parked while the user is at the cap a FIFO
list, all under the type's hash tag. Every change is by task id (SADD, SREM), so a step run
twice never counts twice, and the counters the operators read (two sorted sets of user id ->
count) move only when the set or the list really changed.

The read step learns a user and a task id from the entry itself (the `task` field as orjson
writes it: `{"task_id":"…",…,"user_id":N,…}`), so it reaches that user's keys and the task's
record without naming them in KEYS: they are built from prefixes that carry the type's hash
tag, so they always live in the slot of the declared keys.
"""

from __future__ import annotations

# Needs `final()` from lua_runs.FINAL.
# t: the type's keys {normal, high, load, waiting, records (prefix)};
# u: one user's {running, parked, uid, cap} (cap 0 = no cap).
FAIR = """
local function zbump(key, uid, by)
  if tonumber(redis.call('ZINCRBY', key, by, uid)) <= 0 then redis.call('ZREM', key, uid) end
end
local function fair_add(t, u, id)
  if redis.call('SADD', u.running, id) == 1 then zbump(t.load, u.uid, 1) end
end
local function fair_remove(t, u, id)
  if redis.call('SREM', u.running, id) == 1 then zbump(t.load, u.uid, -1) end
end
-- Who an entry's task is for, read the same way everywhere (and in fairness.attributed):
-- the task id that opens the JSON and its first user_id. nil when either is missing.
local function fair_who(raw)
  local id = string.match(raw, '^{"task_id":"([%w_.:%-]+)"')
  local uid = string.match(raw, '"user_id":(%-?%d+)')
  if id and uid then return id, uid end
end
local function fair_room(u)
  return u.cap <= 0 or redis.call('SCARD', u.running) < u.cap
end
-- Drops running ids whose record is gone or final: a release that never came (a record that
-- expired, an entry deleted by hand) cannot hold a user back for good.
local function fair_heal(t, u)
  for _, id in ipairs(redis.call('SMEMBERS', u.running)) do
    local st = redis.call('HGET', t.records .. id, 'status')
    if not st or final(st) then fair_remove(t, u, id) end
  end
end
-- Moves the user's oldest parked tasks back onto their streams while the user has room. Each
-- counts as running at once, so no newer task of the same user can start before it. A parked
-- item that is not ours goes on as it is, counting for nobody (its end could not release it),
-- and is dead-lettered when it is read.
local function fair_fill(t, u)
  local moved = 0
  while moved < 1000 and fair_room(u) do
    local item = redis.call('LPOP', u.parked)
    if not item then break end
    zbump(t.waiting, u.uid, -1)
    local flag, id, raw = string.match(item, '^([hn])|([%w_.:%-]+)|(.+)$')
    if not raw then flag, id, raw = 'n', nil, item end
    local stream = flag == 'h' and t.high or t.normal
    local entry
    if id and tonumber(redis.call('HGET', t.records .. id, 'attempts') or 0) > 0 then
      entry = redis.call('XADD', stream, '*', 'task', raw, 'again', '1')  -- see REQUEUE
    else
      entry = redis.call('XADD', stream, '*', 'task', raw)
    end
    local who, uid = fair_who(raw)
    if id and who == id and uid == u.uid then fair_add(t, u, id) end
    if id then
      local record = t.records .. id
      if redis.call('HGET', record, 'parked') then
        redis.call('HSET', record, 'entry', entry)
        redis.call('HDEL', record, 'parked')
      end
    end
    moved = moved + 1
  end
  return moved
end
-- The entry left its stream (acked and deleted by the caller); its record says so, and a
-- look-up finds the task in the user's list. The record never takes the entry's text: only
-- a parsed task is written there (the start, finish and fail steps).
local function fair_park(t, u, flag, id, raw)
  redis.call('RPUSH', u.parked, flag .. '|' .. id .. '|' .. raw)
  zbump(t.waiting, u.uid, 1)
  local record = t.records .. id
  if redis.call('HEXISTS', record, 'entry') == 1 and not redis.call('HGET', record, 'task') then
    redis.call('HSET', record, 'parked', 1)
    redis.call('HDEL', record, 'entry')
  end
end
-- Takes a cancelled task out of its user's parked list; returns the entry's text (nil when
-- it is not there). The list is scanned: it holds one user's backlog of one type.
local function fair_unpark(t, u, id)
  local head = '|' .. id .. '|'
  for _, item in ipairs(redis.call('LRANGE', u.parked, 0, -1)) do
    if string.sub(item, 2, #head + 1) == head then
      redis.call('LREM', u.parked, 1, item)
      zbump(t.waiting, u.uid, -1)
      return string.sub(item, #head + 2)
    end
  end
end
-- The finish and fail steps name the fairness keys after their own, from KEYS[k] and ARGV[a]:
-- KEYS normal, high, users running, users parked, user running, user parked;
-- ARGV user id, cap, records prefix, task id. Without them the step leaves fairness alone.
local function fair_done(k, a)
  if not KEYS[k + 5] then return end
  local t = {normal = KEYS[k], high = KEYS[k + 1], load = KEYS[k + 2], waiting = KEYS[k + 3],
    records = ARGV[a + 2]}
  local u = {running = KEYS[k + 4], parked = KEYS[k + 5], uid = ARGV[a],
    cap = tonumber(ARGV[a + 1])}
  fair_remove(t, u, ARGV[a + 3])
  fair_fill(t, u)
end
"""

# KEYS: normal stream, high stream, read memo, users running, users parked.
# ARGV: group, consumer, count, slots where normal goes first, read id, memo ttl ms, user cap
# (0 = no fairness), records prefix, users prefix, how many entries one call may look at,
# '1' if the caller will wait without reading (then it needs the last delivered ids).
# Reads up to `count` new entries with XREADGROUP: the first `normal first` slots from the
# normal stream, then high, then normal again, so high goes first while normal keeps its
# share. With a cap, an entry whose user is at it (or has older tasks parked) is acked,
# deleted and parked in the user's list, and the read goes on to the next entry, so one user's
# backlog never holds the others up. Returns {{flag, id, fields}...} and, when nothing came
# and the caller asked, each stream's last delivered id (to wait on without reading). The ids
# it returned are kept under the read id, so a repeat after a lost reply answers the same.
READ = """
local t = {normal = KEYS[1], high = KEYS[2], load = KEYS[4], waiting = KEYS[5],
  records = ARGV[8]}
local group, consumer, cap, read_id = ARGV[1], ARGV[2], tonumber(ARGV[7]), ARGV[5]
local memo = redis.call('GET', KEYS[3])
if memo and string.sub(memo, 1, #read_id + 1) == read_id .. ' ' then
  local out = {}
  for flag, id in string.gmatch(string.sub(memo, #read_id + 2), '([hn]):(%S+)') do
    local found = redis.call('XRANGE', flag == 'h' and t.high or t.normal, id, id)
    if #found > 0 then out[#out + 1] = {flag, found[1][1], found[1][2]} end
  end
  return {out}
end
local function task_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'task' then return fields[i + 1] end
  end
end
local function admit(flag, stream, entry)
  local raw = task_of(entry[2])
  local id, uid = nil, nil
  if raw then id, uid = fair_who(raw) end
  if not id then return true end  -- not attributable: parsing decides its fate
  local u = {running = ARGV[9] .. uid .. ':running', parked = ARGV[9] .. uid .. ':parked',
    uid = uid, cap = cap}
  if redis.call('SISMEMBER', u.running, id) == 1 then return true end
  -- Cancelled while it waited: handed over to be acked, counting for nobody.
  if final(redis.call('HGET', t.records .. id, 'status')) then return true end
  if not fair_room(u) then fair_heal(t, u) end
  if fair_room(u) and redis.call('LLEN', u.parked) == 0 then
    fair_add(t, u, id)
    return true
  end
  redis.call('XACK', stream, group, entry[1])
  redis.call('XDEL', stream, entry[1])
  fair_park(t, u, flag, id, raw)
  fair_fill(t, u)
  return false
end
local out, ids, examined, limit = {}, {}, 0, tonumber(ARGV[10])
local function take(flag, stream, want)
  while want > 0 and examined < limit do
    local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want,
      'STREAMS', stream, '>')
    if not r then return end
    for _, e in ipairs(r[1][2]) do
      examined = examined + 1
      if cap <= 0 or admit(flag, stream, e) then
        out[#out + 1] = {flag, e[1], e[2]}
        ids[#ids + 1] = flag .. ':' .. e[1]
        want = want - 1
      end
    end
    if cap <= 0 then return end
  end
end
local function last_delivered(stream)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, id = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then id = g[i + 1] end
    end
    if name == group then return id end
  end
  return '0-0'
end
local count = tonumber(ARGV[3])
take('n', t.normal, math.min(tonumber(ARGV[4]), count))
take('h', t.high, count - #out)
take('n', t.normal, count - #out)
if #out > 0 then
  redis.call('SET', KEYS[3], read_id .. ' ' .. table.concat(ids, ' '), 'PX', ARGV[6])
  return {out}
end
if ARGV[11] ~= '1' then return {out} end
return {out, last_delivered(t.normal), last_delivered(t.high)}
"""

# KEYS: normal stream, high stream, users running, users parked, then per user its running
# set and its parked list. ARGV: cap (0 = none: every parked task goes back), records prefix,
# then the user ids. For each user: drop running ids whose task ended without a release, move
# parked tasks back while there is room, and set both counters from the set and the list.
# Converges: a repeat finds nothing more to do than what room allows. Returns tasks moved.
SWEEP = """
local t = {normal = KEYS[1], high = KEYS[2], load = KEYS[3], waiting = KEYS[4],
  records = ARGV[2]}
local moved = 0
for i = 3, #ARGV do
  local u = {running = KEYS[2 * i - 1], parked = KEYS[2 * i], uid = ARGV[i],
    cap = tonumber(ARGV[1])}
  fair_heal(t, u)
  moved = moved + fair_fill(t, u)
  for key, n in pairs({[t.load] = redis.call('SCARD', u.running),
      [t.waiting] = redis.call('LLEN', u.parked)}) do
    if n > 0 then redis.call('ZADD', key, n, u.uid) else redis.call('ZREM', key, u.uid) end
  end
end
return moved
"""
