-- admit: one admission, atomically.
-- ARGV pid, conference, kind, downgrade (1|0), ttl_ms, body_json, now_ms, overshoot, reclaim_limit
-- -> {status, kind, lease_expires_ms, capacity, in_use, downgraded}
-- Rule for kind k and conference C, with unmet(c) = max(0, reserve(c,k) - use(c,k)):
--   in_use(k) < cap(k) and (unmet(C) > 0 or in_use(k) + 1 + sum_{c ~= C} unmet(c) <= cap(k))
-- overshoot (test-only, UNSAFE) is added to cap(k) in that rule.
local pid, conf, kind = ARGV[1], ARGV[2], ARGV[3]
local downgrade = ARGV[4] == '1'
local ttl = tonumber(ARGV[5])
local body = ARGV[6]
local now = tonumber(ARGV[7])
local overshoot = tonumber(ARGV[8])
local reclaim_limit = tonumber(ARGV[9])

if redis.call('EXISTS', K_CAP) == 0 then return { 'ended', '', 0, 0, 0, 0 } end
if redis.call('HEXISTS', K_CONFS, conf) == 0 then return { 'no_conference', '', 0, 0, 0, 0 } end

reclaim_expired(now, reclaim_limit)

local function cap(k) return toint(redis.call('HGET', K_CAP, k)) end
local function used(k) return toint(redis.call('HGET', K_USE, k)) end

-- idempotent retry: the participant already holds a live lease
local held = redis.call('HGET', K_LMETA, pid)
if held then
  local exp = tonumber(redis.call('ZSCORE', K_LEASES, pid))
  if exp and exp > now then
    local _, hk = parse_meta(held)
    return { 'granted', hk, exp, cap(hk), used(hk), (hk ~= kind) and 1 or 0 }
  end
  release_lease(pid, 'expired')
end

local function admissible(k)
  local capk = cap(k) + overshoot
  local usek = used(k)
  if usek >= capk then return false end
  local mine, others = 0, 0
  local resv = redis.call('HGETALL', K_RESV)
  for i = 1, #resv, 2 do
    local c, rk = string.match(resv[i], '^(.*):(%a+)$')
    local r = toint(resv[i + 1])
    if rk == k and r > 0 then
      local unmet = r - toint(redis.call('HGET', K_CUSE, resv[i]))
      if unmet > 0 then
        if c == conf then mine = mine + unmet else others = others + unmet end
      end
    end
  end
  return mine > 0 or usek + 1 + others <= capk
end

local function grant(k, downgraded)
  local exp = now + ttl
  local usek = redis.call('HINCRBY', K_USE, k, 1)
  redis.call('HINCRBY', K_CUSE, conf .. ':' .. k, 1)
  redis.call('ZADD', K_LEASES, istr(exp), pid)
  redis.call('HSET', K_LMETA, pid, conf .. '|' .. k)
  local head
  if body == '{}' then head = '{' else head = string.sub(body, 1, -2) .. ',' end
  redis.call('HSET', K_PARTS, pid, head .. '"kind":"' .. k .. '","requested_kind":"' .. kind
    .. '","lease_expires_at_ms":' .. istr(exp) .. ',"state":"admitted"}')
  return { 'granted', k, exp, cap(k), usek, downgraded and 1 or 0 }
end

if admissible(kind) then return grant(kind, false) end
if kind == 'video' and downgrade and admissible('audio') then return grant('audio', true) end
-- refused: report the requested kind
return { 'full', kind, 0, cap(kind), used(kind), 0 }
