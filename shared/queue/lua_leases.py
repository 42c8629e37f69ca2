"""Lua of a provider's global admission: concurrency leases, a token bucket, a shared pause.

Each script touches only the keys of one provider (hash tag `{provider:NAME}`) and reads the
time from the server, so consumers with skewed clocks agree on every expiry. Lease ids are
made by the caller, which makes every step safe to repeat after a lost reply: an id already
held is not granted (or charged a token) twice, and an id already released frees nothing more.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
"""

# The bucket refills at `rate` tokens per ms up to `burst`; a missing bucket is full, and the
# key expires once it would be full again.
_BUCKET = """
local function bucket_level(key, rate, burst)
  local b = redis.call('HMGET', key, 'tokens', 'at')
  local level, at = tonumber(b[1]), tonumber(b[2])
  if not level or not at then return burst end
  return math.min(burst, level + math.max(0, now - at) * rate)
end
local function bucket_store(key, level, rate, burst)
  redis.call('HSET', key, 'tokens', tostring(level), 'at', now)
  redis.call('PEXPIRE', key, math.ceil(burst / rate) + 1000)
end
"""

# KEYS: leases, bucket, paused, freed. ARGV: limit (0 = no cap), tokens per ms (0 = no rate),
# burst, lease ttl ms, then the lease ids asked for.
# Returns {granted ids, ms until the next token, ms the pause has left, 1 if at the cap}.
# Leases whose holder stopped renewing them are dropped first. While the provider is paused
# nothing new is granted. At the cap, wake-ups left by earlier releases are stale (nothing is
# free now) and are deleted, so a waiter blocks until the next real release.
ADMIT = (
    _NOW
    + _BUCKET
    + """
local limit, rate, burst, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local granted, fresh = {}, {}
for i = 5, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
    granted[#granted + 1] = ARGV[i]
  else
    fresh[#fresh + 1] = ARGV[i]
  end
end
local paused = redis.call('PTTL', KEYS[3])
if paused > 0 then return {granted, 0, paused, 0} end
local room = #fresh
if limit > 0 then room = math.max(0, limit - redis.call('ZCARD', KEYS[1])) end
local level = #fresh
if rate > 0 then level = bucket_level(KEYS[2], rate, burst) end
local n = math.min(#fresh, room, math.floor(level))
for i = 1, n do
  redis.call('ZADD', KEYS[1], now + ttl, fresh[i])
  granted[#granted + 1] = fresh[i]
end
local wait, at_cap = 0, 0
if rate > 0 then
  if n > 0 then bucket_store(KEYS[2], level - n, rate, burst) end
  if n < #fresh and n < room then wait = math.ceil((1 - (level - n)) / rate) end
end
if n < #fresh and n >= room then
  at_cap = 1
  redis.call('DEL', KEYS[4])
end
return {granted, wait, 0, at_cap}
"""
)

# KEYS: leases, bucket, freed. ARGV: tokens per ms (0 = no rate), burst, how many of the ids
# were used, then the lease ids. The first `used` ids called the provider; the others never
# did and give their token back. Each freed lease wakes one consumer waiting at the cap.
# Answers with the number of ids, all free now, so a repeat answers the same (and, finding
# them gone, neither refunds nor wakes anyone again).
RELEASE = (
    _NOW
    + _BUCKET
    + """
local rate, burst, used = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local freed, refund = 0, 0
for i = 4, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    freed = freed + 1
    if i > 3 + used then refund = refund + 1 end
  end
end
if refund > 0 and rate > 0 then
  bucket_store(KEYS[2], math.min(burst, bucket_level(KEYS[2], rate, burst) + refund), rate,
    burst)
end
if freed > 0 then
  for _ = 1, freed do redis.call('RPUSH', KEYS[3], 1) end
  redis.call('LTRIM', KEYS[3], -64, -1)
  redis.call('PEXPIRE', KEYS[3], 10000)
end
return #ARGV - 3
"""
)

# KEYS: leases. ARGV: ttl ms, '1' to add back missing ids else '0', then lease ids.
# Extends each lease that is still held and returns the ids that were not (expired: their
# holder stalled longer than the ttl). Adding back is a separate, explicit call: the holder
# may have released an id while this call was on its way, and a released lease must not
# come back. Repeats converge (an id extended twice is extended; added back twice is held).
RENEW_LEASES = (
    _NOW
    + """
local ttl, restore = tonumber(ARGV[1]), ARGV[2] == '1'
local lost = {}
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) >= now then
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
    if restore then redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
  end
end
return lost
"""
)

# KEYS: paused. ARGV: pause ms, pause id. The provider is paused until `ms` from now, or
# longer if it already was; the key expires when the pause ends. Returns the ms left. A
# repeat with the same id changes nothing and answers with the same end.
PAUSE = (
    _NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'until', 'id')
local ends = tonumber(cur[1]) or 0
if cur[2] == ARGV[2] then return math.max(0, ends - now) end
ends = math.max(ends, now + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'until', ends, 'id', ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.max(1, ends - now))
return ends - now
"""
)

LEASE_SCRIPTS = {
    "admit": ADMIT,
    "release": RELEASE,
    "renew_leases": RENEW_LEASES,
    "pause": PAUSE,
}
