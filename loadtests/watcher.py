"""The cap watcher: an observer independent of the load users.

Throughout the run it samples the ledger straight from Redis (``keys.capacity`` / ``keys.in_use`` of every
outage in ``keys.ACTIVE_OUTAGES``, read in one MULTI so a sample is a consistent snapshot) and every
broker's ``/metrics``. It flags:

* ``cap``: a kind's ports in use above its capacity (ledger), ``metrics-cap``: the same seen in /metrics;
* ``negative``: a negative in-use or capacity (ledger or /metrics);
* ``metrics-mismatch``: once the load has stopped and the ledger is quiet, /metrics (of any broker) and
  the ledger disagree on an outage's capacity or ports in use;
* ``leak``: a port still held after all users have left and the admission lease has passed;
* ``metrics-unreachable``: no broker's /metrics could ever be read;
* ``preemption-order``: the audit trail of an outage (loadtests/audit.py, read as the run goes) shows a
  preemption of an equally or more important conference, one that broke a reserve, or one made while a
  less important conference held more than its reserve.

At the end it also accounts the run's audit trails against locust's counts (``account_trails``).

It also keeps the time series behind the report's plot (ports in use vs caps, server-side admission
latency from the ``backupplus_admission_seconds`` histogram).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from loadtests.audit import Accounting, TrailReader, account
from quotas import keys

KINDS = ("audio", "video")
Ledger = dict[str, dict[str, dict[str, int]]]       # outage -> {"cap": {kind: n}, "use": {kind: n}}


@dataclass
class Violation:
    check: str
    outage: str | None
    kind: str | None
    detail: str
    at: float = field(default_factory=time.time)
    count: int = 1
    value: float = 0.0      # how bad (ports in use); the worst one seen is the one reported

    def __str__(self) -> str:
        where = "/".join(x for x in (self.outage, self.kind) if x)
        more = f" (worst of {self.count} samples)" if self.count > 1 else ""
        return f"{self.check}: {where + ': ' if where else ''}{self.detail}{more}"


# --- ledger ------------------------------------------------------------------------------------------
def _ints(h: dict[Any, Any]) -> dict[str, int]:
    out = {}
    for k, v in h.items():
        k = k.decode() if isinstance(k, bytes) else str(k)
        try:
            out[k] = int(float(v))
        except (TypeError, ValueError):
            out[k] = -(10**9)   # unreadable: reported as negative/corrupt
    return out


def read_ledger(client: redis.Redis, outages: Iterable[str] | None = None) -> Ledger:
    """Capacity and in-use of the given outages (default: the active ones), as one atomic snapshot."""
    if outages is None:
        outages = sorted(x.decode() if isinstance(x, bytes) else x for x in client.smembers(keys.ACTIVE_OUTAGES))
    ids = list(outages)
    if not ids:
        return {}
    pipe = client.pipeline(transaction=True)
    for oid in ids:
        pipe.hgetall(keys.capacity(oid))
        pipe.hgetall(keys.in_use(oid))
    res = pipe.execute()
    return {oid: {"cap": _ints(res[2 * i]), "use": _ints(res[2 * i + 1])} for i, oid in enumerate(ids)}


def check_ledger(ledger: Ledger) -> list[Violation]:
    out = []
    for oid, d in ledger.items():
        cap, use = d["cap"], d["use"]
        for kind in sorted(set(cap) | set(use)):
            u, c = use.get(kind, 0), cap.get(kind)
            if u < 0:
                out.append(Violation("negative", oid, kind, f"ledger in_use = {u}"))
            if c is not None and c < 0:
                out.append(Violation("negative", oid, kind, f"ledger capacity = {c}"))
            if c is not None and u > c:
                out.append(Violation("cap", oid, kind, f"{u} ports in use > capacity {c} (ledger)", value=u))
    return out


# --- /metrics ----------------------------------------------------------------------------------------
@dataclass
class Metrics:
    capacity: dict[tuple[str, str], float] = field(default_factory=dict)
    in_use: dict[tuple[str, str], float] = field(default_factory=dict)
    adm_buckets: dict[float, float] = field(default_factory=dict)   # le -> cumulative count, summed
    adm_count: float = 0.0
    admissions: dict[str, float] = field(default_factory=dict)     # "kind/result" -> count


def parse_metrics(text: str) -> Metrics:
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            name, labels, value = s.name, s.labels, float(s.value)
            if name == "backupplus_ports_capacity":
                m.capacity[(labels.get("outage", ""), labels.get("kind", ""))] = value
            elif name == "backupplus_ports_in_use":
                m.in_use[(labels.get("outage", ""), labels.get("kind", ""))] = value
            elif name == "backupplus_admission_seconds_bucket":
                le = float(labels["le"])
                m.adm_buckets[le] = m.adm_buckets.get(le, 0.0) + value
            elif name == "backupplus_admission_seconds_count":
                m.adm_count += value
            elif name == "backupplus_admissions_total":
                key = f"{labels.get('kind', '')}/{labels.get('result', '')}"
                m.admissions[key] = m.admissions.get(key, 0.0) + value
    return m


def check_metrics(m: Metrics, source: str = "/metrics") -> list[Violation]:
    out = []
    for (oid, kind), u in m.in_use.items():
        c = m.capacity.get((oid, kind))
        if u < 0:
            out.append(Violation("negative", oid, kind, f"{source} in_use = {u:g}"))
        if c is not None and u > c:
            out.append(Violation("metrics-cap", oid, kind, f"{u:g} ports in use > capacity {c:g} ({source})",
                                 value=u))
    return out


def compare(ledger: Ledger, m: Metrics, source: str = "/metrics") -> list[Violation]:
    """Disagreements between a quiet ledger and one broker's /metrics."""
    out = []
    for oid, d in ledger.items():
        for kind in sorted(set(KINDS) | set(d["cap"]) | set(d["use"])):
            lu, lc = d["use"].get(kind, 0), d["cap"].get(kind)
            mu, mc = m.in_use.get((oid, kind)), m.capacity.get((oid, kind))
            if mu is None:
                if lu != 0 or lc is not None:
                    out.append(Violation("metrics-mismatch", oid, kind,
                                         f"ledger in_use {lu} / capacity {lc}, absent from {source}"))
                continue
            if mu != lu:
                out.append(Violation("metrics-mismatch", oid, kind, f"ledger in_use {lu} != {source} {mu:g}"))
            if lc is not None and mc is not None and mc != lc:
                out.append(Violation("metrics-mismatch", oid, kind, f"ledger capacity {lc} != {source} {mc:g}"))
    for (oid, kind), mu in m.in_use.items():
        if oid not in ledger and mu != 0:
            out.append(Violation("metrics-mismatch", oid, kind,
                                 f"{source} shows {mu:g} in use for an outage that is not active in the ledger"))
    return out


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus-style quantile (seconds) from cumulative buckets {le: count}."""
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return None
    total = items[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in items:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def bucket_delta(a: dict[float, float], b: dict[float, float]) -> dict[float, float]:
    return {le: b[le] - a.get(le, 0.0) for le in b}


# --- machine CPU: ours vs everybody else's (the machine may be shared) ---------------------------------
class CpuSampler:
    """Cores used by this run's processes (by session id) and by everything else, between two samples."""

    def __init__(self, sessions: Iterable[int] = ()) -> None:
        self.sessions = set(sessions)
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.ncpu = os.cpu_count() or 1
        self._last: tuple[float, float, float] | None = None

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            parts = [float(x) for x in f.readline().split()[1:]]
        return sum(parts) - parts[3] - (parts[4] if len(parts) > 4 else 0.0)   # minus idle and iowait

    def _ours(self) -> float:
        total = 0.0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) in self.sessions:        # field 6 of stat: session id
                total += float(fields[11]) + float(fields[12])   # utime + stime
        return total

    def sample(self) -> dict[str, float] | None:
        try:
            now, busy, ours = time.monotonic(), self._busy(), self._ours()
        except (OSError, ValueError, IndexError):
            return None
        prev, self._last = self._last, (now, busy, ours)
        if prev is None or now <= prev[0]:
            return None
        dt = (now - prev[0]) * self.hz
        all_cores = max(0.0, (busy - prev[1]) / dt)
        our_cores = max(0.0, (ours - prev[2]) / dt)
        return {"ours": round(our_cores, 2), "others": round(max(0.0, all_cores - our_cores), 2),
                "load1": round(os.getloadavg()[0], 2)}


# --- the watcher -------------------------------------------------------------------------------------
class CapWatcher:
    def __init__(self, redis_url: str, metrics_urls: list[str], token: str | None = None,
                 interval: float = 0.25, metrics_interval: float = 1.0) -> None:
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
        self.metrics_urls = list(metrics_urls)
        self.token = token
        self.interval = interval
        self.metrics_interval = metrics_interval
        self.violations: dict[tuple[str, str | None, str | None], Violation] = {}
        self.timeline: list[dict[str, Any]] = []
        self.metrics_timeline: list[dict[str, Any]] = []
        self.peaks: dict[tuple[str, str], tuple[int, int | None]] = {}
        self.seen: set[str] = set()
        self.samples = 0
        self.redis_errors = 0
        self.metrics_ok = 0
        self.metrics_errors: dict[str, str] = {}
        self.started_at = time.time()
        self.cpu = CpuSampler()
        self.cpu_timeline: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.trails = TrailReader(self.redis)
        self.trail_interval = 1.0
        self._trail_lock = threading.Lock()

    # --- recording ------------------------------------------------------------------------------
    def flag(self, vs: Iterable[Violation]) -> None:
        with self._lock:
            for v in vs:
                key = (v.check, v.outage, v.kind)
                if key in self.violations:
                    old = self.violations[key]
                    old.count += 1
                    if v.value > old.value:
                        old.value, old.detail = v.value, v.detail
                else:
                    self.violations[key] = v

    def violation_list(self) -> list[Violation]:
        with self._lock:
            return sorted(self.violations.values(), key=lambda v: v.at)

    def scrape(self, url: str) -> Metrics:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"} if self.token else {})
        with urllib.request.urlopen(req, timeout=5) as r:
            return parse_metrics(r.read().decode())

    def sample_ledger_once(self) -> Ledger:
        ledger = read_ledger(self.redis)
        now = time.time()
        self.samples += 1
        self.flag(check_ledger(ledger))
        row: dict[str, Any] = {"t": now, "outages": len(ledger)}
        ratio, hottest = 0.0, None
        for kind in KINDS:
            row[f"use_{kind}"] = sum(d["use"].get(kind, 0) for d in ledger.values())
            row[f"cap_{kind}"] = sum(d["cap"].get(kind, 0) for d in ledger.values())
            row[f"full_{kind}"] = sum(1 for d in ledger.values()
                                      if d["cap"].get(kind) and d["use"].get(kind, 0) >= d["cap"][kind])
        for oid, d in ledger.items():
            self.seen.add(oid)
            for kind in KINDS:
                u, c = d["use"].get(kind, 0), d["cap"].get(kind)
                pu, _ = self.peaks.get((oid, kind), (-1, None))
                if u > pu:
                    self.peaks[(oid, kind)] = (u, c)
                if c:
                    r = u / c
                    if r > ratio:
                        ratio, hottest = r, oid
        row["max_ratio"] = round(ratio, 3)
        row["hottest"] = hottest
        self.timeline.append(row)
        return ledger

    def sample_metrics_once(self) -> None:
        row: dict[str, Any] = {"t": time.time(), "brokers": {}}
        for url in self.metrics_urls:
            try:
                m = self.scrape(url)
            except Exception as exc:  # noqa: BLE001
                self.metrics_errors[url] = f"{type(exc).__name__}: {exc}"
                continue
            self.metrics_ok += 1
            self.flag(check_metrics(m, url))
            row["brokers"][url] = {"buckets": {repr(k): v for k, v in m.adm_buckets.items()},
                                   "count": m.adm_count, "admissions": m.admissions,
                                   "in_use": sum(m.in_use.values())}
        self.metrics_timeline.append(row)

    # --- thread ---------------------------------------------------------------------------------
    def poll_trails(self, outages: Iterable[str] = ()) -> None:
        """Reads what is new in the audit streams of every outage seen (and ``outages``)."""
        with self._trail_lock:
            self.trails.follow(sorted(self.seen | set(outages)))
            found = self.trails.poll()
        self.flag(Violation(f.check, f.outage, f.kind, f.detail) for f in found)

    def _run(self) -> None:
        next_metrics = 0.0
        next_trails = 0.0
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.sample_ledger_once()
            except Exception:  # noqa: BLE001
                self.redis_errors += 1
            if t >= next_trails:
                next_trails = t + self.trail_interval
                try:
                    self.poll_trails()
                except Exception:  # noqa: BLE001
                    self.trails.read_errors += 1
            if t >= next_metrics:
                self.sample_metrics_once()
                next_metrics = t + self.metrics_interval
                if self.cpu.sessions:
                    c = self.cpu.sample()
                    if c is not None:
                        self.cpu_timeline.append({"t": time.time(), **c})
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def start(self) -> CapWatcher:
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._run, name="cap-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    # --- end of run -----------------------------------------------------------------------------
    def wait_quiet(self, timeout: float = 10.0, settle: float = 0.5) -> Ledger:
        """The ledger once two snapshots ``settle`` s apart agree (or the last one at ``timeout``)."""
        deadline = time.monotonic() + timeout
        prev = read_ledger(self.redis)
        while True:
            time.sleep(settle)
            cur = read_ledger(self.redis)
            if cur == prev or time.monotonic() > deadline:
                return cur
            prev = cur

    def check_quiet_agreement(self, timeout: float = 10.0) -> list[Violation]:
        """Every broker's /metrics must match the quiet ledger (allowing ``timeout`` s to converge)."""
        deadline = time.monotonic() + timeout
        while True:
            ledger = self.wait_quiet()
            found: list[Violation] = []
            for url in self.metrics_urls:
                try:
                    found += compare(ledger, self.scrape(url), url)
                except Exception as exc:  # noqa: BLE001
                    found.append(Violation("metrics-unreachable", None, None, f"{url}: {exc}"))
            if not found or time.monotonic() > deadline:
                self.flag(found)
                return found
            time.sleep(1.0)

    def held_ports(self) -> dict[tuple[str, str], int]:
        active = {x.decode() if isinstance(x, bytes) else str(x) for x in self.redis.smembers(keys.ACTIVE_OUTAGES)}
        ids = sorted(self.seen | active)
        held = {}
        for oid, d in read_ledger(self.redis, ids).items():
            for kind, u in d["use"].items():
                if u != 0:
                    held[(oid, kind)] = u
        return held

    def check_leaks(self, users_gone_at: float, lease_s: float = 30.0, grace_s: float = 6.0,
                    poll: float = 0.5) -> list[Violation]:
        """Ports still held once every user has left and the admission lease has passed."""
        deadline = users_gone_at + lease_s + grace_s
        while True:
            held = self.held_ports()
            if not held:
                return []
            if time.time() >= deadline:
                break
            time.sleep(poll)
        found = []
        for (oid, kind), n in sorted(held.items()):
            holders = self.redis.zrange(keys.leases(oid), 0, 4)
            found.append(Violation("leak", oid, kind,
                                   f"{n} port(s) still held {time.time() - users_gone_at:.0f} s after all users "
                                   f"left (lease {lease_s:g} s); lease holders: {holders or 'none'}"))
        self.flag(found)
        return found

    def finish(self, users_gone_at: float, lease_s: float = 30.0, grace_s: float = 6.0,
               outages: Iterable[str] = ()) -> list[Violation]:
        self.poll_trails(outages)   # the users are gone: the trails hold every decision they caused
        if self.metrics_urls and self.metrics_ok == 0:
            errs = "; ".join(f"{u}: {e}" for u, e in self.metrics_errors.items())
            self.flag([Violation("metrics-unreachable", None, None, f"no /metrics could be read: {errs}")])
        else:
            self.check_quiet_agreement()
        self.check_leaks(users_gone_at, lease_s, grace_s)
        return self.violation_list()

    # --- results --------------------------------------------------------------------------------
    def account_trails(self, tally: dict[str, int], outages: Iterable[str] = (),
                       contract_prefix: str | None = None) -> Accounting:
        """Locust's admission outcomes against the audit trails of the run's outages."""
        with self._trail_lock:
            return account(tally, self.trails.of_run(outages, contract_prefix))

    def trail_summary(self, outages: Iterable[str] = (), contract_prefix: str | None = None) -> dict[str, Any]:
        with self._trail_lock:
            replays = self.trails.of_run(outages, contract_prefix) or list(self.trails.replays.values())
            return {"outages": len(replays), "events": sum(r.events for r in replays),
                    "preemptions": sum(r.preemptions for r in replays),
                    "outages_with_preemptions": sum(1 for r in replays if r.preemptions),
                    "repairs": sum(r.repairs for r in replays),
                    "unknown_releases": sum(r.unknown_releases for r in replays),
                    "incomplete": [r.outage for r in replays if r.complete is False],
                    "read_errors": self.trails.read_errors}

    def peak_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in KINDS:
            rows = [(u, c, oid) for (oid, k), (u, c) in self.peaks.items() if k == kind]
            if not rows:
                continue
            u, c, oid = max(rows, key=lambda r: (r[0] / r[1]) if r[1] else r[0])
            out[kind] = {"peak": u, "cap": c, "outage": oid,
                         "outages_at_cap": sum(1 for uu, cc, _ in rows if cc and uu >= cc),
                         "outages": len(rows)}
        if self.timeline:
            best = max(self.timeline, key=lambda r: r["use_audio"] + r["use_video"])
            out["total"] = {"peak": best["use_audio"] + best["use_video"],
                            "cap": best["cap_audio"] + best["cap_video"], "outages": best["outages"],
                            "max_outages": max(r["outages"] for r in self.timeline)}
        return out

    def cpu_summary(self, start: float = 0.0, end: float = float("inf")) -> dict[str, float]:
        rows = [r for r in self.cpu_timeline if start <= r["t"] <= end]
        if not rows:
            return {}
        n = len(rows)
        return {"ours": round(sum(r["ours"] for r in rows) / n, 2),
                "others": round(sum(r["others"] for r in rows) / n, 2),
                "others_max": max(r["others"] for r in rows),
                "load1_max": max(r["load1"] for r in rows), "cores": self.cpu.ncpu}

    def server_admission_quantiles(self, attempts: int | None = None) -> dict[str, float | None]:
        """Server-side admission quantiles (ms) over the run, from the histogram deltas.

        /metrics histograms are either for the whole broker (every process says the same: use one) or per
        process (add them up); ``attempts`` (the client's count) tells which when the brokers share the load
        evenly."""
        rows = [r for r in self.metrics_timeline if r["brokers"]]
        if len(rows) < 2:
            return {}
        first, last = rows[0]["brokers"], rows[-1]["brokers"]
        common = [u for u in last if u in first]
        if not common:
            return {}
        counts = [last[u]["count"] - first[u]["count"] for u in common]
        if attempts:
            urls = common if abs(sum(counts) - attempts) <= abs(counts[0] - attempts) else common[:1]
        else:
            urls = common[:1] if max(counts) - min(counts) <= 0.01 * max(counts) + 1 else common
        total: dict[float, float] = {}
        for u in urls:
            d = bucket_delta({float(k): v for k, v in first[u]["buckets"].items()},
                             {float(k): v for k, v in last[u]["buckets"].items()})
            for le, v in d.items():
                total[le] = total.get(le, 0.0) + v
        out: dict[str, float | None] = {}
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            qv = histogram_quantile(q, total)
            out[name] = None if qv is None else round(qv * 1000, 2)
        out["count"] = max(total.values()) if total else 0
        return out

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"timeline": self.timeline, "metrics": self.metrics_timeline, "cpu": self.cpu_timeline,
                       "violations": [asdict(v) for v in self.violation_list()],
                       "peaks": {f"{o}/{k}": v for (o, k), v in self.peaks.items()},
                       "samples": self.samples, "redis_errors": self.redis_errors}, f)
