-- close_outage: ARGV reason (restored|planned_end), restore_deadline_ms, by, audit_ttl_ms
-- -> {'inactive'} | {'ok', counted, pid...}: every lease released (participants "ended/<reason>"),
-- state "restored", and everything of the outage deleted but its summary (the outage hash and the
-- conference docs); the audit trail is kept audit_ttl_ms more. counted: 'met'|'missed' when this call
-- counted the restore deadline, else ''.
if not is_active() then return { 'inactive' } end
local now = now_ms()
local reason = ARGV[1]
local out = { 'ok', '' }
for _, pid in ipairs(redis.call('HKEYS', K_LMETA)) do
  table.insert(out, pid)
end
local result = (now <= tonumber(ARGV[2])) and 'met' or 'missed'
if redis.call('HSETNX', K_OUTAGE, 'restore_counted', result) == 1 then out[2] = result end
redis.call('HSET', K_OUTAGE, 'state', 'restored', 'ended_at', istr(now), 'end_reason', reason,
  'peak_participants', #out - 2)
redis.call('DEL', K_CAP, K_USE, K_CUSE, K_CPRIO, K_RESV, K_CMAX, K_LEASES, K_LMETA, K_LORDER,
  K_PARTS, K_PSTATE, K_PKIND, K_PCONF, K_HIST, K_RATE)
audit(reason, now, { 'by', ARGV[3], 'participants', istr(#out - 2) })
redis.call('PEXPIRE', K_AUDIT, ARGV[4])
return out
