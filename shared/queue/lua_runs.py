"""Lua scripts of one run of a task: its start, and its finish or failure (alone, in a batch,
or sent behind its start before that start answered). See `lua.py` for the rules all the
queue's scripts follow (one slot each, `publish()` by topology, same answer when repeated).
"""

from __future__ import annotations

# A status that no later step may overwrite.
FINAL = """
local function final(st) return st == 'completed' or st == 'failed' or st == 'cancelled' end
"""

# KEYS: record 1..n. ARGV: consumer, started_at, task ttl, start id, then entry json 1..n.
# Returns per task its attempt number, -1 when the record is already final (a duplicate or a
# task cancelled while it waited), or -2 when a cancel was requested for a task not final yet
# (it is finished as cancelled without running). The start id is unique per start batch: a
# repeated call finds it and counts no second attempt.
START = (
    FINAL
    + """
local out = {}
for i, key in ipairs(KEYS) do
  local st = redis.call('HGET', key, 'status')
  if final(st) then
    out[i] = -1
  elseif redis.call('HEXISTS', key, 'cancel') == 1 then
    out[i] = -2
  elseif redis.call('HGET', key, 'start_id') == ARGV[4] then
    out[i] = tonumber(redis.call('HGET', key, 'attempts')) or 1
  else
    if not st then redis.call('HSET', key, 'task', ARGV[4 + i]) end
    redis.call('HSET', key, 'status', 'processing', 'consumer', ARGV[1], 'started_at', ARGV[2],
      'start_id', ARGV[4])
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
# run of it, same final id) wrote the final state, else 0.
_FINISH_ONE = """
local function finish(stream, record, group, id, status, at, result, err, ttl, channel,
    message, entry, final_id, fk, fa)
  local st = redis.call('HGET', record, 'status')
  if final(st) then
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    fair_done(fk, fa)
    if redis.call('HGET', record, 'final_id') == final_id then return 1 end
    return 0
  end
  redis.call('HSET', record, 'task', entry, 'status', status, 'finished_at', at,
    'final_id', final_id)
  redis.call('HDEL', record, 'start_id', 'entry', 'moved_from', 'parked')
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
# channel, message, entry json, final id, then the fairness arguments.
FINISH = (
    _FINISH_ONE
    + """
return finish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7],
  ARGV[8], ARGV[9], ARGV[10], ARGV[11], 3, 12)
"""
)

# Many finishes of entries on one stream, without fairness, in one call: each exactly as
# FINISH would do it. KEYS: stream, record 1..n. ARGV: group, result ttl, channel, then per
# task: entry id, status, finished_at, result, error, message, entry json, final id. Returns per
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

# Finishes sent on the start step's connection right behind it, before its answer came
# (the runner's early finish, see docs/guarantees.md): each runs only if that start admitted
# the run it finishes, which the record shows by the start's id and the attempt the
# sender expected; otherwise it does nothing at all (no ack, no write) and answers -1, and
# the sender finishes the entry the ordinary way once the start has answered. Without
# fairness only. KEYS: stream, record 1..n. ARGV: group, result ttl, channel, start id,
# then per task: entry id, status, finished_at, result, error, message, entry json, final id,
# expected attempt. Returns per task -1, or what FINISH returns.
FINISH_EARLY = (
    _FINISH_ONE
    + """
local out = {}
for i = 2, #KEYS do
  local a = 9 * i - 13
  local seen = redis.call('HMGET', KEYS[i], 'start_id', 'attempts')
  if seen[1] ~= ARGV[4] or seen[2] ~= ARGV[a + 8] then
    out[i - 1] = -1
  else
    out[i - 1] = finish(KEYS[1], KEYS[i], ARGV[1], ARGV[a], ARGV[a + 1], ARGV[a + 2],
      ARGV[a + 3], ARGV[a + 4], ARGV[2], ARGV[3], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7])
  end
end
return out
"""
)

# KEYS: stream (the entry's own), dead, record, then optionally the fairness keys (see
# lua_fair.fair_done). ARGV: group, entry id, reason, failed_at, result ttl, channel,
# message, consumer, dead maxlen, final id, task json for the record, '1' if a missing record may
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
  if redis.call('HGET', KEYS[3], 'final_id') == ARGV[10] then wrote = 1 end
elseif st or ARGV[12] == '1' then
  redis.call('HSETNX', KEYS[3], 'task', ARGV[11])
  redis.call('HSET', KEYS[3], 'status', 'failed', 'error', ARGV[3], 'finished_at', ARGV[4],
    'final_id', ARGV[10])
  redis.call('HDEL', KEYS[3], 'start_id', 'entry', 'moved_from', 'parked')
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
NO_FAIR = """
local function fair_done() end
"""
