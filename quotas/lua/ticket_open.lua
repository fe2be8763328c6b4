-- ticket_open: KEYS seq, requests, outcomes, all, contract index (quotas.keys.ticket_keys)
-- ARGV prefix ("BP-2026-"), request_json, received_at_ms -> the ticket number.
-- Numbers and records a request in one step: every number has its record, none is skipped.
local seq = redis.call('INCR', KEYS[1])
local number = ARGV[1] .. string.format('%06d', seq)
redis.call('HSET', KEYS[2], number, ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], number)
redis.call('ZADD', KEYS[5], ARGV[3], number)
return number
