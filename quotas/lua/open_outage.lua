-- open_outage: ARGV doc_json, audio, video, contract, serial, ticket -> 1 created, 0 it exists already.
if redis.call('EXISTS', K_OUTAGE) == 1 then return 0 end
local now = now_ms()
redis.call('HSET', K_OUTAGE, 'doc', ARGV[1], 'state', 'active', 'cap_audio', ARGV[2], 'cap_video', ARGV[3],
  'window_ends_at', '', 'seq', 0, 'admitted', 0, 'preempted', 0, 'refused', 0)
redis.call('HSET', K_CAP, 'audio', ARGV[2], 'video', ARGV[3])
redis.call('HSET', K_USE, 'audio', 0, 'video', 0)
audit('declared', now, { 'contract', ARGV[4], 'serial', ARGV[5], 'ticket', ARGV[6] })
return 1
