-- update_conference: ARGV conference, doc_json ('' keeps it), priority ('' keeps), reserve_audio,
-- reserve_video ('' keeps), max_audio, max_video ('' keeps, 'none' removes the ceiling)
-- -> {status, priority, reserve_audio, reserve_video, max_audio, max_video} with status
-- 'ok' | 'ended' | 'no_conference' | 'reserve_exceeds_capacity' | 'max_below_reserve'.
-- Atomic with the ledger; it never evicts anyone: a lower ceiling or a higher reserve only shapes
-- later admissions.
local conf = ARGV[1]
if not is_active() then return { 'ended' } end
if redis.call('HEXISTS', K_CONFS, conf) == 0 then return { 'no_conference' } end
local caps = capacity()
local function pick(new, old) if new == '' then return old end return new end
local prio = pick(ARGV[3], istr(priority(conf)))
local resv = { audio = tonumber(pick(ARGV[4], istr(reserve_of(conf, 'audio')))),
               video = tonumber(pick(ARGV[5], istr(reserve_of(conf, 'video')))) }
local ceil = { audio = pick(ARGV[6], redis.call('HGET', K_CMAX, conf .. ':audio') or 'none'),
               video = pick(ARGV[7], redis.call('HGET', K_CMAX, conf .. ':video') or 'none') }
local others = { audio = 0, video = 0 }
local all = redis.call('HGETALL', K_RESV)
for i = 1, #all, 2 do
  local c, k = string.match(all[i], '^(.*):(%a+)$')
  if c ~= conf and others[k] then others[k] = others[k] + toint(all[i + 1]) end
end
for _, k in ipairs(KINDS) do
  if others[k] + resv[k] > caps[k] then return { 'reserve_exceeds_capacity' } end
  if ceil[k] ~= 'none' and tonumber(ceil[k]) < resv[k] then return { 'max_below_reserve', k } end
end
if ARGV[2] ~= '' then redis.call('HSET', K_CONFS, conf, ARGV[2]) end
redis.call('HSET', K_CPRIO, conf, prio)
redis.call('HSET', K_RESV, conf .. ':audio', resv.audio, conf .. ':video', resv.video)
for _, k in ipairs(KINDS) do
  if ceil[k] == 'none' then redis.call('HDEL', K_CMAX, conf .. ':' .. k)
  else redis.call('HSET', K_CMAX, conf .. ':' .. k, ceil[k]) end
end
audit('conference_changed', now_ms(), { 'conference', conf, 'priority', prio, 'reserve_audio', istr(resv.audio),
  'reserve_video', istr(resv.video), 'max_audio', ceil.audio, 'max_video', ceil.video })
return { 'ok', prio, resv.audio, resv.video, ceil.audio, ceil.video }
