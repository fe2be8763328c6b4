-- place_node: KEYS[1] the outage's media-node key; ARGV expected ('' = none), node id, ttl_ms
-- -> the node the outage is placed on. Sets it only while it is still what the caller saw, so
-- concurrent offers of one outage agree on one winner.
local cur = redis.call('GET', KEYS[1])
if (not cur and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return ARGV[2]
end
return cur
