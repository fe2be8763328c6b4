-- renew: the media node keeps a connected participant's port. ARGV pid, ttl_ms, state ('' keeps it),
-- conference, kind, readmit (1|0)
-- -> {status, expiry_ms, reason}: 'renewed' | 'readmitted' | 'gone' (reason: the final state, or
-- 'lease_expired', 'no_conference', 'no_capacity', 'ended').
-- A lease the ledger no longer knows while no decision ended the participant (its keys were lost,
-- a failover dropped writes) is admitted again when a port is free (readmit = 1; never by preemption).
local pid, ttl, state, conf, kind = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
if not is_active() then return { 'gone', 0, 'ended' } end
local now = now_ms()
check_leases(now)
local score = redis.call('ZSCORE', K_LEASES, pid)
if score and tonumber(score) > now then
  local exp = now + ttl
  redis.call('ZADD', K_LEASES, 'XX', istr(exp), pid)
  local previous = redis.call('HGET', K_PSTATE, pid)
  if state ~= '' and previous ~= state and not is_final(previous) then
    redis.call('HSET', K_PSTATE, pid, state)
    audit(state, now, { 'participant', pid })
  end
  return { 'renewed', exp, '' }
end
if score then
  local ok, c, k = release_lease(pid, 'left/lease_expired', now)
  if ok then audit('lease_expired', now, { 'participant', pid, 'conference', c, 'kind', k }) end
  return { 'gone', 0, 'lease_expired' }
end
local previous = redis.call('HGET', K_PSTATE, pid)
if is_final(previous) then return { 'gone', 0, previous } end
if ARGV[6] ~= '1' then return { 'gone', 0, 'unknown' } end
if redis.call('HEXISTS', K_CONFS, conf) == 0 then return { 'gone', 0, 'no_conference' } end
local caps = capacity()
local use, cuse = derive_use()
if not (under_ceiling(conf, kind, cuse) and port_free(conf, kind, use, cuse, caps)) then
  redis.call('HSET', K_PSTATE, pid, 'ended/no_capacity')
  redis.call('ZADD', K_HIST, istr(now), pid)
  trim_history()
  audit('readmission_refused', now, { 'participant', pid, 'conference', conf, 'kind', kind })
  return { 'gone', 0, 'no_capacity' }
end
local exp = now + ttl
grant_lease(pid, conf, kind, exp, nil)
if state ~= '' then redis.call('HSET', K_PSTATE, pid, state) end
audit('readmitted', now, { 'participant', pid, 'conference', conf, 'kind', kind })
return { 'readmitted', exp, '' }
