-- remove_conference: ARGV conference -> the participants whose leases were released ("left").
-- Deletes the conference doc, its reserves and its per-conference use.
local conf = ARGV[1]
local released = {}
local metas = redis.call('HGETALL', K_LMETA)
for i = 1, #metas, 2 do
  local c = parse_meta(metas[i + 1])
  if c == conf and release_lease(metas[i], 'left') then
    table.insert(released, metas[i])
  end
end
redis.call('HDEL', K_CONFS, conf)
redis.call('HDEL', K_RESV, conf .. ':audio', conf .. ':video')
redis.call('HDEL', K_CUSE, conf .. ':audio', conf .. ':video')
return released
