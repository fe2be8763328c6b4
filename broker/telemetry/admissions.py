"""backupplus_admissions_total{kind,result} and backupplus_admission_seconds (per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# Admission is one Redis script call: buckets from 0.25 ms to 1 s.
_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
KINDS = ("audio", "video")
RESULTS = ("granted", "downgraded", "preempted", "refused_capacity", "refused_ended", "rate_limited", "error")


class AdmissionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.total = Counter(
            "backupplus_admissions",
            "Admission attempts by requested kind and result "
            "(granted, downgraded, preempted, refused_capacity, refused_ended, rate_limited, error)",
            ["kind", "result"],
            registry=registry,
        )
        # Every series exists from the start at 0, so that increase() sees the first refusal.
        for kind in KINDS:
            for result in RESULTS:
                self.total.labels(kind=kind, result=result)
        self.seconds = Histogram(
            "backupplus_admission_seconds",
            "Time to decide an admission (the ledger call included)",
            buckets=_BUCKETS,
            registry=registry,
        )

    def observe(self, kind: str, result: str, seconds: float) -> None:
        self.total.labels(kind=kind, result=result).inc()
        self.seconds.observe(seconds)
