-- reclaim: ARGV now_ms, limit -> the participants whose expired leases were reclaimed.
if redis.call('EXISTS', K_CAP) == 0 then return {} end
return reclaim_expired(tonumber(ARGV[1]), tonumber(ARGV[2]))
