-- ticket_outcome: KEYS as ticket_open.lua; ARGV number, outcome_json -> 1 (set), 0 (no such ticket).
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
