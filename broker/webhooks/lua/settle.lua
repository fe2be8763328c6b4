-- Record the outcome of one delivery attempt, if this worker still holds the lease.
-- KEYS[1] = due ZSET, KEYS[2] = the delivery hash, KEYS[3] = dead-letter list
-- ARGV: delivery id, worker token, outcome (delivered|retry|dead), next due ms, error text, now_ms,
--       dead-letter cap
-- Returns 1, or 0 when the lease was lost (it ran out and another worker took the delivery).
if redis.call('HGET', KEYS[2], 'lease') ~= ARGV[2] then
  return 0
end
local outcome = ARGV[3]
if outcome == 'delivered' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  return 1
end
local attempts = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
if outcome == 'retry' then
  redis.call('HSET', KEYS[2], 'last_error', ARGV[5], 'lease', '')
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  return 1
end
local d = redis.call('HGETALL', KEYS[2])
local entry = {id = ARGV[1], last_error = ARGV[5], dead_ms = tonumber(ARGV[6])}
for i = 1, #d, 2 do
  if d[i] ~= 'lease' and d[i] ~= 'last_error' then
    entry[d[i]] = d[i + 1]
  end
end
entry['attempts'] = attempts
redis.call('LPUSH', KEYS[3], cjson.encode(entry))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
