-- set_planned_end: ARGV window_ends_at (RFC 3339, '' clears it), by -> 'ok' | 'inactive'
if not is_active() then return 'inactive' end
redis.call('HSET', K_OUTAGE, 'window_ends_at', ARGV[1])
audit(ARGV[1] == '' and 'planned_end_cleared' or 'planned_end_set', now_ms(), { 'planned_end', ARGV[1], 'by', ARGV[2] })
return 'ok'
