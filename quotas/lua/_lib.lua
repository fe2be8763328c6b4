-- Shared helpers of the port ledger. quotas/scripts.py prepends this file to every ledger script
-- (it is not an operation itself). Every ledger script gets ALL ledger keys, in this order
-- (quotas.keys.ledger_keys), all under one hash tag, so the scripts run unchanged on Redis Cluster:
local K_OUTAGE, K_CAP, K_USE, K_CUSE, K_CONFS, K_CPRIO, K_RESV, K_CMAX =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_LEASES, K_LMETA, K_LORDER, K_PARTS, K_PSTATE, K_PKIND, K_PCONF, K_HIST, K_RATE, K_AUDIT =
  KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16], KEYS[17], KEYS[18]
-- A live lease is a member of K_LEASES (score = expiry, ms) with its "<conference>|<kind>" in K_LMETA
-- and its admission sequence in K_LORDER. Ports in use are derived from K_LMETA by the script that
-- decides; K_USE and K_CUSE are caches it rewrites. Times come from Redis TIME: one clock for all.

local KINDS = { 'audio', 'video' }
local HISTORY_MAX = 200       -- ended participants kept per outage (the console's recent history)
local AUDIT_MAXLEN = 20000    -- audit events kept per outage (XADD MAXLEN ~)
local DEFAULT_PRIORITY = 5
local REPAIR_LEASE_MS = 15000 -- a live holder found without a lease gets this long to be renewed

-- integer -> decimal string (tostring would switch to exponent notation for large numbers)
local function istr(n)
  return string.format('%d', n)
end

-- a Redis reply (string or false) -> number, 0 when missing
local function toint(v)
  if not v then return 0 end
  return tonumber(v) or 0
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "<conference>|<kind>" -> conference, kind
local function parse_meta(meta)
  return string.match(meta, '^(.*)|(%a+)$')
end

local function is_active()
  return redis.call('HGET', K_OUTAGE, 'state') == 'active'
end

-- Appends one decision to the audit trail; fields is a flat list of name, value.
local function audit(kind, now, fields)
  local args = { 'XADD', K_AUDIT, 'MAXLEN', '~', AUDIT_MAXLEN, '*', 'type', kind, 'at', istr(now) }
  for i = 1, #fields do args[#args + 1] = fields[i] end
  redis.call(unpack(args))
end

local function priority(conf)
  local p = redis.call('HGET', K_CPRIO, conf)
  if not p then return DEFAULT_PRIORITY end
  return tonumber(p) or DEFAULT_PRIORITY
end

-- Ports in use, derived from the live leases: use[kind], cuse["<conf>:<kind>"]. Rewrites the caches
-- where they disagree and returns how many cache entries it had to correct.
local function derive_use()
  local use = { audio = 0, video = 0 }
  local cuse = {}
  local metas = redis.call('HGETALL', K_LMETA)
  for i = 1, #metas, 2 do
    local conf, kind = parse_meta(metas[i + 1])
    if conf and use[kind] then
      use[kind] = use[kind] + 1
      local f = conf .. ':' .. kind
      cuse[f] = (cuse[f] or 0) + 1
    end
  end
  local fixed = 0
  for _, k in ipairs(KINDS) do
    local cached = redis.call('HGET', K_USE, k)
    if not cached or tonumber(cached) ~= use[k] then
      redis.call('HSET', K_USE, k, use[k])
      fixed = fixed + 1
    end
  end
  local seen = {}
  local cached = redis.call('HGETALL', K_CUSE)
  for i = 1, #cached, 2 do
    local f = cached[i]
    seen[f] = true
    if (cuse[f] or 0) ~= toint(cached[i + 1]) then
      if cuse[f] then redis.call('HSET', K_CUSE, f, cuse[f]) else redis.call('HDEL', K_CUSE, f) end
      fixed = fixed + 1
    end
  end
  for f, n in pairs(cuse) do
    if not seen[f] then
      redis.call('HSET', K_CUSE, f, n)
      fixed = fixed + 1
    end
  end
  return use, cuse, fixed
end

-- Makes the three lease structures agree again after a key was lost (eviction, a partial restore,
-- an operator's mistake). A holder without an expiry gets a short one (its media node renews it);
-- a lease without its holder is rebuilt from the participant's kind and conference, or dropped when
-- those are gone too; a live holder without its record gets one back. Returns how many it repaired.
local function repair_leases(now)
  local repaired = 0
  local metas = redis.call('HGETALL', K_LMETA)
  local live = {}
  for i = 1, #metas, 2 do
    local pid = metas[i]
    live[pid] = true
    if not redis.call('ZSCORE', K_LEASES, pid) then
      redis.call('ZADD', K_LEASES, istr(now + REPAIR_LEASE_MS), pid)
      repaired = repaired + 1
    end
    if not redis.call('ZSCORE', K_LORDER, pid) then
      redis.call('ZADD', K_LORDER, 0, pid)
      repaired = repaired + 1
    end
  end
  for _, pid in ipairs(redis.call('ZRANGE', K_LEASES, 0, -1)) do
    if not live[pid] then
      local conf, kind = redis.call('HGET', K_PCONF, pid), redis.call('HGET', K_PKIND, pid)
      if conf and kind and redis.call('HEXISTS', K_CONFS, conf) == 1 then
        redis.call('HSET', K_LMETA, pid, conf .. '|' .. kind)
        live[pid] = true
        if not redis.call('ZSCORE', K_LORDER, pid) then redis.call('ZADD', K_LORDER, 0, pid) end
      else
        redis.call('ZREM', K_LEASES, pid)
      end
      repaired = repaired + 1
    end
  end
  for _, pid in ipairs(redis.call('ZRANGE', K_LORDER, 0, -1)) do
    if not live[pid] then
      redis.call('ZREM', K_LORDER, pid)
      repaired = repaired + 1
    end
  end
  for pid in pairs(live) do
    if not redis.call('HGET', K_PSTATE, pid) then
      local conf, kind = parse_meta(redis.call('HGET', K_LMETA, pid))
      redis.call('HSET', K_PSTATE, pid, 'admitted')
      redis.call('HSET', K_PKIND, pid, kind)
      redis.call('HSET', K_PCONF, pid, conf)
      repaired = repaired + 1
    end
  end
  return repaired
end

-- The cheap check every deciding script makes first: the lease structures have the same size.
local function check_leases(now)
  local n = redis.call('HLEN', K_LMETA)
  if redis.call('ZCARD', K_LEASES) ~= n or redis.call('ZCARD', K_LORDER) ~= n then
    return repair_leases(now)
  end
  return 0
end

-- Keeps the newest HISTORY_MAX ended participants; older records are deleted.
local function trim_history()
  local extra = redis.call('ZCARD', K_HIST) - HISTORY_MAX
  if extra <= 0 then return end
  for _, pid in ipairs(redis.call('ZRANGE', K_HIST, 0, extra - 1)) do
    redis.call('HDEL', K_PARTS, pid)
    redis.call('HDEL', K_PSTATE, pid)
    redis.call('HDEL', K_PKIND, pid)
    redis.call('HDEL', K_PCONF, pid)
  end
  redis.call('ZREMRANGEBYRANK', K_HIST, 0, extra - 1)
end

-- Frees the port a live lease holds and records the participant's final state ("left",
-- "left/lease_expired", "preempted", "ended/restored" ...). false when it holds no lease.
local function release_lease(pid, state, now)
  local meta = redis.call('HGET', K_LMETA, pid)
  if not meta then return false end
  local conf, kind = parse_meta(meta)
  redis.call('HDEL', K_LMETA, pid)
  redis.call('ZREM', K_LEASES, pid)
  redis.call('ZREM', K_LORDER, pid)
  if toint(redis.call('HINCRBY', K_USE, kind, -1)) < 0 then redis.call('HSET', K_USE, kind, 0) end
  local field = conf .. ':' .. kind
  if redis.call('HINCRBY', K_CUSE, field, -1) <= 0 then redis.call('HDEL', K_CUSE, field) end
  redis.call('HSET', K_PSTATE, pid, state)
  redis.call('ZADD', K_HIST, istr(now), pid)
  trim_history()
  return true, conf, kind
end

-- Reclaims up to `limit` leases whose expiry is <= now (a lease is live while expiry > now).
local function reclaim_expired(now, limit)
  local pids = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', istr(now), 'LIMIT', 0, limit)
  for _, pid in ipairs(pids) do
    local ok, conf, kind = release_lease(pid, 'left/lease_expired', now)
    if ok then
      audit('lease_expired', now, { 'participant', pid, 'conference', conf, 'kind', kind })
    else
      redis.call('ZREM', K_LEASES, pid) -- a lease without its holder: repair_leases rebuilds or drops it
    end
  end
  return pids
end

-- The outage's capacity per kind; the cap hash is restored from the outage hash if it was lost.
local function capacity()
  local cap = redis.call('HMGET', K_CAP, 'audio', 'video')
  if not cap[1] or not cap[2] then
    local saved = redis.call('HMGET', K_OUTAGE, 'cap_audio', 'cap_video')
    redis.call('HSET', K_CAP, 'audio', toint(saved[1]), 'video', toint(saved[2]))
    return { audio = toint(saved[1]), video = toint(saved[2]) }, 1
  end
  return { audio = toint(cap[1]), video = toint(cap[2]) }, 0
end

local function reserve_of(conf, k)
  return toint(redis.call('HGET', K_RESV, conf .. ':' .. k))
end

-- Whether conference `conf` may hold one more port of kind k under its ceiling (cuse from derive_use).
local function under_ceiling(conf, k, cuse)
  local ceiling = redis.call('HGET', K_CMAX, conf .. ':' .. k)
  return not ceiling or (cuse[conf .. ':' .. k] or 0) < tonumber(ceiling)
end

-- Whether a free port of kind k may go to conference `conf`: one is free and the other conferences'
-- unmet reserves still fit (with unmet(c) = max(0, reserve(c,k) - use(c,k))):
--   use(k) < cap(k) and (unmet(conf) > 0 or use(k) + 1 + sum_{c ~= conf} unmet(c) <= cap(k))
local function port_free(conf, k, use, cuse, caps)
  if use[k] >= caps[k] then return false end
  local mine, others = 0, 0
  local resv = redis.call('HGETALL', K_RESV)
  for i = 1, #resv, 2 do
    local c, rk = string.match(resv[i], '^(.*):(%a+)$')
    if rk == k then
      local unmet = toint(resv[i + 1]) - (cuse[resv[i]] or 0)
      if unmet > 0 then
        if c == conf then mine = mine + unmet else others = others + unmet end
      end
    end
  end
  return mine > 0 or use[k] + 1 + others <= caps[k]
end

-- Writes a new live lease of kind k for pid in conf (the participant's record included).
local function grant_lease(pid, conf, k, exp, body)
  local seq = redis.call('HINCRBY', K_OUTAGE, 'seq', 1)
  redis.call('HSET', K_LMETA, pid, conf .. '|' .. k)
  redis.call('ZADD', K_LEASES, istr(exp), pid)
  redis.call('ZADD', K_LORDER, seq, pid)
  if body then redis.call('HSET', K_PARTS, pid, body) end
  redis.call('HSET', K_PSTATE, pid, 'admitted')
  redis.call('HSET', K_PKIND, pid, k)
  redis.call('HSET', K_PCONF, pid, conf)
  redis.call('HINCRBY', K_CUSE, conf .. ':' .. k, 1)
  redis.call('HINCRBY', K_OUTAGE, 'admitted', 1)
  return redis.call('HINCRBY', K_USE, k, 1)
end

-- A final state ends a participant for good: its media closes, a renewal never brings it back.
local function is_final(state)
  return state ~= false and state ~= nil and state ~= 'admitted' and state ~= 'connected'
end
