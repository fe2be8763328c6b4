-- leave: DELETE /v1/participants/{id} in one round trip.
-- ARGV pid, final_state, events channel, event json -> {status, conference}:
-- 'not_found' | 'released' | 'already' (it had ended before). The event is published only by the
-- call that freed the port, so media nodes hear it once ('' channel on a Redis Cluster: the caller
-- publishes it on the sharded channel).
local pid = ARGV[1]
local conf = redis.call('HGET', K_PCONF, pid)
if not conf and not redis.call('HGET', K_LMETA, pid) then return { 'not_found', '' } end
local now = now_ms()
local ok, c, kind = release_lease(pid, ARGV[2], now)
if ok then
  audit('left', now, { 'participant', pid, 'conference', c, 'kind', kind, 'state', ARGV[2] })
  if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
  return { 'released', c }
end
return { 'already', conf or '' }
