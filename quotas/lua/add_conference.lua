-- add_conference: ARGV conference, doc_json, priority, reserve_audio, reserve_video, max_audio, max_video
-- ('' = no ceiling) -> 'ok' | 'ended' | 'reserve_exceeds_capacity'
-- The reserves of all conferences of the outage never sum past its capacity, per kind.
local conf = ARGV[1]
if not is_active() then return 'ended' end
local caps = capacity()
local want = { audio = tonumber(ARGV[4]), video = tonumber(ARGV[5]) }
local others = { audio = 0, video = 0 }
local resv = redis.call('HGETALL', K_RESV)
for i = 1, #resv, 2 do
  local c, k = string.match(resv[i], '^(.*):(%a+)$')
  if c ~= conf and others[k] then others[k] = others[k] + toint(resv[i + 1]) end
end
for _, k in ipairs(KINDS) do
  if others[k] + want[k] > caps[k] then return 'reserve_exceeds_capacity' end
end
redis.call('HSET', K_CONFS, conf, ARGV[2])
redis.call('HSET', K_CPRIO, conf, ARGV[3])
redis.call('HSET', K_RESV, conf .. ':audio', want.audio, conf .. ':video', want.video)
local ceilings = { audio = ARGV[6], video = ARGV[7] }
for _, k in ipairs(KINDS) do
  if ceilings[k] == '' then redis.call('HDEL', K_CMAX, conf .. ':' .. k)
  else redis.call('HSET', K_CMAX, conf .. ':' .. k, ceilings[k]) end
end
audit('conference_created', now_ms(), { 'conference', conf, 'priority', ARGV[3], 'reserve_audio', ARGV[4],
  'reserve_video', ARGV[5], 'max_audio', ARGV[6], 'max_video', ARGV[7] })
return 'ok'
