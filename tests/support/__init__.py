"""Harnesses shared by the reliability tests: broker processes, network namespaces with faults,
Redis Sentinel setups and ledger probes (all on real processes)."""
