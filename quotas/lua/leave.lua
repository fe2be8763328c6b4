-- leave: DELETE /v1/participants/{id} in one round trip.
-- ARGV pid, expected conference ('' = any, for operators), final_state, events channel, event json
-- -> {status, conference}: 'not_found' | 'forbidden' | 'released' | 'already' (left before)
-- The event is published only by the call that freed the port, so media nodes hear it once.
local pid, want, state, channel, event = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local doc = redis.call('HGET', K_PARTS, pid)
if not doc then return { 'not_found', '' } end
local conf
local meta = redis.call('HGET', K_LMETA, pid)
if meta then
  conf = parse_meta(meta)
else
  conf = string.match(doc, '"conference":"([^"\\]*)"') or ''
end
if want ~= '' and conf ~= want then return { 'forbidden', conf } end
if release_lease(pid, state) then
  redis.call('PUBLISH', channel, event)
  return { 'released', conf }
end
return { 'already', conf }
