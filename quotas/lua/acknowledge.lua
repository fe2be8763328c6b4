-- acknowledge: ARGV by, ack_deadline_ms -> {status, acknowledged_at_ms, counted}
-- status 'acknowledged' (this call) | 'already' (the first acknowledgement stands) | 'not_found'.
-- counted: 'met' | 'missed' when this call counted the acknowledgement deadline, else ''.
if redis.call('EXISTS', K_OUTAGE) == 0 then return { 'not_found', 0, '' } end
local now = now_ms()
local first = redis.call('HGET', K_OUTAGE, 'acknowledged_at')
if first then return { 'already', tonumber(first), '' } end
redis.call('HSET', K_OUTAGE, 'acknowledged_at', istr(now), 'acknowledged_by', ARGV[1])
local result = (now <= tonumber(ARGV[2])) and 'met' or 'missed'
local counted = ''
if redis.call('HSETNX', K_OUTAGE, 'ack_counted', result) == 1 then counted = result end
audit('acknowledged', now, { 'by', ARGV[1], 'result', result })
return { 'acknowledged', now, counted }
