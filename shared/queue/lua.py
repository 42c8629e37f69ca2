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
from shared.queue.lua_runs import (
    FAIL,
    FINAL,
    FINISH,
    FINISH_BATCH,
    FINISH_EARLY,
    NO_FAIR,
    START,
)

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
  'final_id', 'cancel')
redis.call('HDEL', KEYS[2], 'start_id', 'entry', 'moved_from', 'parked')
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
    "finish": FINAL + NO_FAIR + FINISH,
    "finish_fair": FINAL + FAIR + FINISH,
    "finish_batch": FINAL + NO_FAIR + FINISH_BATCH,
    "finish_early": FINAL + NO_FAIR + FINISH_EARLY,
    "fail": FINAL + NO_FAIR + FAIL,
    "fail_fair": FINAL + FAIR + FAIL,
    "requeue": FINAL + REQUEUE,
    "renew": RENEW,
    "heartbeat": HEARTBEAT,
    "claim": CLAIM,
    "delete_consumer": DELETE_CONSUMER,
    "forget_consumers": FORGET_CONSUMERS,
    "replay_dead": REPLAY_DEAD,
    "read": FINAL + FAIR + READ,
    "sweep": FINAL + FAIR + SWEEP,
    "cancel": FINAL + FAIR + CANCEL,
    "mark_settled": MARK_SETTLED,
    **LEASE_SCRIPTS,
}
