-- add_conference: ARGV conference, doc_json, reserve_audio, reserve_video
-- -> 'ok' | 'ended' | 'reserve_exceeds_capacity'
-- The reserves of all conferences of the outage never sum past its capacity, per kind.
-- Adding an existing conference replaces its doc and reserves.
local conf = ARGV[1]
if redis.call('EXISTS', K_CAP) == 0 then return 'ended' end
local want = { audio = tonumber(ARGV[3]), video = tonumber(ARGV[4]) }
local others = { audio = 0, video = 0 }
local resv = redis.call('HGETALL', K_RESV)
for i = 1, #resv, 2 do
  local c, k = string.match(resv[i], '^(.*):(%a+)$')
  if c ~= conf and others[k] then others[k] = others[k] + toint(resv[i + 1]) end
end
for _, k in ipairs({ 'audio', 'video' }) do
  if others[k] + want[k] > toint(redis.call('HGET', K_CAP, k)) then
    return 'reserve_exceeds_capacity'
  end
end
redis.call('HSET', K_CONFS, conf, ARGV[2])
redis.call('HSET', K_RESV, conf .. ':audio', want.audio, conf .. ':video', want.video)
return 'ok'
