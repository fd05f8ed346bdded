"""The Lua scripts of ``RedisState``: each one is a step that must be atomic across replicas
(taking signals, claiming keys, leases with fencing tokens). Key layout: ``loom.state.redis_state``.
"""

from __future__ import annotations

# Moves every pending signal behind the in-flight ones (a dead run's leftovers stay
# first), drops the interrupt requests those signals answer, returns the in-flight list.
TAKE_PENDING = """
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do end
redis.call('DEL', KEYS[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[1]), -1)
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return redis.call('LRANGE', KEYS[2], 0, -1)
"""

# An interrupted run's signals go back to the front of the pending list, oldest first
# (ARGV[5..]), and its in-flight list goes; KEYS[3] is the ready set. ARGV: the pending
# bound, keep (ms), ready (1/0), the session id, then the signals.
CARRY_OVER = """
redis.call('DEL', KEYS[2])
for i = #ARGV, 5, -1 do redis.call('LPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if ARGV[3] == '1' then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[3], 'NX', t[1] .. '.' .. string.format('%06d', tonumber(t[2])), ARGV[4])
end
"""

# Put-off runs (debounce, minimum interval), on the server's clock. KEYS: the due set
# (session -> due time), the first-put-off set (session -> time of the first), the ready
# set. ARGV: session id, delay, max wait (seconds).
SCHEDULE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local first = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0')
if first == 0 then
  first = now
  redis.call('ZADD', KEYS[2], string.format('%.6f', now), ARGV[1])
end
local due = math.min(now + tonumber(ARGV[2]), first + tonumber(ARGV[3]))
redis.call('ZADD', KEYS[1], string.format('%.6f', due), ARGV[1])
return 1
"""

# Moves due sessions (at most ARGV[1]) from the due set to the ready set; each goes to
# one caller. KEYS as SCHEDULE's.
PROMOTE_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now),
  'LIMIT', 0, tonumber(ARGV[1]))
local score = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
for _, sid in ipairs(due) do
  redis.call('ZREM', KEYS[1], sid)
  redis.call('ZREM', KEYS[2], sid)
  redis.call('ZADD', KEYS[3], 'NX', score, sid)
end
return due
"""

# A run started (ARGV[1] = 'started') or ended ('ended') now; KEYS[1] the session's runs
# hash; ARGV[2] keep (ms).
NOTE_RUN = """
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
"""

# Seconds since each session's last run started and ended ('' = never); KEYS: runs hashes.
RUN_TIMES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i = 1, #KEYS do
  local times = redis.call('HMGET', KEYS[i], 'started', 'ended')
  for j = 1, 2 do
    out[#out + 1] = times[j] and string.format('%.6f', now - tonumber(times[j])) or ''
  end
end
return out
"""

# Adds or replaces a risk as the newest; the oldest go past the bound.
SET_RISK = """
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
while redis.call('LLEN', KEYS[2]) > tonumber(ARGV[3]) do
  redis.call('HDEL', KEYS[1], redis.call('LPOP', KEYS[2]))
end
if tonumber(ARGV[4]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
"""

# Marks a session ready at the server's time (one clock for all replicas); NX keeps the
# first mark, so a session that keeps getting signals does not lose its place.
CLAIM = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# The gateway's accept path, one round trip each side of the publish. Two keys in one
# script: fine on one Redis server (what RedisState talks to); a cluster would need them in
# one slot.
# The accept path's two steps, each run for many requests at once (``AutoPipeline.call_each``):
# a request's keys are KEYS[2i-1] (its marker) and KEYS[2i] (its claim), its arguments two
# (or three) of ARGV, and its answer is element i of the reply. A failing command (a key of
# the wrong type) is caught and answered as that request's error alone, as a script of its
# own would have failed; the requests are taken in order, so of two requests for one key in
# a batch the second meets the first's claim.
# CLAIM_UNLESS_MARKED_EACH: ARGV per request: owner, claim TTL (ms). Its answer: false when
# the claim was taken, else {'marked', marker value} or {'claimed', holder}.
CLAIM_UNLESS_MARKED_EACH = """
local out = {}
for i = 1, #KEYS / 2 do
  local answer = redis.pcall('GET', KEYS[2 * i - 1])
  if type(answer) == 'string' then
    answer = {'marked', answer}
  elseif not answer then
    answer = redis.pcall('GET', KEYS[2 * i])
    if type(answer) == 'string' then
      answer = {'claimed', answer}
    elseif not answer then
      answer = redis.pcall('SET', KEYS[2 * i], ARGV[2 * i - 1], 'PX', ARGV[2 * i])
      if not answer.err then answer = false end
    end
  end
  out[i] = answer
end
return out
"""

# MARK_AND_RELEASE_EACH: ARGV per request: marker value, marker TTL (ms), owner. Sets the
# marker, and releases the claim if the owner still holds it. Its answer: false, or its error.
MARK_AND_RELEASE_EACH = """
local out = {}
for i = 1, #KEYS / 2 do
  local answer = redis.pcall('SET', KEYS[2 * i - 1], ARGV[3 * i - 2], 'PX', ARGV[3 * i - 1])
  if not answer.err then
    answer = redis.pcall('GET', KEYS[2 * i])
    if answer == ARGV[3 * i] then answer = redis.pcall('DEL', KEYS[2 * i]) end
    if type(answer) ~= 'table' or not answer.err then answer = false end
  end
  out[i] = answer
end
return out
"""

# The attention role's batch, one round trip each (a batch of signals used to cost about ten
# commands per signal, and redis-py's per-command cost was most of the role's CPU).
CLAIM_MANY = """
local out = {}
for i = 1, #KEYS do
  local held = redis.call('GET', KEYS[i])
  if held then
    out[i] = held
  else
    redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'PX', ARGV[2 * i])
    out[i] = false
  end
end
return out
"""

# KEYS: per session risk_order, risks, lease, pending.
DECISION_CONTEXTS = """
local out = {}
for i = 1, #KEYS, 4 do
  out[#out + 1] = {
    redis.call('LRANGE', KEYS[i], 0, -1),
    redis.call('HGETALL', KEYS[i + 1]),
    redis.call('EXISTS', KEYS[i + 2]),
    redis.call('LLEN', KEYS[i + 3]),
  }
end
return out
"""

# KEYS: the ready set, the due set and the first-put-off set (a ready record takes the session's
# put-off run with it), the activity index (session -> last active, server seconds; entries older
# than keep go). ARGV: keep (ms, 0 = no expiry), the pending bound, the decisions bound, then the
# batch as one JSON array of records [key stem, session id, pending JSON, interrupt JSON, ready,
# decision JSON, recorded key, claim shard, claim place] ("" = none), then the claim TTL (ms),
# the claim bucket width (ms), the claim hashes' prefix and the claims' digests. A record whose
# signal was recorded before (a redelivery, or a write that timed out and landed anyway) is
# skipped. One argument for the whole batch, not eight per signal: redis-py packs every argument
# in Python, and that packing was a third of the attention role's Redis cost. The session keys
# are the stem plus the part's name (session_key); a script may build its keys on one Redis,
# which is what Loom runs on.
# Atomic, like the transaction it replaces: a decision is never recorded without its effects.
# Answers the sessions of ready records that need no work notice: those whose lease was held
# when the record landed (their holder's ending, a later script, takes the signals), and those
# a notice is out for (KEYS[5], session -> server time the notice was asked: the next lease
# taken on the session, which takes its pending signals, ends it in ``acquire``; one older
# than ARGV[9] ms counts as lost and another is asked). Every other session's ready records
# ask for one notice, noted in KEYS[5], and so does a ready record recorded before (a batch
# delivered again, whose notice may not have gone out: its publish failed, say).
#
# The redelivery claims are kept compactly (about 16 bytes a signal, against 130 for a key of
# its own): a claim is a field of the hash ``<claim prefix><bucket>:<shard>``, where the bucket
# is the server time (ms) divided by the bucket width (fixed, not derived from the TTL, so
# replicas with different claim TTLs share one layout) and the shard the first three hex digits
# of a digest of the signal id (4,096 hashes a bucket, each small enough to stay a listpack);
# the field is the next ten bytes of that digest, taken from the digests argument at the
# record's claim place (ten bytes each). A hash expires one claim TTL after its bucket ends, so
# a claim lives between one TTL and one TTL plus one bucket width. A signal is looked up in
# every bucket of the last TTL, and under the recorded key: one key a signal, the layout before
# these hashes (and what ``claim`` writes), so claims taken before an upgrade still hold.
RECORD_SIGNALS = """
local keep = tonumber(ARGV[1])
local max_pending = tonumber(ARGV[2])
local max_decisions = tonumber(ARGV[3])
local function push(key, value, bound)
  redis.call('RPUSH', key, value)
  redis.call('LTRIM', key, -bound, -1)
  if keep > 0 then redis.call('PEXPIRE', key, keep) end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[5])
local width = tonumber(ARGV[6])
local current = math.floor(now_ms / width)
local oldest = math.floor((now_ms - ttl) / width)
local live = (current + 1) * width + ttl - now_ms
local function fresh(r)
  if r[7] == '' then return true end
  if redis.call('EXISTS', r[7]) == 1 then return false end
  local field = string.sub(ARGV[8], r[9] * 10 - 9, r[9] * 10)
  for bucket = current, oldest, -1 do
    if redis.call('HEXISTS', ARGV[7] .. bucket .. ':' .. r[8], field) == 1 then return false end
  end
  local claims = ARGV[7] .. current .. ':' .. r[8]
  redis.call('HSET', claims, field, '')
  if redis.call('PTTL', claims) < live then redis.call('PEXPIRE', claims, live) end
  return true
end
if keep > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - keep / 1000) end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[9]) / 1000)
local quiet, asked = {}, {}
for _, r in ipairs(cjson.decode(ARGV[4])) do
  if fresh(r) then
    local stem = r[1]
    if r[3] ~= '' then push(stem .. 'pending', r[3], max_pending) end
    if r[4] ~= '' then push(stem .. 'interrupts', r[4], max_pending) end
    if r[5] then
      local t = redis.call('TIME')
      local score = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
      redis.call('ZADD', KEYS[1], 'NX', score, r[2])
      redis.call('ZREM', KEYS[2], r[2])
      redis.call('ZREM', KEYS[3], r[2])
      if redis.call('EXISTS', stem .. 'lease') == 1 or redis.call('ZSCORE', KEYS[5], r[2]) then
        quiet[r[2]] = true
      else
        asked[r[2]] = true
        redis.call('ZADD', KEYS[5], string.format('%.6f', now), r[2])
      end
    end
    push(stem .. 'decisions', r[6], max_decisions)
    redis.call('ZADD', KEYS[4], string.format('%.6f', now), r[2])
  elseif r[5] then
    -- Recorded before (its batch delivered again): the notice it asked for may never have
    -- gone out, so it asks again, whatever the note says.
    asked[r[2]] = true
    redis.call('ZADD', KEYS[5], string.format('%.6f', now), r[2])
  end
end
local out = {}
for sid in pairs(quiet) do
  if not asked[sid] then out[#out + 1] = sid end
end
return out
"""

MARK_READY = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'NX', t[1] .. '.' .. string.format('%06d', tonumber(t[2])), ARGV[1])
"""

# The leases index (KEYS[3] below) scores each session with its lease's expiry in server
# milliseconds, so the entries of leases that expired with a dead worker go with one cheap
# ZREMRANGEBYSCORE; the index itself expires with the longest lease written to it.
INDEX_LEASE = """
local function index_lease(index, session_id, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  if session_id then
    redis.call('ZADD', index, now + ttl, session_id)
    if redis.call('PTTL', index) < ttl then redis.call('PEXPIRE', index, ttl) end
  end
  return t
end
"""

# Takes a free lease: issues max(last token + 1, server time in microseconds), notes when it
# was taken (for held_leases), indexes it and ends the session's work notice (whoever takes
# the lease takes its pending signals: RECORD_SIGNALS). KEYS: lease, token, leases index,
# leased_at, the notices out; ARGV: owner, ttl (ms), keep (ms, 0 = no expiry), session id.
# Answers the token as text, or false when the lease is held. ``OPEN_SESSION`` takes its
# lease with the same function.
ACQUIRE_FUNCTION = (
    INDEX_LEASE
    + """
local function acquire(K, A)
  if redis.call('EXISTS', K[1]) == 1 then return false end
  local t = index_lease(K[3], A[4], tonumber(A[2]))
  local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local token = math.max(tonumber(redis.call('GET', K[2]) or '0') + 1, floor)
  local text = string.format('%d', token)
  if tonumber(A[3]) > 0 then
    redis.call('SET', K[2], text, 'PX', A[3])
  else
    redis.call('SET', K[2], text)
  end
  redis.call('SET', K[1], text .. ':' .. A[1], 'PX', A[2])
  redis.call('SET', K[4], t[1] .. '.' .. string.format('%06d', tonumber(t[2])), 'PX', A[2])
  redis.call('ZREM', K[5], A[4])
  return text
end
"""
)

ACQUIRE = ACQUIRE_FUNCTION + "return acquire(KEYS, ARGV)\n"

# Extends a lease only while it is still the caller's (same owner and token).
RENEW = (
    INDEX_LEASE
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
index_lease(KEYS[3], ARGV[4], tonumber(ARGV[2]))
return 1
"""
)

# Drops a lease only while it is still the caller's.
RELEASE = (
    INDEX_LEASE
    + """
index_lease(KEYS[3], false, 0)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"""
)

# Of the candidates (KEYS[2i], KEYS[2i+1] the lease and leased_at keys of ARGV[i]) answers
# those still leased as (session id, "token:owner", seconds held) triples, and drops the
# others (leases that expired with a dead worker) from the index KEYS[1].
HELD_LEASES = (
    INDEX_LEASE
    + """
local t = index_lease(KEYS[1], false, 0)
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i, sid in ipairs(ARGV) do
  local value = redis.call('GET', KEYS[2 * i])
  local since = redis.call('GET', KEYS[2 * i + 1])
  if value and since then
    table.insert(out, sid)
    table.insert(out, value)
    table.insert(out, string.format('%.6f', now - tonumber(since)))
  elseif not value then
    redis.call('ZREM', KEYS[1], sid)
  end
end
return out
"""
)

# Records a write's token; answers the newer token if one was checked or issued since.
CHECK_FENCE = """
local token = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
local newest = math.max(fence, issued)
if token < newest then return string.format('%d', newest) end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return false
"""


__all__ = [
    "ACQUIRE",
    "ACQUIRE_FUNCTION",
    "CARRY_OVER",
    "CHECK_FENCE",
    "CLAIM",
    "CLAIM_MANY",
    "CLAIM_UNLESS_MARKED_EACH",
    "DECISION_CONTEXTS",
    "HELD_LEASES",
    "INDEX_LEASE",
    "MARK_AND_RELEASE_EACH",
    "MARK_READY",
    "NOTE_RUN",
    "PROMOTE_DUE",
    "RECORD_SIGNALS",
    "RELEASE",
    "RENEW",
    "RUN_TIMES",
    "SCHEDULE",
    "SET_RISK",
    "TAKE_PENDING",
]

# A sliding-window rate limit: the key is a sorted set of uses scored by the server's time
# in microseconds (one clock for every replica); uses older than the window go first. A
# use is added only while fewer than the limit remain; otherwise the answer is the
# microseconds until the oldest leaves the window. The key expires one window after the
# last use, so idle limits leave nothing behind. ARGV: limit, window (us), a unique member.
TAKE_RATE_LIMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil(tonumber(oldest[2]) + window - now))
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return false
"""
