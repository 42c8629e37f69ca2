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
from shared.queue.lua_recovery import (
    CLAIM,
    DELETE_CONSUMER,
    FORGET_CONSUMERS,
    HEARTBEAT,
    RENEW,
    REPLAY_DEAD,
    REQUEUE,
)

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
    "requeue": _FINAL + REQUEUE,
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
