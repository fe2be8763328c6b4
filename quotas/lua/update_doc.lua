-- update_doc: ARGV expected_doc, new_doc -> 'ok' | 'retry' (doc changed since read) | 'inactive'
-- A compare-and-set: the merge is done in Python so the JSON is never re-encoded by cjson.
if redis.call('HGET', K_OUTAGE, 'state') ~= 'active' then return 'inactive' end
if (redis.call('HGET', K_OUTAGE, 'doc') or '') ~= ARGV[1] then return 'retry' end
redis.call('HSET', K_OUTAGE, 'doc', ARGV[2])
return 'ok'
