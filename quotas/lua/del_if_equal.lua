-- del_if_equal: KEYS[1] a marker, ARGV[1] the value it must still hold -> 1 deleted, 0 left alone.
-- A contract's active-outage marker is removed only while it still names this outage (a later
-- outage of the same server keeps its own).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
