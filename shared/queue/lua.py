"""Lua scripts: each is one atomic step on keys of a single task type (one cluster slot);
the lease scripts (`lua_leases.py`) each work on the keys of a single provider.

A script announces through `publish(channel, message)`, which the runner (`scripts.py`)
defines for the topology: PUBLISH on one server, SPUBLISH on a cluster.

Every script gives the same answer when it is run again with the same arguments: the Redis
client retries a command whose connection dropped, and the first run may have happened
before the reply was lost. The typed wrappers that build KEYS and ARGV are in `steps.py`.
"""

from __future__ import annotations

from shared.queue.lua_fair import FAIR, READ, SWEEP
from shared.queue.lua_leases import LEASE_SCRIPTS

# A status that no later step may overwrite.
_FINAL = """
local function final(st) return st == 'completed' or st == 'failed' or st == 'cancelled' end
"""

# One task's enqueue. Idempotent by task id: a retried enqueue after a lost reply does not add
# a second entry. While the task waits, its record holds only its state, its entry id, who it
# is for and what it cost (charge '' = none; priority '' = normal): the task itself is in the
# entry, copied into the record when it finishes. Returns the entry id, or false.
_ENQUEUE_ONE = """
local function enqueue(stream, record, entry, ttl, user, charge, priority)
  if redis.call('EXISTS', record) == 1 then return false end
  local id = redis.call('XADD', stream, '*', 'task', entry)
  redis.call('HSET', record, 'status', 'pending', 'attempts', 0, 'entry', id, 'user', user)
  if charge ~= '' then redis.call('HSET', record, 'charge', charge) end
  if priority ~= '' then redis.call('HSET', record, 'priority', priority) end
  redis.call('EXPIRE', record, ttl)
  return id
end
"""

# KEYS: stream (normal or high), record. ARGV: entry json, task ttl, user id, charge id
# ('' = none), and 'high' for a task on the high-priority stream.
ENQUEUE = (
    _ENQUEUE_ONE
    + "return enqueue(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5] or '')"
)

# Many tasks onto one stream in one call, each exactly as ENQUEUE would do it: one call
# instead of one per task saves most of the per-call cost, in Redis and in the client.
# KEYS: stream, record 1..n. ARGV: task ttl, 'high' or '', then per task: entry json, user id,
# charge id. Returns per task its entry id, or false (nil) when it existed already.
ENQUEUE_BATCH = (
    _ENQUEUE_ONE
    + """
local out = {}
for i = 2, #KEYS do
  local a = 3 * i - 3
  out[i - 1] = enqueue(KEYS[1], KEYS[i], ARGV[a], ARGV[1], ARGV[a + 1], ARGV[a + 2], ARGV[2])
end
return out
"""
)

# KEYS: record 1..n. ARGV: consumer, started_at, task ttl, start token, then entry json 1..n.
# Returns per task its attempt number, -1 when the record is already final (a duplicate or a
# task cancelled while it waited), or -2 when a cancel was requested for a task not final yet
# (it is finished as cancelled without running). The token is unique per start batch: a
# repeated call finds it and counts no second attempt.
START = (
    _FINAL
    + """
local out = {}
for i, key in ipairs(KEYS) do
  local st = redis.call('HGET', key, 'status')
  if final(st) then
    out[i] = -1
  elseif redis.call('HEXISTS', key, 'cancel') == 1 then
    out[i] = -2
  elseif redis.call('HGET', key, 'start_token') == ARGV[4] then
    out[i] = tonumber(redis.call('HGET', key, 'attempts')) or 1
  else
    if not st then redis.call('HSET', key, 'task', ARGV[4 + i]) end
    redis.call('HSET', key, 'status', 'processing', 'consumer', ARGV[1], 'started_at', ARGV[2],
      'start_token', ARGV[4])
    local n = redis.pcall('HINCRBY', key, 'attempts', 1)
    if type(n) ~= 'number' then
      n = 1
      redis.call('HSET', key, 'attempts', 1)
    end
    out[i] = n
    redis.call('EXPIRE', key, ARGV[3])
  end
end
return out
"""
)

# One task's finish: the first final status wins, so a late duplicate cannot overwrite a
# stored result; the entry is acked and deleted either way, and the task no longer counts for
# its user (fair_done with the fairness keys and arguments from positions fk and fa), whose
# oldest parked task (if any) goes back onto its stream. Returns 1 if this call (or an earlier
# run of it, same token) wrote the final state, else 0.
_FINISH_ONE = """
local function finish(stream, record, group, id, status, at, result, err, ttl, channel,
    message, entry, token, fk, fa)
  local st = redis.call('HGET', record, 'status')
  if final(st) then
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    fair_done(fk, fa)
    if redis.call('HGET', record, 'final_token') == token then return 1 end
    return 0
  end
  redis.call('HSET', record, 'task', entry, 'status', status, 'finished_at', at,
    'final_token', token)
  redis.call('HDEL', record, 'start_token', 'entry', 'moved_from', 'parked')
  if result ~= '' then redis.call('HSET', record, 'result', result) end
  if err ~= '' then redis.call('HSET', record, 'error', err) end
  redis.call('EXPIRE', record, ttl)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  fair_done(fk, fa)
  if channel ~= '' then publish(channel, message) end
  return 1
end
"""

# KEYS: stream (the entry's own), record, then optionally the fairness keys (see
# lua_fair.fair_done). ARGV: group, entry id, status, finished_at, result, error, result ttl,
# channel, message, entry json, token, then the fairness arguments.
FINISH = (
    _FINISH_ONE
    + """
return finish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7],
  ARGV[8], ARGV[9], ARGV[10], ARGV[11], 3, 12)
"""
)

# Many finishes of entries on one stream, without fairness, in one call: each exactly as
# FINISH would do it. KEYS: stream, record 1..n. ARGV: group, result ttl, channel, then per
# task: entry id, status, finished_at, result, error, message, entry json, token. Returns per
# task what FINISH returns.
FINISH_BATCH = (
    _FINISH_ONE
    + """
local out = {}
for i = 2, #KEYS do
  local a = 8 * i - 12
  out[i - 1] = finish(KEYS[1], KEYS[i], ARGV[1], ARGV[a], ARGV[a + 1], ARGV[a + 2],
    ARGV[a + 3], ARGV[a + 4], ARGV[2], ARGV[3], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7])
end
return out
"""
)

# KEYS: stream (the entry's own), dead, record, then optionally the fairness keys (see
# lua_fair.fair_done). ARGV: group, entry id, reason, failed_at, result ttl, channel,
# message, consumer, dead maxlen, token, task json for the record, '1' if a missing record may
# be created (a parsed task) else '0', the four fairness arguments ('' without fairness), then
# the field/value pairs the dead-letter entry keeps.
# The one way to fail a task: the record (if there is one and it is not final) becomes failed,
# the entry moves to the dead-letter stream, is acked and deleted, and the failure is
# announced. A record missing for an unparsable entry is not created. Returns 1 if this call
# (or an earlier run of it) failed the task or moved an entry without a task.
FAIL = """
local present = #redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2]) > 0
local st = redis.call('HGET', KEYS[3], 'status')
local wrote = 0
if final(st) then
  if redis.call('HGET', KEYS[3], 'final_token') == ARGV[10] then wrote = 1 end
elseif st or ARGV[12] == '1' then
  redis.call('HSETNX', KEYS[3], 'task', ARGV[11])
  redis.call('HSET', KEYS[3], 'status', 'failed', 'error', ARGV[3], 'finished_at', ARGV[4],
    'final_token', ARGV[10])
  redis.call('HDEL', KEYS[3], 'start_token', 'entry', 'moved_from', 'parked')
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  wrote = 2
elseif present then
  wrote = 3
end
if wrote >= 2 then
  local fields = {'reason', ARGV[3], 'entry_id', ARGV[2], 'consumer', ARGV[8],
    'failed_at', ARGV[4]}
  for i = 17, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[9], '*', unpack(fields))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
fair_done(4, 13)
if wrote == 2 and ARGV[6] ~= '' then publish(ARGV[6], ARGV[7]) end
if wrote > 0 then return 1 end
return 0
"""

# Without a user cap the finish and fail steps touch no fairness key: their lean forms define
# fair_done as doing nothing, so a deploy without caps runs none of the fairness functions.
_NO_FAIR = """
local function fair_done() end
"""

# KEYS: stream, record. ARGV: group, entry id, owner ('' = any), min idle ms, entry json.
# Hands an entry back to the group as a fresh entry, atomically: a live consumer blocked in
# XREADGROUP gets it at once. Skipped when the entry is no longer pending for that owner
# (someone acked or renewed it meanwhile); a finished task is only acked. The record keeps
# the move, so a repeated call answers with the same new entry id.
REQUEUE = (
    _FINAL
    + """
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
local new_id = redis.call('XADD', KEYS[1], '*', 'task', ARGV[5])
if st then
  redis.call('HSET', KEYS[2], 'status', 'pending', 'moved_from', ARGV[2], 'entry', new_id)
end
return new_id
"""
)

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

# KEYS: normal stream, record, high stream, users running, users parked. ARGV: finished_at,
# result ttl, completion channel, cancels channel, task id, users prefix, records prefix,
# the type's user cap (0 = none).
# Returns the status after the call (false: no such record).
# A waiting task becomes cancelled at once (final, no result, announced like any final
# status); its entry stays until a consumer reads it, finds the record final and acks it.
# It stops counting for its user at once: taken out of the user's parked list if parked
# there, out of the running set if it was counted (moved back from the list, or handed back),
# and the user's oldest parked task takes the freed place.
# A running task gets a cancel flag and a message to the consumers (its end releases its
# place); a final one is left as it is. Idempotent: a repeat after a lost reply finds the
# cancelled status and does nothing.
CANCEL = """
local st = redis.call('HGET', KEYS[2], 'status')
if not st or final(st) then return st end
if st ~= 'pending' then
  redis.call('HSET', KEYS[2], 'cancel', '1')
  publish(ARGV[4], ARGV[5])
  return st
end
local task = redis.call('HGET', KEYS[2], 'task')
local entry = redis.call('HGET', KEYS[2], 'entry')
local stream = KEYS[1]
if redis.call('HGET', KEYS[2], 'priority') == 'high' then stream = KEYS[3] end
if not task and entry then
  local found = redis.call('XRANGE', stream, entry, entry)
  local fields = found[1] and found[1][2] or {}
  for i = 1, #fields, 2 do
    if fields[i] == 'task' then task = fields[i + 1] end
  end
end
local uid = redis.call('HGET', KEYS[2], 'user')
local parked = redis.call('HGET', KEYS[2], 'parked')
redis.call('HSET', KEYS[2], 'status', 'cancelled', 'finished_at', ARGV[1], 'cancel', '1',
  'final_token', 'cancel')
redis.call('HDEL', KEYS[2], 'start_token', 'entry', 'moved_from', 'parked')
if uid and ARGV[6] ~= '' then
  local t = {normal = KEYS[1], high = KEYS[3], load = KEYS[4], waiting = KEYS[5],
    records = ARGV[7]}
  local u = {running = ARGV[6] .. uid .. ':running', parked = ARGV[6] .. uid .. ':parked',
    uid = uid, cap = tonumber(ARGV[8])}
  if parked then task = task or fair_unpark(t, u, ARGV[5]) end
  if redis.call('SISMEMBER', u.running, ARGV[5]) == 1 then
    fair_remove(t, u, ARGV[5])
    fair_fill(t, u)
  end
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
local head = '{"task_id":' .. cjson.encode(ARGV[5]) .. ',"status":"cancelled"'
if task then
  redis.call('HSET', KEYS[2], 'task', task)
  local attempts = tonumber(redis.call('HGET', KEYS[2], 'attempts')) or 0
  head = head .. ',"finished_at":' .. ARGV[1] .. ',"attempts":' .. attempts .. ',"task":' .. task
end
publish(ARGV[3], head .. '}')
return 'cancelled'
"""

# KEYS: record. Marks a failed task's record settled (its owner refunded it and told the
# user). Only an existing record is marked: HSET alone would recreate an expired one.
MARK_SETTLED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'settled', '1') end
return 0
"""

SCRIPTS = {
    "enqueue": ENQUEUE,
    "enqueue_batch": ENQUEUE_BATCH,
    "start": START,
    "finish": _FINAL + _NO_FAIR + FINISH,
    "finish_fair": _FINAL + FAIR + FINISH,
    "finish_batch": _FINAL + _NO_FAIR + FINISH_BATCH,
    "fail": _FINAL + _NO_FAIR + FAIL,
    "fail_fair": _FINAL + FAIR + FAIL,
    "requeue": REQUEUE,
    "renew": RENEW,
    "heartbeat": HEARTBEAT,
    "claim": CLAIM,
    "delete_consumer": DELETE_CONSUMER,
    "forget_consumers": FORGET_CONSUMERS,
    "replay_dead": REPLAY_DEAD,
    "read": _FINAL + FAIR + READ,
    "sweep": _FINAL + FAIR + SWEEP,
    "cancel": _FINAL + FAIR + CANCEL,
    "mark_settled": MARK_SETTLED,
    **LEASE_SCRIPTS,
}
