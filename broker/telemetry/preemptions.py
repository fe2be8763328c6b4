"""backupplus_preemptions_total{kind}: ports taken from a less important conference (per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class PreemptionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.total = Counter(
            "backupplus_preemptions",
            "Admissions that took the port of a participant of a strictly less important conference",
            ["kind"],
            registry=registry,
        )

    def inc(self, kind: str) -> None:
        self.total.labels(kind=kind).inc()
