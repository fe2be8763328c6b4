-- Take a due delivery for one worker: none other takes it until the lease ends.
-- KEYS[1] = due ZSET, KEYS[2] = the delivery hash
-- ARGV: delivery id, now_ms, lease_until_ms, worker token
-- Returns the delivery's fields (flat HGETALL list), or nil when it is not due or no longer exists.
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then
  return nil
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return nil
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], 'lease', ARGV[4])
return redis.call('HGETALL', KEYS[2])
