"""Lua scripts: each is one atomic step on keys of a single task type (one cluster slot)."""

from __future__ import annotations

# KEYS: stream, record. ARGV: entry json, task ttl, created_at, charge_id.
# Idempotent by task id: a retried enqueue after a lost reply does not add a second entry.
ENQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
redis.call('HSET', KEYS[2], 'task', ARGV[1], 'status', 'pending', 'attempts', 0)
redis.call('EXPIRE', KEYS[2], ARGV[2])
return redis.call('XADD', KEYS[1], '*', 'task', ARGV[1])
"""

# KEYS: record 1..n. ARGV: consumer, started_at, task ttl, then entry json 1..n.
# Returns per task its attempt number, or -1 when the record is already final (a duplicate).
START = """
local out = {}
for i, key in ipairs(KEYS) do
  local st = redis.call('HGET', key, 'status')
  if st == 'completed' or st == 'failed' then
    out[i] = -1
  else
    if not st then redis.call('HSET', key, 'task', ARGV[3 + i]) end
    redis.call('HSET', key, 'status', 'processing', 'consumer', ARGV[1], 'started_at', ARGV[2])
    out[i] = redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('EXPIRE', key, ARGV[3])
  end
end
return out
"""

# KEYS: stream, record. ARGV: group, entry id, status, finished_at, result, error, result ttl,
# channel, message, entry json. The first final status wins, so a late duplicate cannot
# overwrite a stored result; the entry is acked and deleted either way.
FINISH = """
local st = redis.call('HGET', KEYS[2], 'status')
local wrote = 0
if st ~= 'completed' and st ~= 'failed' then
  if not st then redis.call('HSET', KEYS[2], 'task', ARGV[10]) end
  redis.call('HSET', KEYS[2], 'status', ARGV[3], 'finished_at', ARGV[4])
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'result', ARGV[5]) end
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'error', ARGV[6]) end
  redis.call('EXPIRE', KEYS[2], ARGV[7])
  wrote = 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if wrote == 1 and ARGV[8] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[9]) end
return wrote
"""

# KEYS: stream, record, dead. ARGV: group, entry id, reason, finished_at, result ttl, channel,
# message, entry json, consumer, maxlen of the dead-letter stream.
# Moves the entry to the dead-letter stream and fails the task, unless it already completed.
# An empty channel leaves the announcement to the caller (after it refunded the task).
DEAD_LETTER = """
local st = redis.call('HGET', KEYS[2], 'status')
local wrote = 0
if st ~= 'completed' and st ~= 'failed' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*', 'task', ARGV[8],
    'reason', ARGV[3], 'entry_id', ARGV[2], 'consumer', ARGV[9], 'failed_at', ARGV[4])
  if not st then redis.call('HSET', KEYS[2], 'task', ARGV[8]) end
  redis.call('HSET', KEYS[2], 'status', 'failed', 'error', ARGV[3], 'finished_at', ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  wrote = 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if wrote == 1 and ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
return wrote
"""

# KEYS: stream, dead. ARGV: group, entry id, reason, failed_at, consumer, maxlen, then the raw
# field/value pairs of an entry that cannot be parsed (so it has no usable task record).
DEAD_LETTER_RAW = """
local fields = {'reason', ARGV[3], 'entry_id', ARGV[2], 'consumer', ARGV[5], 'failed_at', ARGV[4]}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# KEYS: stream, record. ARGV: group, entry id, owner ('' = any), min idle ms, entry json.
# Hands an entry back to the group as a fresh entry, atomically: a live consumer blocked in
# XREADGROUP gets it at once. Skipped when the entry is no longer pending for that owner
# (someone acked or renewed it meanwhile); a finished task is only acked.
REQUEUE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[4], ARGV[2], ARGV[2], 1)
if #p == 0 then return false end
if ARGV[3] ~= '' and p[1][2] ~= ARGV[3] then return false end
local st = redis.call('HGET', KEYS[2], 'status')
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if st == 'completed' or st == 'failed' then return false end
if st then redis.call('HSET', KEYS[2], 'status', 'pending') end
return redis.call('XADD', KEYS[1], '*', 'task', ARGV[5])
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

# KEYS: stream. ARGV: group, consumer, min idle ms, cursor, count.
# One atomic XAUTOCLAIM; entries deleted while pending come back as ids only: ack and forget.
CLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
if r[3] and #r[3] > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(r[3])) end
return {r[1], r[2]}
"""

# KEYS: stream. ARGV: group, consumer, min idle ms.
# Deletes a consumer only if it has been idle that long and owns no pending entry, in one step:
# XGROUP DELCONSUMER would otherwise drop its pending entries, and a check made outside the
# script could be outdated by a read the consumer makes in between. Returns 1 if deleted.
DELETE_CONSUMER = """
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
return 1
"""

# KEYS: stream, dead, record. ARGV: dead entry id, task ttl.
# Puts a dead-lettered task back to work: the dead entry's own `task` field is XADDed to the
# stream, the record is reset to a fresh pending task (attempts 0, so the delivery cap starts
# over) and the dead entry is deleted. Returns {1, new entry id} or {0, why not}: the dead entry
# is gone (replayed or purged meanwhile), has no `task` (a raw malformed entry), or its task has
# completed since (running it again would repeat its side effects).
REPLAY_DEAD = """
local found = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #found == 0 then return {0, 'not in the dead-letter stream'} end
local task = nil
local fields = found[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'task' then task = fields[i + 1] end
end
if not task then return {0, 'no task field (malformed entry)'} end
if redis.call('HGET', KEYS[3], 'status') == 'completed' then
  return {0, 'task completed since'}
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'task', task, 'status', 'pending', 'attempts', 0)
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[1])
return {1, redis.call('XADD', KEYS[1], '*', 'task', task)}
"""

SCRIPTS = {
    "enqueue": ENQUEUE,
    "start": START,
    "finish": FINISH,
    "dead_letter": DEAD_LETTER,
    "dead_letter_raw": DEAD_LETTER_RAW,
    "requeue": REQUEUE,
    "renew": RENEW,
    "claim": CLAIM,
    "delete_consumer": DELETE_CONSUMER,
    "replay_dead": REPLAY_DEAD,
}
