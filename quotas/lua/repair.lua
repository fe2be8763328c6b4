-- repair: the audit every broker runs on each active outage (e.g. every 30 s): recomputes the whole
-- ledger from its live leases and repairs what disagrees (a lost capacity, lease set, lease owners,
-- participant records or counters). -> {repairs, expired pid...}
if not is_active() then return { 0 } end
local now = now_ms()
local _, cap_fixed = capacity()
local expired = reclaim_expired(now, 1000)
local repaired = cap_fixed + repair_leases(now)
local _, _, fixed = derive_use()
repaired = repaired + fixed
if repaired > 0 then audit('ledger_repaired', now, { 'repairs', istr(repaired) }) end
local out = { repaired }
for _, pid in ipairs(expired) do out[#out + 1] = pid end
return out
