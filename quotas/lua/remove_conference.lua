-- remove_conference: ARGV conference, by -> the participants whose leases were released ("ended/conference_closed").
-- Deletes the conference doc, its priority, reserves, ceilings, rate bucket and per-conference use.
local conf = ARGV[1]
local now = now_ms()
local released = {}
local metas = redis.call('HGETALL', K_LMETA)
for i = 1, #metas, 2 do
  local c = parse_meta(metas[i + 1])
  if c == conf and release_lease(metas[i], 'ended/conference_closed', now) then
    table.insert(released, metas[i])
  end
end
if redis.call('HDEL', K_CONFS, conf) == 1 then
  audit('conference_closed', now, { 'conference', conf, 'by', ARGV[2], 'participants', istr(#released) })
end
redis.call('HDEL', K_CPRIO, conf)
redis.call('HDEL', K_RATE, conf)
redis.call('HDEL', K_RESV, conf .. ':audio', conf .. ':video')
redis.call('HDEL', K_CMAX, conf .. ':audio', conf .. ':video')
redis.call('HDEL', K_CUSE, conf .. ':audio', conf .. ':video')
return released
