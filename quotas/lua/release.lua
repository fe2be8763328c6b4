-- release: ARGV pid, final_state -> 1 when this call freed the port, 0 otherwise (idempotent).
if release_lease(ARGV[1], ARGV[2]) then return 1 end
return 0
