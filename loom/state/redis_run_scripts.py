"""The Lua of a leased run's steps on Redis (``RedisRunEndings``): the lease with the first
run's signals (``OPEN_SESSION``), a later take (``TAKE_RUN``), and the functions the run
ending's script (``loom.state.redis_endings.FINISH_RUN``) shares with them to take the next
run's signals or let the lease go in its own step. Key layout: ``loom.state.redis_state``.

A session's keys are built from its stem ``{prefix}:s:{<sid>}:`` (``session_key``) and the
prefix, as ``RECORD_SIGNALS`` does: one script per step instead of a dozen key arguments,
on the one Redis server Loom talks to (a cluster would need them in one slot).
"""

from __future__ import annotations

from loom.state.redis_scripts import ACQUIRE_FUNCTION

# S: the session's key stem; P: the prefix; W and K: sets (Lua tables) of the action values
# that wake a worker and of every known action (``loom.state.working.asks_for_run`` reads
# records the same way: only the action, and an unreadable one asks for a run).
RUN_FUNCTIONS = (
    ACQUIRE_FUNCTION
    + """
local function action_set(csv)
  local set = {}
  for value in string.gmatch(csv, '[^,]+') do set[value] = true end
  return set
end

local function asks_for_run(S, W, K)
  for _, record in ipairs(redis.call('LRANGE', S .. 'pending', 0, -1)) do
    -- Records begin with their action ('{"action":"queue",...'); others are decoded.
    local action = string.match(record, '^{"action":"([%w_]*)"')
    if not action then
      local ok, decoded = pcall(cjson.decode, record)
      if ok and type(decoded) == 'table' then action = decoded.action end
    end
    if type(action) ~= 'string' or W[action] or not K[action] then return true end
  end
  return false
end

local function has_work(S, P, sid, W, K)
  return asks_for_run(S, W, K) and not redis.call('ZSCORE', P .. ':due', sid)
end

local function note_run(S, what, keep)
  local t = redis.call('TIME')
  redis.call('HSET', S .. 'runs', what, t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
  if keep > 0 then redis.call('PEXPIRE', S .. 'runs', keep) end
end

-- Every pending signal goes behind the in-flight ones, the interrupt requests they answer
-- go, the put-off run is forgotten and the run's start noted; answers the in-flight list
-- and the risks (order, then the hash).
local function take(S, P, sid, max_pending, keep)
  local inflight = S .. 'inflight'
  while redis.call('LMOVE', S .. 'pending', inflight, 'LEFT', 'RIGHT') do end
  redis.call('DEL', S .. 'interrupts')
  redis.call('LTRIM', inflight, -max_pending, -1)
  if keep > 0 then redis.call('PEXPIRE', inflight, keep) end
  redis.call('ZREM', P .. ':due', sid)
  redis.call('ZREM', P .. ':due_first', sid)
  note_run(S, 'started', keep)
  return {redis.call('LRANGE', inflight, 0, -1), redis.call('LRANGE', S .. 'risk_order', 0, -1),
          redis.call('HGETALL', S .. 'risks')}
end

-- Lets the caller's lease (held: checked by the caller) go; the ready mark goes too unless
-- work is left.
local function let_go(S, P, sid, work)
  if not work then redis.call('ZREM', P .. ':ready', sid) end
  index_lease(P .. ':leases', false, 0)
  redis.call('DEL', S .. 'lease', S .. 'leased_at')
  redis.call('ZREM', P .. ':leases', sid)
end
"""
)

# ACQUIRE (same KEYS and first four ARGV), then what the worker needs: the outbox, the
# signals left in flight, whether a run is suspended, and the first run's signals. ARGV[5..]:
# stem, prefix, keep (ms), pending bound, waking actions, known actions (comma-separated).
# Answers false (held elsewhere) or {token, outbox, left, what[, take]} with what one of
# 'suspended', 'taken', 'idle' (nothing to run, replies to send) or 'released'.
OPEN_SESSION = (
    RUN_FUNCTIONS
    + """
local text = acquire(KEYS, ARGV)
if not text then return false end
local sid, S, P, keep = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local W, K = action_set(ARGV[9]), action_set(ARGV[10])
local unsent = redis.call('HGETALL', S .. 'outbox')
local left = redis.call('LRANGE', S .. 'inflight', 0, -1)
if redis.call('EXISTS', S .. 'suspended') == 1 then return {text, unsent, left, 'suspended'} end
if #left > 0 or has_work(S, P, sid, W, K) then
  return {text, unsent, left, 'taken', take(S, P, sid, tonumber(ARGV[8]), keep)}
end
if #unsent > 0 then return {text, unsent, left, 'idle'} end
let_go(S, P, sid, false)
return {text, {}, {}, 'released'}
"""
)

# KEYS: fence, token. ARGV: token, keep (ms), session id, stem, prefix, pending bound, waking
# and known actions. Answers the newer token (taking nothing), {'taken', take} or {'none'}.
TAKE_RUN = (
    RUN_FUNCTIONS
    + """
local token = tonumber(ARGV[1])
local newest = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'),
                        tonumber(redis.call('GET', KEYS[2]) or '0'))
if token < newest then return string.format('%d', newest) end
local keep = tonumber(ARGV[2])
if keep > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', keep)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
local sid, S, P = ARGV[3], ARGV[4], ARGV[5]
if not has_work(S, P, sid, action_set(ARGV[7]), action_set(ARGV[8])) then return {'none'} end
return {'taken', take(S, P, sid, tonumber(ARGV[6]), keep)}
"""
)

__all__ = ["OPEN_SESSION", "RUN_FUNCTIONS", "TAKE_RUN"]
