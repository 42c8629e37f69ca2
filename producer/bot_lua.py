"""The bot's own Lua scripts (send budgets, chat turns, photo locks), on keys under
REDIS_BOT_PREFIX; the typed steps that run them are in `bot_steps.py`.

Each script touches the keys of one chat or one user (one cluster slot), and gives the same
answer when run again after a lost reply. Times are the server's, in ms.
"""

from __future__ import annotations

# Send budget. KEYS[1] = the chat's budget, a hash: `free` (the next slot not yet booked),
# `quiet` (no call may start before it: the last answer plus the interval, or a 429's
# retry_after) and, while a call is in flight, `lease` (its deadline) and `owner`.
_BUDGET_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local free = tonumber(redis.call('HGET', KEYS[1], 'free') or '0')
local quiet = tonumber(redis.call('HGET', KEYS[1], 'quiet') or '0')
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease') or '0')
local function start(lease_ms, owner)
  redis.call('HSET', KEYS[1], 'lease', now + tonumber(lease_ms), 'owner', owner)
end
local function keep(ms)
  redis.call('PEXPIRE', KEYS[1], math.max(free - now, quiet - now, 0) + ms + 60000)
end
"""

# ARGV: interval ms, wait ('1'/'0'), lease ms, owner. Waiting, it books the next slot and
# returns the ms to wait for it (0: the call starts now). Not waiting, it starts the call only
# if the chat is free now (0), else books nothing and returns the ms until it is free.
BUDGET_TAKE = (
    _BUDGET_NOW
    + """
local slot = math.max(now, free, quiet)
if ARGV[2] == '0' then
  if lease > now then return math.max(slot - now, 50) end
  if slot > now then return slot - now end
end
redis.call('HSET', KEYS[1], 'free', slot + tonumber(ARGV[1]))
keep(tonumber(ARGV[1]) + tonumber(ARGV[3]))
if slot > now then return slot - now end
if lease > now then return 1 end  -- due, but the call before is in flight: start waits
start(ARGV[3], ARGV[4])
return 0
"""
)

# ARGV: lease ms, owner. A booked call starts (0); or the ms it must still wait, negative
# while the call before is in flight (its answer time is not known yet).
BUDGET_START = (
    _BUDGET_NOW
    + """
if lease > now then return now - lease end
if quiet > now then return quiet - now end
start(ARGV[1], ARGV[2])
keep(tonumber(ARGV[1]))
return 0
"""
)

# ARGV: ms the chat stays quiet from now (the interval, or a 429's retry_after if longer).
BUDGET_ANSWERED = (
    _BUDGET_NOW
    + """
redis.call('HDEL', KEYS[1], 'lease', 'owner')
redis.call('HSET', KEYS[1], 'quiet', math.max(quiet, now + tonumber(ARGV[1])))
keep(tonumber(ARGV[1]))
return 1
"""
)

# ARGV: owner. A call that never left (cancelled as it started) frees the chat at once.
BUDGET_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'lease', 'owner')
end
return 1
"""

# Chat turns. KEYS: turns (sorted set of update ids), leases (hash: update id ->
# "deadline_ms:holder"). ARGV: update id, holder, lease ms. 1 if the update may run now, else 0.
TURN_ENTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  local deadline, owner = string.match(held, '^(%d+):(.*)$')
  if owner ~= ARGV[2] and tonumber(deadline) > now then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], (now + tonumber(ARGV[3])) .. ':' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[2], 10 * tonumber(ARGV[3]))
while true do
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if head == ARGV[1] then return 1 end
  local lease = redis.call('HGET', KEYS[2], head)
  if lease and tonumber(string.match(lease, '^(%d+):')) > now then return 0 end
  redis.call('ZREM', KEYS[1], head)
  redis.call('HDEL', KEYS[2], head)
end
"""

# KEYS and ARGV as for TURN_ENTER. Extends the lease if this holder still holds it; 1 if so.
TURN_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held or string.match(held, '^%d+:(.*)$') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], (now + tonumber(ARGV[3])) .. ':' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[2], 10 * tonumber(ARGV[3]))
return 1
"""

# KEYS as for TURN_ENTER. ARGV: update id, holder. Removes the update if this holder holds it.
TURN_LEAVE = """
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held or string.match(held, '^%d+:(.*)$') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
return 1
"""

# Photo lock. KEYS: the user's lock. ARGV: holder, ttl seconds. 1 if taken now or already held
# by this holder (a repeated update of the same press), else 0.
PHOTO_LOCK_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""

# KEYS: the user's lock. ARGV: holder. Compare and delete in one step, so a lock taken by a
# newer press in between survives.
PHOTO_LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

BOT_SCRIPTS = {
    "bot_budget_take": BUDGET_TAKE,
    "bot_budget_start": BUDGET_START,
    "bot_budget_answered": BUDGET_ANSWERED,
    "bot_budget_release": BUDGET_RELEASE,
    "bot_turn_enter": TURN_ENTER,
    "bot_turn_renew": TURN_RENEW,
    "bot_turn_leave": TURN_LEAVE,
    "bot_photo_lock_take": PHOTO_LOCK_TAKE,
    "bot_photo_lock_release": PHOTO_LOCK_RELEASE,
}
