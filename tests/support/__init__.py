"""Test support shared by the tests and the benchmarks, not part of the installed package: broker
processes, network namespaces with faults, Redis Sentinel setups, ledger probes and media clients
(all on real processes)."""
