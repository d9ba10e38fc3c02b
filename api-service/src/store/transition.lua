-- Every change of a task's state, as one atomic step.
--
-- KEYS[1] task hash, KEYS[2] its event stream (both share the task's hash tag).
-- ARGV[1] op: create | claim | progress | finish | cancel
-- ARGV[2] pub/sub channel for live events
-- ARGV[3] task id (for the published event)
-- ARGV[4..] op arguments, see each branch.
--
-- Returns {code, status, stage, stages, cancel_requested, worker,
--          started_ms, timeout_secs, lease_until_ms, now_ms}
-- where code is ok | ignored | not_found | exists | lease_held |
-- already_finished | not_holder | bad_stages | stages_incomplete.
-- Times come from the Redis server clock, so every api process agrees on leases.

local task, events = KEYS[1], KEYS[2]
local op, channel, task_id = ARGV[1], ARGV[2], ARGV[3]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local TERMINAL = { COMPLETED = true, FAILED = true, TIMED_OUT = true, CANCELLED = true }

local function snapshot(code)
  local f = redis.call('HMGET', task, 'status', 'stage', 'stages', 'cancel_requested',
    'worker', 'started_ms', 'timeout_secs', 'lease_until_ms')
  return { code, f[1] or '', f[2] or '0', f[3] or '0', f[4] or '0', f[5] or '',
    f[6] or '', f[7] or '0', f[8] or '0', tostring(now) }
end

-- Appends one event (seq 1, 2, … as stream ids 0-1, 0-2, …) and announces it.
local function event(kind, detail)
  local seq = redis.call('HINCRBY', task, 'seq', 1)
  local f = redis.call('HMGET', task, 'status', 'stage', 'stages', 'worker', 'progress')
  local fields = { 'type', kind, 'status', f[1], 'stage', f[2], 'stages', f[3], 'at', tostring(now) }
  if f[5] then
    table.insert(fields, 'progress'); table.insert(fields, f[5])
  end
  if f[4] and f[4] ~= '' then
    table.insert(fields, 'worker'); table.insert(fields, f[4])
  end
  if detail and detail ~= '' then
    table.insert(fields, 'detail'); table.insert(fields, detail)
  end
  redis.call('XADD', events, '0-' .. seq, unpack(fields))
  redis.call('PUBLISH', channel, task_id .. ' ' .. seq)
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
  if redis.call('EXISTS', task) == 1 then return snapshot('exists') end
  redis.call('HSET', task, 'status', 'QUEUED', 'stage', 0, 'cancel_requested', 0,
    'created_ms', now, 'updated_ms', now, 'lease_until_ms', 0, unpack(ARGV, 4))
  event('status')
  return snapshot('ok')
end

local status = redis.call('HGET', task, 'status')
if not status then return { 'not_found', '', '0', '0', '0', '', '', '0', '0', tostring(now) } end

if op == 'cancel' then
  local ttl = ARGV[4]
  if TERMINAL[status] then return snapshot('already_finished') end
  if status == 'CANCELLING' then return snapshot('ok') end
  touch('cancel_requested', 1)
  event('cancel_requested')
  if status == 'QUEUED' then
    touch('status', 'CANCELLED')
    finished(ttl)
  else
    touch('status', 'CANCELLING')
  end
  event('status')
  return snapshot('ok')
end

local worker = ARGV[4]
if TERMINAL[status] then return snapshot('already_finished') end
local holder = redis.call('HGET', task, 'worker') or ''
local lease_until = tonumber(redis.call('HGET', task, 'lease_until_ms') or '0')

if op == 'claim' then
  local lease_ms = tonumber(ARGV[5])
  if status == 'QUEUED' then
    touch('status', 'PROCESSING', 'worker', worker, 'lease_until_ms', now + lease_ms)
    if redis.call('HEXISTS', task, 'started_ms') == 0 then
      redis.call('HSET', task, 'started_ms', now)
    end
    event('status')
    return snapshot('ok')
  end
  if holder ~= worker and lease_until > now then return snapshot('lease_held') end
  touch('worker', worker, 'lease_until_ms', now + lease_ms)
  if holder ~= worker then
    -- The status does not change, but who runs the task does: worth an event.
    event('status', 'taken over from ' .. holder)
  end
  return snapshot('ok')
end

if status == 'QUEUED' or holder ~= worker then return snapshot('not_holder') end

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
  local final, ttl, result, err = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  -- COMPLETED means every stage ran, and each reported its progress first.
  if final == 'COMPLETED' and
      tonumber(redis.call('HGET', task, 'stage')) < tonumber(redis.call('HGET', task, 'stages')) then
    return snapshot('stages_incomplete')
  end
  touch('status', final)
  if result ~= '' then redis.call('HSET', task, 'result', result) end
  if err ~= '' then redis.call('HSET', task, 'error', err) end
  finished(ttl)
  event('status', err)
  return snapshot('ok')
end

return redis.error_reply('unknown op ' .. tostring(op))
