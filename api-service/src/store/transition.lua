-- Every change of a task's state, as one atomic step.
--
-- KEYS[1] task hash, KEYS[2] its event log (both share the task's hash tag):
-- a list of JSON arrays of field, value pairs, event seq n at index n - 1
-- (a Redis stream in versions before, still appended to for such tasks).
-- ARGV[1] op: create | claim | progress | finish | retry | due | cancel
-- ARGV[2] pub/sub channel for live events: `<task id> <seq> <event JSON>`
-- ARGV[3] task id (for the published event)
-- ARGV[4..] op arguments, see each branch.
--
-- Returns {code, status, stage, stages, cancel_requested, worker,
--          started_ms, timeout_secs, lease_until_ms, now_ms,
--          attempt, attempt_started_ms, scheduled_ms}
-- where code is ok | ignored | not_found | exists | lease_held |
-- already_finished | not_holder | bad_stages | stages_incomplete |
-- not_due | worker_lost.
-- Times come from the Redis server clock, so every api process agrees on leases.

local task, events = KEYS[1], KEYS[2]
local op, channel, task_id = ARGV[1], ARGV[2], ARGV[3]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local TERMINAL = { COMPLETED = true, FAILED = true, TIMED_OUT = true, CANCELLED = true }

local function snapshot(code)
  local f = redis.call('HMGET', task, 'status', 'stage', 'stages', 'cancel_requested',
    'worker', 'started_ms', 'timeout_secs', 'lease_until_ms', 'attempt',
    'attempt_started_ms', 'scheduled_ms')
  return { code, f[1] or '', f[2] or '0', f[3] or '0', f[4] or '0', f[5] or '',
    f[6] or '', f[7] or '0', f[8] or '0', tostring(now), f[9] or '0', f[10] or f[6] or '',
    f[11] or '' }
end

-- Keeps the failed attempt in `errors` (a JSON list, the last MAX_ERRORS).
local MAX_ERRORS = 10
local function record_error(err)
  local attempt = tonumber(redis.call('HGET', task, 'attempt') or '1')
  if attempt < 1 then attempt = 1 end
  local raw = redis.call('HGET', task, 'errors')
  local list = {}
  if raw and raw ~= '' then list = cjson.decode(raw) end
  table.insert(list, { attempt = attempt, at_ms = now, error = err })
  while #list > MAX_ERRORS do table.remove(list, 1) end
  redis.call('HSET', task, 'errors', cjson.encode(list))
end

-- Appends one event (seq 1, 2, …) and announces it. A list, not a stream:
-- a stream's first node preallocates 4 KB (stream-node-max-bytes), most of
-- what a finished task kept; four events in a list take about 500 bytes.
local function event(kind, detail)
  local seq = redis.call('HINCRBY', task, 'seq', 1)
  local f = redis.call('HMGET', task, 'status', 'stage', 'stages', 'worker', 'progress')
  local fields = { 'type', kind, 'status', f[1], 'stage', f[2], 'stages', f[3], 'at', tostring(now),
    'attempt', redis.call('HGET', task, 'attempt') or '0' }
  if f[5] then
    table.insert(fields, 'progress'); table.insert(fields, f[5])
  end
  if f[4] and f[4] ~= '' then
    table.insert(fields, 'worker'); table.insert(fields, f[4])
  end
  if detail and detail ~= '' then
    table.insert(fields, 'detail'); table.insert(fields, detail)
  end
  local json = cjson.encode(fields)
  if seq > 1 and redis.call('TYPE', events).ok == 'stream' then
    redis.call('XADD', events, '0-' .. seq, unpack(fields))
  else
    redis.call('RPUSH', events, json)
  end
  -- The event itself rides along, so a live stream need not read it back.
  redis.call('PUBLISH', channel, task_id .. ' ' .. seq .. ' ' .. json)
end

local function touch(...)
  redis.call('HSET', task, 'updated_ms', now, ...)
end

local function finished(ttl)
  redis.call('HSET', task, 'finished_ms', now, 'lease_until_ms', 0)
  if redis.call('HEXISTS', task, 'webhook_url') == 1 then
    redis.call('HSET', task, 'webhook_state', 'pending', 'webhook_attempts', 0)
  end
  redis.call('EXPIRE', task, ttl)
  redis.call('EXPIRE', events, ttl)
end

if op == 'create' then
  -- ARGV[4]: QUEUED, or SCHEDULED (then the fields include scheduled_ms);
  -- ARGV[5..]: the task's fields.
  if redis.call('EXISTS', task) == 1 then return snapshot('exists') end
  redis.call('HSET', task, 'status', ARGV[4], 'stage', 0, 'cancel_requested', 0,
    'created_ms', now, 'updated_ms', now, 'lease_until_ms', 0, 'attempt', 0, 'takeovers', 0,
    unpack(ARGV, 5))
  event('status')
  return snapshot('ok')
end

local status = redis.call('HGET', task, 'status')
if not status then
  return { 'not_found', '', '0', '0', '0', '', '', '0', '0', tostring(now), '0', '', '' }
end

if op == 'cancel' then
  local ttl = ARGV[4]
  if TERMINAL[status] then return snapshot('already_finished') end
  if status == 'CANCELLING' then return snapshot('ok') end
  touch('cancel_requested', 1)
  event('cancel_requested')
  if status == 'QUEUED' or status == 'SCHEDULED' then
    touch('status', 'CANCELLED')
    redis.call('HDEL', task, 'scheduled_ms')
    finished(ttl)
  else
    touch('status', 'CANCELLING')
  end
  event('status')
  return snapshot('ok')
end

if op == 'due' then
  -- ARGV[4]: the due time of the index entry; only the entry of the task's
  -- current schedule makes it QUEUED (a stale one is ignored).
  if status ~= 'SCHEDULED' or redis.call('HGET', task, 'scheduled_ms') ~= ARGV[4] then
    return snapshot('ignored')
  end
  touch('status', 'QUEUED')
  redis.call('HDEL', task, 'scheduled_ms')
  event('status')
  return snapshot('ok')
end

local worker = ARGV[4]
if TERMINAL[status] then return snapshot('already_finished') end
if status == 'SCHEDULED' then
  if op == 'claim' then return snapshot('not_due') end
  return snapshot('not_holder')
end
local holder = redis.call('HGET', task, 'worker') or ''
local lease_until = tonumber(redis.call('HGET', task, 'lease_until_ms') or '0')

if op == 'claim' then
  local lease_ms = tonumber(ARGV[5])
  -- ARGV[6]: MAX_TAKEOVERS, ARGV[7]: the TTL should the task end here.
  local max_takeovers, ttl = tonumber(ARGV[6] or '-1'), ARGV[7]
  if status == 'QUEUED' then
    -- A new attempt, its deadline counted from now.
    redis.call('HINCRBY', task, 'attempt', 1)
    touch('status', 'PROCESSING', 'worker', worker, 'lease_until_ms', now + lease_ms,
      'attempt_started_ms', now)
    if redis.call('HEXISTS', task, 'started_ms') == 0 then
      redis.call('HSET', task, 'started_ms', now)
    end
    event('status')
    return snapshot('ok')
  end
  if holder ~= worker and lease_until > now then return snapshot('lease_held') end
  if holder ~= worker then
    local takeovers = tonumber(redis.call('HGET', task, 'takeovers') or '0') + 1
    if max_takeovers >= 0 and takeovers > max_takeovers then
      -- The task keeps killing its workers: it ends here.
      local err = 'worker_lost'
      touch('status', 'FAILED', 'error', err)
      record_error(err)
      finished(ttl)
      event('status', err .. ': ' .. (takeovers - 1) .. ' takeovers, the last holder was ' .. holder)
      return snapshot('worker_lost')
    end
    redis.call('HSET', task, 'takeovers', takeovers)
  end
  touch('worker', worker, 'lease_until_ms', now + lease_ms)
  if holder ~= worker then
    -- The status does not change, but who runs the task does: worth an event.
    event('status', 'taken over from ' .. holder)
  end
  return snapshot('ok')
end

if status == 'QUEUED' or holder ~= worker then return snapshot('not_holder') end
-- (SCHEDULED was answered above: it has no holder.)

if op == 'progress' then
  -- ARGV[8]: the progress percent within the stage (checked by the api to
  -- lie within the stage), or '' for whole stages only.
  local stage, stages, lease_ms = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local within = tonumber(ARGV[8] or '')
  local stored_stages = tonumber(redis.call('HGET', task, 'stages'))
  if stages ~= stored_stages or stage > stored_stages then return snapshot('bad_stages') end
  redis.call('HSET', task, 'lease_until_ms', now + lease_ms)
  local stored_stage = tonumber(redis.call('HGET', task, 'stage'))
  if stage < stored_stage then return snapshot('ignored') end
  if stage == stored_stage then
    if not within or within <= tonumber(redis.call('HGET', task, 'progress') or '0') then
      return snapshot('ignored')
    end
    touch('progress', within)
  else
    touch('stage', stage)
    if within then redis.call('HSET', task, 'progress', within) end
  end
  event('progress')
  return snapshot('ok')
end

if op == 'finish' then
  -- ARGV[9]: the stages done, or '' (then the stored stage counts). A
  -- report's stage beyond the stored one is the last stage's progress,
  -- folded into this report: recorded, as its own progress event, first.
  local final, ttl, result, err = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  local stored_stage = tonumber(redis.call('HGET', task, 'stage'))
  local stored_stages = tonumber(redis.call('HGET', task, 'stages'))
  local reported = tonumber(ARGV[9] or '')
  if reported and reported > stored_stages then return snapshot('bad_stages') end
  local done = stored_stage
  if reported and reported > stored_stage then done = reported end
  -- COMPLETED means every stage ran.
  if final == 'COMPLETED' and done < stored_stages then
    return snapshot('stages_incomplete')
  end
  if done > stored_stage then
    touch('stage', done)
    event('progress')
  end
  touch('status', final)
  if result ~= '' then redis.call('HSET', task, 'result', result) end
  if err ~= '' then
    redis.call('HSET', task, 'error', err)
    if final == 'FAILED' or final == 'TIMED_OUT' then record_error(err) end
  end
  finished(ttl)
  event('status', err)
  return snapshot('ok')
end

if op == 'retry' then
  -- A retryable failure. ARGV[5]: when the next attempt is due (its entry
  -- is already in the due index), ARGV[6]: the attempt the api computed
  -- that for, ARGV[7]: the error, ARGV[8]: the TTL should the task end
  -- here, ARGV[9]: the event's detail for a retry.
  local due, expected, err, ttl, detail = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
  local attempt = tonumber(redis.call('HGET', task, 'attempt') or '1')
  local max_attempts = tonumber(redis.call('HGET', task, 'max_attempts') or '1')
  record_error(err)
  if status == 'PROCESSING' and attempt < max_attempts and tostring(attempt) == expected then
    touch('status', 'SCHEDULED', 'scheduled_ms', due, 'lease_until_ms', 0)
    event('status', detail)
    return snapshot('ok')
  end
  -- The last attempt, or a cancel is pending: the task fails.
  touch('status', 'FAILED', 'error', err)
  finished(ttl)
  event('status', err)
  return snapshot('ok')
end

return redis.error_reply('unknown op ' .. tostring(op))
