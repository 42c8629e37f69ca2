"""Lua scripts that take work over from a consumer that stopped or stalled, and keep a live
one's work its own: hand an entry back (requeue), renew, heartbeat, claim, delete or forget a
consumer, replay a dead letter. Same rules as `lua.py`: one task type's keys, retry-safe.
`REQUEUE` runs with `lua_runs.FINAL` in front of it (see `lua.SCRIPTS`).
"""

from __future__ import annotations

# KEYS: stream, record. ARGV: group, entry id, owner ('' = any), min idle ms, entry json.
# Hands an entry back to the group as a fresh entry, atomically: a live consumer blocked in
# XREADGROUP gets it at once. Skipped when the entry is no longer pending for that owner
# (someone acked or renewed it meanwhile); a finished task is only acked. The record keeps
# the move, so a repeated call answers with the same new entry id. The new entry is marked
# `again`: a consumer waits for its start step's answer before running it (it may have used
# up its deliveries; see docs/guarantees.md).
REQUEUE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[4], ARGV[2], ARGV[2], 1)
if #p == 0 then
  if redis.call('HGET', KEYS[2], 'moved_from') == ARGV[2] then
    return redis.call('HGET', KEYS[2], 'entry')
  end
  return false
end
if ARGV[3] ~= '' and p[1][2] ~= ARGV[3] then return false end
local st = redis.call('HGET', KEYS[2], 'status')
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if final(st) then return false end
local new_id = redis.call('XADD', KEYS[1], '*', 'task', ARGV[5], 'again', '1')
if st then
  redis.call('HSET', KEYS[2], 'status', 'pending', 'moved_from', ARGV[2], 'entry', new_id)
end
return new_id
"""

# KEYS: stream. ARGV: group, consumer, ids... Renews the idle time of entries this consumer
# still owns (XCLAIM JUSTID does not bump the delivery count) and returns the ids another
# consumer took; ids no longer pending (finished meanwhile) are skipped.
RENEW = """
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      lost[#lost + 1] = ARGV[i]
    end
  end
end
return lost
"""

# KEYS: alive. ARGV: consumer. The time is the server's, so skewed clocks on the consumers'
# machines cannot make a live consumer look dead.
HEARTBEAT = """
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], t[1] * 1000 + math.floor(t[2] / 1000))
return 1
"""

# A consumer's name is in the group of both of a type's streams, and the heartbeat is one:
# it is dropped only once the name owns nothing in the other stream (KEYS[3]) either.
_OWNS_ELSEWHERE = """
local function owns_elsewhere(name)
  if not KEYS[3] then return false end
  local p = redis.pcall('XPENDING', KEYS[3], ARGV[1], '-', '+', 1, name)
  return type(p) == 'table' and p.err == nil and #p > 0
end
"""

# KEYS: stream, alive, the type's other stream. ARGV: group, consumer, min idle ms, cursor,
# count, dead ms.
# Returns {cursor, entries, forgotten consumers}. First the entries of consumers whose
# heartbeat is older than `dead ms` are taken at once, whatever their idle time (a dead
# consumer cannot renew); such a consumer owning nothing is deleted. Only when no dead
# consumer holds work does one XAUTOCLAIM by idle time run (consumers that never sent a
# heartbeat); its cursor is kept by the caller. Entries deleted while pending come back from
# XAUTOCLAIM as ids only: acked and forgotten. A caller whose own heartbeat looks dead judges
# nobody: the server was unreachable for everyone (a failover), so every beat is old.
CLAIM = (
    _OWNS_ELSEWHERE
    + """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local want = tonumber(ARGV[5])
local taken = {}
local forgotten = {}
local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[2]))
local consumers = {}
if mine and now - mine <= tonumber(ARGV[6]) then
  consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
end
for _, c in ipairs(consumers) do
  local name, pending = nil, 0
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
  end
  local beat = name ~= ARGV[2] and redis.call('HGET', KEYS[2], name)
  if beat and now - tonumber(beat) > tonumber(ARGV[6]) then
    if pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
      if not owns_elsewhere(name) then
        redis.call('HDEL', KEYS[2], name)
        forgotten[#forgotten + 1] = name
      end
    elseif #taken < want then
      local ids = {}
      local owned = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', want - #taken, name)
      for _, p in ipairs(owned) do ids[#ids + 1] = p[1] end
      if #ids > 0 then
        for _, e in ipairs(redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))) do
          if e then taken[#taken + 1] = e end
        end
      end
    end
  end
end
if #taken > 0 then return {ARGV[4], taken, forgotten} end
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', want)
if r[3] and #r[3] > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(r[3])) end
return {r[1], r[2], forgotten}
"""
)

# KEYS: stream, alive, the type's other stream. ARGV: group, consumer, min idle ms.
# Deletes a consumer only if it has been idle that long and owns no pending entry, in one step:
# XGROUP DELCONSUMER would otherwise drop its pending entries, and a check made outside the
# script could be outdated by a read the consumer makes in between. Returns 1 if deleted.
DELETE_CONSUMER = (
    _OWNS_ELSEWHERE
    + """
local idle = nil
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, ms = nil, nil
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'idle' then ms = c[i + 1] end
  end
  if name == ARGV[2] then idle = ms end
end
if idle == nil or idle < tonumber(ARGV[3]) then return 0 end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
if not owns_elsewhere(ARGV[2]) then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
"""
)

# KEYS: the type's stream, its high-priority stream, alive. ARGV: group, min heartbeat age ms,
# names... (none: every name in alive).
# Forgets each consumer whose heartbeat is at least that old (or missing) and that owns no
# entry in either stream: its name leaves both groups and the alive hash. One that still owns
# entries keeps its heartbeat, so that it looks dead and its entries are taken over first.
# A consumer that never read is in no group, only in alive: a clean exit must drop it there
# too. Returns {name, heartbeat age ms (-1 if none), ...} of those forgotten.
FORGET_CONSUMERS = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local beats = {}
local names = {}
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do beats[all[i]] = tonumber(all[i + 1]) end
if #ARGV > 2 then
  for i = 3, #ARGV do names[#names + 1] = ARGV[i] end
else
  for i = 1, #all, 2 do names[#names + 1] = all[i] end
end
local function owns(stream, name)
  local p = redis.pcall('XPENDING', stream, ARGV[1], '-', '+', 1, name)
  return type(p) == 'table' and p.err == nil and #p > 0
end
local forgotten = {}
for _, name in ipairs(names) do
  local age = beats[name] and now - beats[name] or -1
  if age >= tonumber(ARGV[2]) or age < 0 then
    if not owns(KEYS[1], name) and not owns(KEYS[2], name) then
      redis.pcall('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
      redis.pcall('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[1], name)
      redis.call('HDEL', KEYS[3], name)
      forgotten[#forgotten + 1] = name
      forgotten[#forgotten + 1] = age
    end
  end
end
return forgotten
"""

# KEYS: stream, dead, record. ARGV: dead entry id, task ttl.
# Puts a dead-lettered task back to work: the dead entry's own `task` field is XADDed to the
# stream, the record is reset to a fresh pending task (attempts 0, so the delivery cap starts
# over; its user and charge kept) and the dead entry is deleted. Returns {1, new entry id} or
# {0, why not}. Refused when the dead entry is gone, has no `task`, its task completed or was
# cancelled since, or the bot already settled the failure with the user (refunded and told):
# nobody would receive the result.
REPLAY_DEAD = """
local found = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #found == 0 then return {0, 'not in the dead-letter stream'} end
local task = nil
local fields = found[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'task' then task = fields[i + 1] end
end
if not task then return {0, 'no task field (malformed entry)'} end
local st = redis.call('HGET', KEYS[3], 'status')
if st == 'completed' then return {0, 'task completed since'} end
if st == 'cancelled' then return {0, 'task cancelled since'} end
if redis.call('HGET', KEYS[3], 'settled') then
  return {0, 'the bot already refunded this task and told the user'}
end
if not st then
  local ok, decoded = pcall(cjson.decode, task)
  if ok and type(decoded) == 'table' and type(decoded['charge_id']) == 'string' then
    return {0, 'paid task whose record expired: the bot has settled it'}
  end
end
local kept = redis.call('HMGET', KEYS[3], 'user', 'charge')
kept[1] = kept[1] or string.match(task, '"user_id":(%-?%d+)')
local id = redis.call('XADD', KEYS[1], '*', 'task', task)
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'status', 'pending', 'attempts', 0, 'entry', id)
-- Who it is for and what it cost stay: a parked task is found in its user's list by them.
if kept[1] then redis.call('HSET', KEYS[3], 'user', kept[1]) end
if kept[2] then redis.call('HSET', KEYS[3], 'charge', kept[2]) end
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[1])
return {1, id}
"""
