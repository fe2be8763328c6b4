-- Queue one event for every endpoint, unless its throttle key is live.
-- KEYS[1] = due ZSET, KEYS[2] = throttle key, KEYS[3..] = one delivery hash per endpoint
-- ARGV: throttle_ms (0 = no throttle), now_ms, msg_id, event type, payload, then one URL per endpoint
-- Returns 1 when queued, 0 when throttled.
local throttle_ms = tonumber(ARGV[1])
local now_ms = tonumber(ARGV[2])
if throttle_ms > 0 then
  if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', throttle_ms) then
    return 0
  end
end
for i = 3, #KEYS do
  local delivery_id = ARGV[3] .. '.' .. (i - 2)
  redis.call('HSET', KEYS[i], 'msg_id', ARGV[3], 'type', ARGV[4], 'payload', ARGV[5], 'url', ARGV[3 + i],
    'created_ms', now_ms, 'attempts', 0, 'last_error', '', 'lease', '')
  redis.call('ZADD', KEYS[1], now_ms, delivery_id)
end
return 1
