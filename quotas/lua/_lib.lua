-- Shared helpers of the port ledger. quotas/scripts.py prepends this file to every operation
-- script (it is not an operation itself). Every script gets ALL ledger keys, in this order:
--   cap, use, cuse, resv, leases, lmeta, confs, parts, outage   (quotas.keys.ledger_keys)
-- all under one hash tag, so the scripts run unchanged on Redis Cluster.
-- Times come in ARGV (ms since the epoch); scripts never call TIME.
local K_CAP, K_USE, K_CUSE, K_RESV, K_LEASES, K_LMETA, K_CONFS, K_PARTS, K_OUTAGE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]

-- integer -> decimal string (tostring would switch to exponent notation for large numbers)
local function istr(n)
  return string.format('%d', n)
end

-- a Redis reply (string or false) -> number, 0 when missing
local function toint(v)
  if not v then return 0 end
  return tonumber(v) or 0
end

-- "<conference>|<kind>" -> conference, kind
local function parse_meta(meta)
  return string.match(meta, '^(.*)|(%a+)$')
end

-- Participant docs are written by admit.lua and always end with
--   ,"lease_expires_at_ms":<int>,"state":"<state>"}
-- so expiry and state are patched as text: the rest of the doc is never re-encoded (cjson in
-- Redis 7.0 turns [] into {} and rounds large numbers). Fallback: cjson round trip.
local function patch_part(pid, expiry, state)
  local doc = redis.call('HGET', K_PARTS, pid)
  if not doc then return end
  local head, exp, st = string.match(doc, '^(.*),"lease_expires_at_ms":(%-?%d+),"state":"([^"\\]*)"}$')
  if head then
    if expiry then exp = istr(expiry) end
    if state then st = state end
    redis.call('HSET', K_PARTS, pid,
      head .. ',"lease_expires_at_ms":' .. exp .. ',"state":"' .. st .. '"}')
    return
  end
  local ok, t = pcall(cjson.decode, doc)
  if ok and type(t) == 'table' then
    if expiry then t['lease_expires_at_ms'] = expiry end
    if state then t['state'] = state end
    redis.call('HSET', K_PARTS, pid, cjson.encode(t))
  end
end

-- Frees the port a live lease holds. false when the participant holds no lease.
local function release_lease(pid, state)
  local meta = redis.call('HGET', K_LMETA, pid)
  if not meta then return false end
  local conf, kind = parse_meta(meta)
  redis.call('HINCRBY', K_USE, kind, -1)
  local field = conf .. ':' .. kind
  if redis.call('HINCRBY', K_CUSE, field, -1) <= 0 then
    redis.call('HDEL', K_CUSE, field)
  end
  redis.call('ZREM', K_LEASES, pid)
  redis.call('HDEL', K_LMETA, pid)
  patch_part(pid, nil, state)
  return true
end

-- Reclaims up to `limit` leases whose expiry is <= now (a lease is live while expiry > now).
local function reclaim_expired(now, limit)
  local pids = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', istr(now), 'LIMIT', 0, limit)
  for _, pid in ipairs(pids) do
    if not release_lease(pid, 'expired') then
      redis.call('ZREM', K_LEASES, pid) -- orphan (cannot happen through these scripts)
    end
  end
  return pids
end
