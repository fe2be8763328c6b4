-- open_outage: ARGV doc_json, audio, video -> 1 created, 0 the outage already exists (any state).
if redis.call('EXISTS', K_OUTAGE) == 1 then return 0 end
redis.call('HSET', K_OUTAGE, 'doc', ARGV[1], 'state', 'active')
redis.call('HSET', K_CAP, 'audio', ARGV[2], 'video', ARGV[3])
redis.call('HSET', K_USE, 'audio', 0, 'video', 0)
return 1
