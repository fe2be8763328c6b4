-- reclaim: ARGV limit -> the participants whose expired leases were reclaimed ("left/lease_expired").
if not is_active() then return {} end
return reclaim_expired(now_ms(), tonumber(ARGV[1]))
