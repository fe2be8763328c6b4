-- renew: ARGV pid, ttl_ms, now_ms, state ('' keeps the state) -> new expiry, or nil when the
-- participant holds no live lease (a lease found expired here is reclaimed at once).
local pid = ARGV[1]
local now = tonumber(ARGV[3])
if redis.call('EXISTS', K_CAP) == 0 then return false end
local score = redis.call('ZSCORE', K_LEASES, pid)
if not score then return false end
if tonumber(score) <= now then
  release_lease(pid, 'expired')
  return false
end
local exp = now + tonumber(ARGV[2])
redis.call('ZADD', K_LEASES, 'XX', istr(exp), pid)
local state = nil
if ARGV[4] ~= '' then state = ARGV[4] end
patch_part(pid, exp, state)
return exp
