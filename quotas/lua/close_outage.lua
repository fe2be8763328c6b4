-- close_outage: ARGV state (restored|expired), expected_doc, new_doc
-- -> {'inactive'} | {'retry'} (doc changed since it was read) | {'ok', pid...}
-- Releases every lease (participants -> "left") and deletes cap/use/cuse/resv/leases/lmeta.
if redis.call('HGET', K_OUTAGE, 'state') ~= 'active' then return { 'inactive' } end
if (redis.call('HGET', K_OUTAGE, 'doc') or '') ~= ARGV[2] then return { 'retry' } end
local out = { 'ok' }
local pids = redis.call('HKEYS', K_LMETA)
for _, pid in ipairs(pids) do
  patch_part(pid, nil, 'left')
  table.insert(out, pid)
end
redis.call('DEL', K_CAP, K_USE, K_CUSE, K_RESV, K_LEASES, K_LMETA)
redis.call('HSET', K_OUTAGE, 'state', ARGV[1], 'doc', ARGV[3])
return out
