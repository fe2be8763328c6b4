"""The load test's cap watcher, fed ledger states in a real Redis and canned /metrics: it must flag every
cap breach, negative, /metrics disagreement and leak, and stay quiet on a healthy ledger."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis.asyncio as aioredis

from loadtests.report import Slo, evaluate
from loadtests.scenario import ADMISSION_NAME, LoadShape, Pool, draw_group
from loadtests.watcher import (
    CapWatcher,
    check_ledger,
    compare,
    histogram_quantile,
    parse_metrics,
    read_ledger,
)
from quotas import keys

A, B = "o-aaaaaaaaaaaa", "o-bbbbbbbbbbbb"


async def put_outage(r: aioredis.Redis, oid: str, cap: dict[str, int], use: dict[str, int],
                     active: bool = True) -> None:
    if cap:
        await r.hset(keys.capacity(oid), mapping=cap)
    if use:
        await r.hset(keys.in_use(oid), mapping=use)
    await r.zadd(keys.OUTAGES, {oid: time.time() * 1000})
    if active:
        await r.sadd(keys.ACTIVE_OUTAGES, oid)


class MetricsServer:
    """A /metrics endpoint whose text the test sets."""

    def __init__(self) -> None:
        self.text = ""
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def set(self, rows: dict[tuple[str, str], tuple[int, int]], buckets: dict[str, int] | None = None) -> None:
        lines = ["# TYPE backupplus_ports_capacity gauge", "# TYPE backupplus_ports_in_use gauge"]
        for (o, k), (cap, _) in rows.items():
            lines.append(f'backupplus_ports_capacity{{outage="{o}",kind="{k}"}} {cap}')
        for (o, k), (_, use) in rows.items():
            lines.append(f'backupplus_ports_in_use{{outage="{o}",kind="{k}"}} {use}')
        if buckets:
            lines.append("# TYPE backupplus_admission_seconds histogram")
            for le, n in buckets.items():
                lines.append(f'backupplus_admission_seconds_bucket{{le="{le}"}} {n}')
            lines.append(f"backupplus_admission_seconds_count {max(buckets.values())}")
            lines.append("backupplus_admission_seconds_sum 1.0")
        self.text = "\n".join(lines) + "\n"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def metrics() -> Iterator[MetricsServer]:
    m = MetricsServer()
    try:
        yield m
    finally:
        m.close()


def healthy_rows() -> dict[tuple[str, str], tuple[int, int]]:
    return {(A, "audio"): (8, 3), (A, "video"): (10, 10), (B, "audio"): (8, 0), (B, "video"): (10, 4)}


async def seed_healthy(r: aioredis.Redis) -> None:
    await put_outage(r, A, {"audio": 8, "video": 10}, {"audio": 3, "video": 10})
    await put_outage(r, B, {"audio": 8, "video": 10}, {"audio": 0, "video": 4})


# --- pure checks -------------------------------------------------------------------------------------
def test_check_ledger_flags_over_cap_and_negative() -> None:
    ledger = {A: {"cap": {"audio": 8, "video": 10}, "use": {"audio": 8, "video": 12}},
              B: {"cap": {"audio": 8, "video": 10}, "use": {"audio": -1, "video": 0}}}
    found = {(v.check, v.outage, v.kind) for v in check_ledger(ledger)}
    assert found == {("cap", A, "video"), ("negative", B, "audio")}


def test_check_ledger_accepts_full_outage() -> None:
    assert check_ledger({A: {"cap": {"audio": 8, "video": 10}, "use": {"audio": 8, "video": 10}}}) == []


def test_compare_flags_disagreement_both_ways() -> None:
    ledger = {A: {"cap": {"audio": 8, "video": 10}, "use": {"audio": 2, "video": 5}}}
    m = parse_metrics(
        f'backupplus_ports_capacity{{outage="{A}",kind="audio"}} 8\n'
        f'backupplus_ports_capacity{{outage="{A}",kind="video"}} 9\n'
        f'backupplus_ports_in_use{{outage="{A}",kind="audio"}} 2\n'
        f'backupplus_ports_in_use{{outage="{A}",kind="video"}} 4\n'
        f'backupplus_ports_in_use{{outage="{B}",kind="video"}} 1\n'
    )
    found = [(v.outage, v.kind, v.detail) for v in compare(ledger, m)]
    assert (A, "video", "ledger in_use 5 != /metrics 4") in found
    assert (A, "video", "ledger capacity 10 != /metrics 9") in found
    assert any(o == B for o, _, _ in found)  # in use for an outage the ledger does not have active
    assert not any(k == "audio" for _, k, _ in found)


def test_compare_flags_outage_missing_from_metrics() -> None:
    ledger = {A: {"cap": {"audio": 8, "video": 10}, "use": {"audio": 0, "video": 0}}}
    assert {v.kind for v in compare(ledger, parse_metrics(""))} == {"audio", "video"}


def test_histogram_quantile_interpolates() -> None:
    b = {0.001: 50.0, 0.005: 90.0, 0.01: 99.0, 0.025: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, b) == pytest.approx(0.001)
    assert histogram_quantile(0.99, b) == pytest.approx(0.01)
    assert 0.005 < histogram_quantile(0.95, b) < 0.01  # type: ignore[operator]
    assert histogram_quantile(0.99, {}) is None


# --- against a real Redis ----------------------------------------------------------------------------
async def test_read_ledger_snapshot(redis: aioredis.Redis, redis_url: str) -> None:
    await seed_healthy(redis)
    await put_outage(redis, "o-cccccccccccc", {}, {"audio": 0, "video": 0}, active=False)
    w = CapWatcher(redis_url, [])
    ledger = await asyncio.to_thread(read_ledger, w.redis)
    assert set(ledger) == {A, B}
    assert ledger[A] == {"cap": {"audio": 8, "video": 10}, "use": {"audio": 3, "video": 10}}


async def test_healthy_run_has_no_violation(redis: aioredis.Redis, redis_url: str, metrics: MetricsServer) -> None:
    await seed_healthy(redis)
    metrics.set(healthy_rows(), {"0.001": 10, "0.005": 20, "+Inf": 20})
    w = CapWatcher(redis_url, [metrics.url], interval=0.05, metrics_interval=0.1).start()
    await asyncio.sleep(0.5)
    # everyone leaves
    await redis.hset(keys.in_use(A), mapping={"audio": 0, "video": 0})
    await redis.hset(keys.in_use(B), mapping={"audio": 0, "video": 0})
    rows = {k: (c, 0) for k, (c, _) in healthy_rows().items()}
    metrics.set(rows, {"0.001": 10, "0.005": 20, "+Inf": 20})
    found = await asyncio.to_thread(w.finish, time.time(), 30.0, 0.0)
    w.stop()
    assert found == []
    assert w.samples >= 3 and w.metrics_ok >= 2
    peaks = w.peak_summary()
    assert peaks["video"]["peak"] == 10 and peaks["video"]["cap"] == 10 and peaks["video"]["outages_at_cap"] == 1
    assert peaks["total"]["peak"] == 17 and peaks["total"]["cap"] == 36


async def test_flags_in_use_above_cap_during_run(redis: aioredis.Redis, redis_url: str,
                                                 metrics: MetricsServer) -> None:
    await seed_healthy(redis)
    metrics.set(healthy_rows())
    w = CapWatcher(redis_url, [metrics.url], interval=0.05, metrics_interval=0.1).start()
    await asyncio.sleep(0.2)
    await redis.hset(keys.in_use(A), "video", 12)   # two ports over the cap, for a moment
    await asyncio.sleep(0.3)
    await redis.hset(keys.in_use(A), "video", 10)
    await asyncio.sleep(0.2)
    w.stop()
    caps = [v for v in w.violation_list() if v.check == "cap"]
    assert len(caps) == 1 and caps[0].outage == A and caps[0].kind == "video"
    assert "12 ports in use > capacity 10" in caps[0].detail and caps[0].count >= 2


async def test_flags_negative_in_use(redis: aioredis.Redis, redis_url: str) -> None:
    await put_outage(redis, A, {"audio": 8, "video": 10}, {"audio": -1, "video": 0})
    w = CapWatcher(redis_url, [])
    await asyncio.to_thread(w.sample_ledger_once)
    assert [(v.check, v.kind) for v in w.violation_list()] == [("negative", "audio")]


async def test_flags_over_cap_seen_in_metrics(redis: aioredis.Redis, redis_url: str,
                                              metrics: MetricsServer) -> None:
    await seed_healthy(redis)
    rows = healthy_rows()
    rows[(B, "audio")] = (8, 9)
    metrics.set(rows)
    w = CapWatcher(redis_url, [metrics.url])
    await asyncio.to_thread(w.sample_metrics_once)
    assert [(v.check, v.outage, v.kind) for v in w.violation_list()] == [("metrics-cap", B, "audio")]


async def test_flags_metrics_disagreeing_once_quiet(redis: aioredis.Redis, redis_url: str,
                                                   metrics: MetricsServer) -> None:
    await seed_healthy(redis)
    rows = healthy_rows()
    rows[(A, "audio")] = (8, 2)    # /metrics lags or lies: the ledger says 3
    metrics.set(rows)
    w = CapWatcher(redis_url, [metrics.url])
    found = await asyncio.to_thread(w.check_quiet_agreement, 0.5)
    assert [(v.check, v.outage, v.kind) for v in found] == [("metrics-mismatch", A, "audio")]
    assert "ledger in_use 3 != " in found[0].detail


async def test_disagreement_that_converges_is_not_flagged(redis: aioredis.Redis, redis_url: str,
                                                          metrics: MetricsServer) -> None:
    await seed_healthy(redis)
    rows = healthy_rows()
    rows[(A, "audio")] = (8, 2)
    metrics.set(rows)
    threading.Timer(0.8, lambda: metrics.set(healthy_rows())).start()
    w = CapWatcher(redis_url, [metrics.url])
    assert await asyncio.to_thread(w.check_quiet_agreement, 5.0) == []


async def test_flags_port_held_after_the_lease(redis: aioredis.Redis, redis_url: str) -> None:
    await seed_healthy(redis)
    await redis.zadd(keys.leases(A), {f"{A}.p0000abcd": time.time() * 1000 - 40_000})
    await redis.hset(keys.in_use(B), "video", 0)
    w = CapWatcher(redis_url, [])
    await asyncio.to_thread(w.sample_ledger_once)
    # users left 31 s ago, lease 30 s, grace 0: A still holds 3 audio + 10 video
    found = await asyncio.to_thread(w.check_leaks, time.time() - 31, 30.0, 0.0)
    assert {(v.check, v.outage, v.kind) for v in found} == {("leak", A, "audio"), ("leak", A, "video")}
    assert f"{A}.p0000abcd" in found[0].detail


async def test_leak_check_waits_for_the_lease(redis: aioredis.Redis, redis_url: str) -> None:
    """A port released by the lease sweeper before the deadline is not a leak, and the check returns early."""
    await put_outage(redis, A, {"audio": 8, "video": 10}, {"audio": 0, "video": 1})
    w = CapWatcher(redis_url, [])
    await asyncio.to_thread(w.sample_ledger_once)

    async def sweeper() -> None:
        await asyncio.sleep(0.6)
        await redis.hset(keys.in_use(A), "video", 0)

    task = asyncio.create_task(sweeper())
    t0 = time.monotonic()
    found = await asyncio.to_thread(w.check_leaks, time.time(), 3.0, 0.0, 0.1)
    await task
    assert found == [] and time.monotonic() - t0 < 2.5


async def test_restored_outage_still_holding_ports_is_a_leak(redis: aioredis.Redis, redis_url: str) -> None:
    await put_outage(redis, A, {"audio": 8, "video": 10}, {"audio": 0, "video": 2})
    w = CapWatcher(redis_url, [])
    await asyncio.to_thread(w.sample_ledger_once)   # seen while active
    await redis.srem(keys.ACTIVE_OUTAGES, A)
    await redis.delete(keys.capacity(A))
    found = await asyncio.to_thread(w.check_leaks, time.time() - 60, 30.0, 0.0)
    assert [(v.outage, v.kind) for v in found] == [(A, "video")]


async def test_unreachable_metrics_is_flagged(redis: aioredis.Redis, redis_url: str) -> None:
    await seed_healthy(redis)
    await redis.hset(keys.in_use(A), mapping={"audio": 0, "video": 0})
    await redis.hset(keys.in_use(B), mapping={"audio": 0, "video": 0})
    w = CapWatcher(redis_url, ["http://127.0.0.1:9/metrics"])
    await asyncio.to_thread(w.sample_metrics_once)
    found = await asyncio.to_thread(w.finish, time.time(), 30.0, 0.0)
    assert "metrics-unreachable" in {v.check for v in found}


async def test_server_quantiles_from_histogram_deltas(redis: aioredis.Redis, redis_url: str,
                                                      metrics: MetricsServer) -> None:
    await seed_healthy(redis)
    metrics.set(healthy_rows(), {"0.001": 100, "0.005": 100, "0.025": 100, "+Inf": 100})
    w = CapWatcher(redis_url, [metrics.url])
    await asyncio.to_thread(w.sample_metrics_once)
    # 100 more admissions during the run, 10 of them slow (5-25 ms)
    metrics.set(healthy_rows(), {"0.001": 150, "0.005": 190, "0.025": 200, "+Inf": 200})
    await asyncio.to_thread(w.sample_metrics_once)
    q = w.server_admission_quantiles()
    assert q["count"] == 100
    assert q["p50"] == pytest.approx(1.0)
    assert 5.0 < q["p99"] <= 25.0


# --- verdicts and the load model -------------------------------------------------------------------
def _summary(p99: float, errors: list[dict[str, object]] | None = None) -> dict[str, object]:
    entry = {"type": "POST", "name": ADMISSION_NAME, "requests": 1000, "failures": 0, "p50_ms": 3,
             "p95_ms": 8, "p99_ms": p99, "max_ms": 40, "avg_ms": 4}
    ttff = {"type": "MEDIA", "name": "time to first frame", "requests": 10, "failures": 0, "p50_ms": 700,
            "p95_ms": 900, "p99_ms": 950, "max_ms": 1000, "avg_ms": 720}
    return {"entries": [entry, ttff], "errors": errors or []}


def test_evaluate_names_each_breach() -> None:
    from loadtests.watcher import Violation

    ok = evaluate(_summary(12), [], Slo(), media_users=2)
    assert all(v.ok for v in ok)
    bad = evaluate(_summary(40, [{"type": "DELETE", "name": "x", "error": "500", "occurrences": 3}]),
                   [Violation("cap", A, "video", "12 ports in use > capacity 10 (ledger)")], Slo(), media_users=2)
    failed = {v.name: v.detail for v in bad if not v.ok}
    assert set(failed) == {"admission latency", "errors", "cap violation"}
    assert "12 ports in use > capacity 10" in failed["cap violation"]


def test_load_shape_averages_the_offered_rate() -> None:
    shape = LoadShape(rate=300, participants=200, burst_period=15, burst_len=3, burst_factor=2.5)
    ts = [i / 100 for i in range(1500)]
    assert sum(shape.total_rate(t) for t in ts) / len(ts) == pytest.approx(300, rel=0.01)
    assert shape.in_burst(1.0) and not shape.in_burst(5.0)


def test_pool_messages_and_picking() -> None:
    import random

    p = Pool()
    p.apply({"op": "init", "stable": [A], "confs": {A: [{"id": A + ".c00000001", "outage": A, "token": "t"}]},
             "media": [], "epoch": 1.0})
    p.apply({"op": "add", "outage": B, "confs": [{"id": B + ".c00000002", "outage": B, "token": "u"}]})
    assert p.ready and p.churn == [B]
    rng = random.Random(1)
    assert {p.pick_conference(rng).outage for _ in range(50)} == {A, B}  # type: ignore[union-attr]
    p.apply({"op": "end", "outage": B})
    assert p.churn == [] and p.pick_ended(rng).outage == B  # type: ignore[union-attr]
    assert {p.pick_conference(rng).outage for _ in range(20)} == {A}  # type: ignore[union-attr]
    q = Pool()
    q.apply(p.init_message())
    assert q.stable == [A] and list(q.ended) == [B] and q.epoch == 1.0
    assert 1 <= len(draw_group(rng)) <= 6


async def test_watcher_reads_the_trails_and_names_a_bad_preemption(redis: aioredis.Redis, redis_url: str) -> None:
    """A trail where an equally important conference was preempted: the watcher (reading the streams of
    the outages it has seen) flags it, and the verdicts name it beside a passing accounting."""
    await seed_healthy(redis)
    trail = keys.audit(A)
    for fields in ({"type": "declared", "contract": "LT-x-001"},
                   {"type": "conference_created", "conference": "c1", "priority": "3", "reserve_audio": "0",
                    "reserve_video": "0"},
                   {"type": "conference_created", "conference": "c2", "priority": "3", "reserve_audio": "0",
                    "reserve_video": "0"},
                   {"type": "admitted", "participant": "p1", "conference": "c1", "kind": "video"},
                   {"type": "preempted", "participant": "p1", "conference": "c1", "kind": "video", "by": "p2",
                    "by_conference": "c2"},
                   {"type": "admitted", "participant": "p2", "conference": "c2", "kind": "video",
                    "preempted": "p1"},
                   {"type": "refused", "conference": "c2", "kind": "audio", "code": "capacity_exhausted"}):
        await redis.xadd(trail, fields)
    w = CapWatcher(redis_url, [])
    w.sample_ledger_once()      # sees A and B active
    w.poll_trails()
    found = [v for v in w.violation_list() if v.check == "preemption-order"]
    assert len(found) == 1 and found[0].outage == A
    assert "an equally or more important conference was preempted" in found[0].detail
    acc = w.account_trails({"admitted": 3, "preempting": 1, "refused:capacity_exhausted": 1}, [A])
    assert not acc.ok          # locust counted 3 admissions, the trail holds 2
    acc = w.account_trails({"admitted": 2, "preempting": 1, "refused:capacity_exhausted": 1},
                           contract_prefix="LT-x-")
    assert acc.ok, acc.detail
    verdicts = {v.name: v for v in evaluate(_summary(12), w.violation_list(), Slo(), media_users=2,
                                            trail=w.trail_summary([A]), accounting=acc)}
    assert not verdicts["preemption order"].ok and verdicts["audit trail"].ok
    assert verdicts["caps and leaks"].ok
