-- release: ARGV pid, final_state ("left", "left/media_failed" ...) -> 1 when this call freed the port,
-- 0 otherwise (idempotent).
local now = now_ms()
local ok, conf, kind = release_lease(ARGV[1], ARGV[2], now)
if not ok then return 0 end
audit('left', now, { 'participant', ARGV[1], 'conference', conf, 'kind', kind, 'state', ARGV[2] })
return 1
