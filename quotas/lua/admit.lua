-- admit: one admission, atomically (the contract's clause 3-5: the most important conferences first).
-- KEYS: the ledger keys, then KEYS[19] = this request's admission idempotency key (unused when ARGV[10] = '').
-- ARGV pid, conference, kind, downgrade (1|0), ttl_ms, body_json, display_name, rate_burst, rate_per_s,
--      idempotency fingerprint ('' = none), idempotency_ttl_ms, reclaim_limit, events channel
--      ('' on a Redis Cluster: the caller publishes the preemption on the sharded channel)
-- -> {status, kind, lease_expires_ms, capacity, in_use, downgraded, preempted_pid, preempted_conf,
--     retry_after_ms, pid, reason}
-- status: granted | full | ended | no_conference | rate_limited | idempotency_mismatch
-- Order: own free port -> (video with downgrade) free audio port -> preempt -> refuse.
-- A free port of kind k for conference C, with unmet(c) = max(0, reserve(c,k) - use(c,k)):
--   use(k) < cap(k) and (unmet(C) > 0 or use(k) + 1 + sum_{c ~= C} unmet(c) <= cap(k)),
--   and use(C,k) < max(C,k) when C has a ceiling.
-- Preemption takes the port of a participant of a strictly less important conference (higher
-- priority number) that holds more than its reserve of k: the least important conference first
-- (then the one furthest above its reserve), its most recently admitted participant first.
local K_IDEM = KEYS[19]
local pid, conf, kind = ARGV[1], ARGV[2], ARGV[3]
local downgrade = ARGV[4] == '1'
local ttl = tonumber(ARGV[5])
local body, name = ARGV[6], ARGV[7]
local burst, per_s = tonumber(ARGV[8]), tonumber(ARGV[9])
local fingerprint, idem_ttl = ARGV[10], ARGV[11]
local reclaim_limit = tonumber(ARGV[12])
local channel = ARGV[13]
local now = now_ms()

local function answer(status, k, exp, cap, use, downgraded, vpid, vconf, retry, who, reason)
  return { status, k or '', exp or 0, cap or 0, use or 0, downgraded and 1 or 0, vpid or '', vconf or '',
           retry or 0, who or pid, reason or '' }
end

if not is_active() then
  -- an ended outage keeps its audit trail a while: the refusal goes there (never into a new stream)
  if redis.call('EXISTS', K_AUDIT) == 1 then
    audit('refused', now, { 'conference', conf, 'kind', kind, 'code', 'outage_ended', 'name', name })
  end
  return answer('ended')
end
if redis.call('HEXISTS', K_CONFS, conf) == 0 then
  audit('refused', now, { 'conference', conf, 'kind', kind, 'code', 'conference_closed', 'name', name })
  return answer('no_conference')
end
local caps = capacity()

-- a retried request (Idempotency-Key): the participant it admitted, while its lease lives
if fingerprint ~= '' then
  local first = redis.call('GET', K_IDEM)
  if first then
    local first_pid, first_fp = string.match(first, '^(.-)|(.*)$')
    if first_fp ~= fingerprint then return answer('idempotency_mismatch') end
    local exp = tonumber(redis.call('ZSCORE', K_LEASES, first_pid))
    if exp and exp > now then
      local k = redis.call('HGET', K_PKIND, first_pid)
      return answer('granted', k, exp, caps[k], toint(redis.call('HGET', K_USE, k)), k ~= kind,
        nil, nil, 0, first_pid)
    end
  end
end

-- one conference's link cannot admit faster than a meeting of people joins (token bucket)
local tokens, last = burst, now
local bucket = redis.call('HGET', K_RATE, conf)
if bucket then
  local t, ts = string.match(bucket, '^([%d%.]+)|(%d+)$')
  if t then tokens, last = tonumber(t), tonumber(ts) end
end
tokens = math.min(burst, tokens + math.max(0, now - last) * per_s / 1000)
if tokens < 1 then
  audit('refused', now, { 'conference', conf, 'kind', kind, 'code', 'rate_limited', 'name', name })
  return answer('rate_limited', kind, 0, 0, 0, false, nil, nil, math.ceil((1 - tokens) * 1000 / per_s))
end

reclaim_expired(now, reclaim_limit)
check_leases(now)

-- the participant already holds a live lease (a retry with the same id)
local held = redis.call('HGET', K_LMETA, pid)
if held then
  local _, hk = parse_meta(held)
  return answer('granted', hk, tonumber(redis.call('ZSCORE', K_LEASES, pid)), caps[hk],
    toint(redis.call('HGET', K_USE, hk)), hk ~= kind)
end

local use, cuse = derive_use()
local function held_by(c, k) return cuse[c .. ':' .. k] or 0 end

-- the participant to preempt for a port of kind k, and its conference; nil when nobody may be
local function victim(k)
  local mine = priority(conf)
  local best, best_prio, best_above = nil, nil, nil
  for _, c in ipairs(redis.call('HKEYS', K_CONFS)) do
    local p = priority(c)
    local above = held_by(c, k) - reserve_of(c, k)
    if c ~= conf and p > mine and above > 0 then
      if not best or p > best_prio or (p == best_prio and (above > best_above or (above == best_above and c > best))) then
        best, best_prio, best_above = c, p, above
      end
    end
  end
  if not best then return nil end
  local want = best .. '|' .. k
  for _, p in ipairs(redis.call('ZREVRANGE', K_LORDER, 0, -1)) do
    if redis.call('HGET', K_LMETA, p) == want then return p, best end
  end
  return nil
end

local function grant(k, downgraded, vpid, vconf)
  local exp = now + ttl
  local usek = grant_lease(pid, conf, k, exp, body)
  redis.call('HSET', K_RATE, conf, string.format('%.3f|%d', tokens - 1, now))
  if fingerprint ~= '' then redis.call('SET', K_IDEM, pid .. '|' .. fingerprint, 'PX', idem_ttl) end
  local fields = { 'participant', pid, 'conference', conf, 'kind', k, 'requested', kind, 'name', name }
  if vpid then
    fields[#fields + 1] = 'preempted'
    fields[#fields + 1] = vpid
  end
  audit(downgraded and 'downgraded' or 'admitted', now, fields)
  return answer('granted', k, exp, caps[k], usek, downgraded, vpid, vconf)
end

local function preempt_and_grant(k, downgraded)
  local vpid, vconf = victim(k)
  if not vpid then return nil end
  release_lease(vpid, 'preempted', now)
  redis.call('HINCRBY', K_OUTAGE, 'preempted', 1)
  audit('preempted', now, { 'participant', vpid, 'conference', vconf, 'kind', k, 'by', pid,
    'by_conference', conf })
  if channel ~= '' then
    redis.call('PUBLISH', channel, cjson.encode({ type = 'participant_preempted',
      outage = string.match(K_OUTAGE, '{(.-)}'), participant = vpid, conference = vconf }))
  end
  use[k] = use[k] - 1
  cuse[vconf .. ':' .. k] = held_by(vconf, k) - 1
  return grant(k, downgraded, vpid, vconf)
end

local fallback = kind == 'video' and downgrade
if under_ceiling(conf, kind, cuse) and port_free(conf, kind, use, cuse, caps) then return grant(kind, false) end
if fallback and under_ceiling(conf, 'audio', cuse) and port_free(conf, 'audio', use, cuse, caps) then
  return grant('audio', true)
end
if under_ceiling(conf, kind, cuse) then
  local done = preempt_and_grant(kind, false)
  if done then return done end
end
if fallback and under_ceiling(conf, 'audio', cuse) then
  local done = preempt_and_grant('audio', true)
  if done then return done end
end

-- refused: report the requested kind (its ceiling when that is what stopped it)
redis.call('HINCRBY', K_OUTAGE, 'refused', 1)
local reason = 'full'
local cap_k, use_k = caps[kind], use[kind]
if not under_ceiling(conf, kind, cuse) then
  reason = 'conference_max'
  cap_k, use_k = tonumber(redis.call('HGET', K_CMAX, conf .. ':' .. kind)), held_by(conf, kind)
end
audit('refused', now, { 'conference', conf, 'kind', kind, 'downgrade', downgrade and '1' or '0',
  'code', 'capacity_exhausted', 'reason', reason, 'name', name })
return answer('full', kind, 0, cap_k, use_k, false, nil, nil, 0, pid, reason)
