-- sla_overdue: ARGV ack_deadline_ms, restore_deadline_ms -> {ack, restore}: 'missed' for each deadline
-- this call found passed and counted (once per outage), else ''. The acknowledgement deadline is
-- missed when it passed unacknowledged, the restore deadline when it passed while still active.
local now = now_ms()
local out = { '', '' }
if redis.call('EXISTS', K_OUTAGE) == 0 then return out end
if now > tonumber(ARGV[1]) and not redis.call('HGET', K_OUTAGE, 'acknowledged_at')
    and redis.call('HSETNX', K_OUTAGE, 'ack_counted', 'missed') == 1 then
  out[1] = 'missed'
  audit('deadline_missed', now, { 'deadline', 'ack' })
end
if now > tonumber(ARGV[2]) and is_active()
    and redis.call('HSETNX', K_OUTAGE, 'restore_counted', 'missed') == 1 then
  out[2] = 'missed'
  audit('deadline_missed', now, { 'deadline', 'restore' })
end
return out
