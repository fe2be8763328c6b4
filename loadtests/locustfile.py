"""Locust scenarios for the Backup+ broker.

Users
* ``HotlineUser`` (one): declares outages, adds conferences, extends windows, restores outages, polls the
  outage list and checks that a second declare on the same contract answers 409 outage_already_active.
* ``ParticipantUser`` (the crowd): meetings of 1-6 people joining one conference at once, mixed video and
  audio, with and without downgrade, holding their ports for a while then leaving (DELETE with each
  participant's own ``participant_token``). Conferences are of mixed importance (priorities 1, 3, 5:
  ``scenario.LOAD_CONFERENCES``) and popularity is skewed so a few outages are saturated (409
  capacity_exhausted, downgrades, preemptions) and the offered rate has periodic bursts. A few meetings
  knock on conferences of restored outages: they must get 410. 429 rate_limited is expected only with
  ``--bp-rate-limited`` (the brokers kept their per-conference admission rate limit).
* ``MediaUser`` (a few): real WebRTC peers (aiortc, in a child process: see media_client.py) that join,
  send 480p video and measure the time to the first remote frame.

Custom statistics (locust's own tables, CSVs and HTML report):
``ADMIT <granted kind>``, ``REFUSE <status code kind>``, ``MEDIA time to first frame`` and friends.
Besides, every admission answer is tallied by outcome (``scenario.admission_outcome``); workers send
their tallies with their stats reports and the master writes the sum into the summary (``tally``), which
the runner compares with the outages' audit trails.

The master (or the single local process) sets the scene on test start: contracts, ``--bp-outages``
outages with three conferences each (priorities 1, 3, 5) and one media conference per media user, then
sends the pool to every worker; the hotline's changes travel worker -> master -> all workers.

Plain locust, several machines (see docs/PERFORMANCE.md)::

    locust -f loadtests/locustfile.py --master --headless -H http://broker:8080 --bp-token T \
        -u 203 -r 50 -t 10m --expect-workers 4 HotlineUser ParticipantUser MediaUser
    locust -f loadtests/locustfile.py --worker --master-host <master>     # on each generator machine
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from typing import Any

import gevent
import gevent.event
import gevent.pool
import locust.stats
from gevent import subprocess as gsubprocess
from locust import FastHttpUser, User, between, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests.scenario import (
    ADMISSION_NAME,
    ADMIT_TYPE,
    CHURN_CONFERENCES,
    LEAVE_NAME,
    LOAD_CONFERENCES,
    MEDIA_PRIORITY,
    MEDIA_TYPE,
    REFUSE_TYPE,
    SLO_ADMISSION_NAME,
    SLO_TYPE,
    TTFF_NAME,
    Conference,
    LoadShape,
    Pool,
    admission_outcome,
    contract_body,
    cycle_seconds,
    declare_body,
    draw_group,
    window_end,
)

log = logging.getLogger("backupplus.loadtest")

# "current" percentiles (progress line, stats history CSV, the plot) over 3 s rather than 10 s: bursts show.
locust.stats.CURRENT_RESPONSE_TIME_PERCENTILE_WINDOW = 3

POOL = Pool()
POOL_READY = gevent.event.Event()
SETUP: dict[str, Any] = {"error": None, "seconds": None}
_host_counter = itertools.count()
_media_counter = itertools.count()
# Admission answers by outcome (scenario.admission_outcome): this process's since its last report to the
# master (workers), and the sum of all processes (the master, or the single local process).
TALLY: Counter[str] = Counter()
TOTAL_TALLY: Counter[str] = Counter()


def tally(keys: list[str]) -> None:
    TALLY.update(keys)


# --- options -----------------------------------------------------------------------------------------
@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser
    g.add_argument("--bp-token", default=os.environ.get("BACKUPPLUS_LOADTEST_TOKEN", ""), is_secret=True,
                   help="operator bearer token (or env BACKUPPLUS_LOADTEST_TOKEN)")
    g.add_argument("--bp-hosts", default="", help="comma-separated broker base URLs to spread users over "
                   "(default: the -H host)")
    g.add_argument("--bp-rate", type=float, default=300.0, help="admission attempts offered per second")
    g.add_argument("--bp-participants", type=int, default=200,
                   help="number of ParticipantUsers sharing --bp-rate")
    g.add_argument("--bp-outages", type=int, default=24, help="outages that live the whole run")
    g.add_argument("--bp-churn", type=int, default=3, help="extra outages the hotline declares and restores")
    g.add_argument("--bp-churn-life", type=float, default=12.0, help="seconds a hotline outage lives")
    g.add_argument("--bp-burst-period", type=float, default=15.0)
    g.add_argument("--bp-burst-len", type=float, default=3.0)
    g.add_argument("--bp-burst-factor", type=float, default=2.5)
    g.add_argument("--bp-media-users", type=int, default=2, help="MediaUsers (fixed count)")
    g.add_argument("--bp-media-peers", type=int, default=2, help="WebRTC peers per media probe")
    g.add_argument("--bp-media-fps", type=float, default=15.0)
    g.add_argument("--bp-media-hold", type=float, default=3.0)
    g.add_argument("--bp-media-nice", type=int, default=0, help="niceness of the WebRTC probe processes")
    g.add_argument("--bp-load-seconds", type=float, default=0.0,
                   help="seconds after the scene is set when users stop starting meetings and probes, so that "
                        "everyone has left when the run time ends (0 = never: users leave when stopped)")
    g.add_argument("--bp-warmup", type=float, default=0.0,
                   help="seconds after the scene is set before admissions count for the SLO entry")
    g.add_argument("--bp-run-id", default="", help="prefix of the contracts this run creates (default random)")
    g.add_argument("--bp-summary", default="", help="master: write a JSON summary here on quit")
    g.add_argument("--bp-progress", default="", help="master: rewrite a JSON progress file every 2 s")
    g.add_argument("--bp-cleanup", action="store_true", help="master: restore this run's outages on quit")
    g.add_argument("--bp-rate-limited", action="store_true",
                   help="the brokers keep their per-conference admission rate limit: 429 rate_limited (with "
                        "Retry-After) is an expected refusal, not an error")


def _opt(env: Any, name: str, default: Any = None) -> Any:
    opts = getattr(env, "parsed_options", None)
    return getattr(opts, name, default) if opts is not None else default


def _shape(env: Any) -> LoadShape:
    return LoadShape(
        rate=_opt(env, "bp_rate", 300.0),
        participants=_opt(env, "bp_participants", 200),
        burst_period=_opt(env, "bp_burst_period", 15.0),
        burst_len=_opt(env, "bp_burst_len", 3.0),
        burst_factor=_opt(env, "bp_burst_factor", 2.5),
    )


def _hosts(env: Any) -> list[str]:
    hosts = [h.strip().rstrip("/") for h in (_opt(env, "bp_hosts", "") or "").split(",") if h.strip()]
    return hosts or [str(env.host).rstrip("/")]


def _op_headers(env: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {_opt(env, 'bp_token', '')}"}


def _problem(resp: Any) -> dict[str, Any]:
    try:
        body = resp.json()
        return body if isinstance(body, dict) else {}
    except Exception:  # noqa: BLE001
        return {}


def _outage_of(child_id: str) -> str | None:
    head, sep, _ = child_id.partition(".")
    return head if sep else None


def _fire(env: Any, rtype: str, name: str, ms: float, exc: Exception | None = None) -> None:
    env.events.request.fire(request_type=rtype, name=name, response_time=ms, response_length=0,
                            exception=exc, context={})


# --- pool distribution -------------------------------------------------------------------------------
def _apply(msg: dict[str, Any]) -> None:
    POOL.apply(msg)
    if POOL.ready:
        POOL_READY.set()


def publish(env: Any, msg: dict[str, Any]) -> None:
    """A pool change: to the master, which applies it and forwards it to every worker."""
    runner = env.runner
    if isinstance(runner, WorkerRunner):
        runner.send_message("bp_pool_update", msg)
    elif isinstance(runner, MasterRunner):
        _apply(msg)
        runner.send_message("bp_pool", msg)
    else:
        _apply(msg)


@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:
    runner = environment.runner
    MediaUser.fixed_count = max(0, int(_opt(environment, "bp_media_users", 2)))
    if isinstance(runner, MasterRunner):
        def on_update(environment: Any, msg: Any, **_: Any) -> None:
            _apply(msg.data)
            environment.runner.send_message("bp_pool", msg.data)

        def on_request(environment: Any, msg: Any, **_: Any) -> None:
            if POOL.ready:
                environment.runner.send_message("bp_pool", POOL.init_message(), client_id=msg.node_id)

        runner.register_message("bp_pool_update", on_update)
        runner.register_message("bp_pool_request", on_request)
    elif isinstance(runner, WorkerRunner):
        runner.register_message("bp_pool", lambda environment, msg, **_: _apply(msg.data))


@events.report_to_master.add_listener
def _tally_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    data["bp_tally"] = dict(TALLY)
    TALLY.clear()


@events.worker_report.add_listener
def _tally_from_worker(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    TOTAL_TALLY.update(data.get("bp_tally") or {})


def total_tally(env: Any) -> dict[str, int]:
    """The admission outcomes of every process (a worker's own never reach here: they went to the master)."""
    if not isinstance(env.runner, MasterRunner):
        TOTAL_TALLY.update(TALLY)
        TALLY.clear()
    return dict(TOTAL_TALLY)


def wait_for_pool(user: User) -> None:
    deadline = time.monotonic() + 120
    while not POOL_READY.wait(timeout=5):
        if isinstance(user.environment.runner, WorkerRunner):
            user.environment.runner.send_message("bp_pool_request", None)
        if time.monotonic() > deadline:
            raise RuntimeError("no outage pool from the master after 120 s")


def _elapsed() -> float:
    return time.time() - (POOL.epoch or time.time())


def _winding_down(env: Any, margin: float = 0.0) -> bool:
    """True once no new meeting (or probe, ``margin`` s long) may start: the load phase is over."""
    end = float(_opt(env, "bp_load_seconds", 0.0) or 0.0)
    return end > 0 and _elapsed() + margin >= end


# --- scene setup (master or local runner) ------------------------------------------------------------
@events.test_start.add_listener
def _on_test_start(environment: Any, **_kw: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    t0 = time.monotonic()
    try:
        msg = _set_scene(environment)
    except Exception as exc:  # noqa: BLE001
        SETUP["error"] = f"{type(exc).__name__}: {exc}"
        log.error("load test setup failed: %s", SETUP["error"])
        gevent.spawn_later(0.1, environment.runner.quit)
        return
    SETUP["seconds"] = round(time.monotonic() - t0, 2)
    SETUP["run_id"] = msg["run_id"]
    log.info("scene set in %.1f s: %d outages, %d media conferences", SETUP["seconds"],
             len(msg["stable"]), len(msg["media"]))
    publish(environment, msg)
    if _opt(environment, "bp_progress"):
        gevent.spawn(_progress_loop, environment)


def _set_scene(env: Any) -> dict[str, Any]:
    import requests

    if not _opt(env, "bp_token"):
        raise RuntimeError("no operator token: pass --bp-token or set BACKUPPLUS_LOADTEST_TOKEN")
    base = _hosts(env)[0]
    run_id = _opt(env, "bp_run_id") or f"{random.getrandbits(24):06x}"
    n_out = int(_opt(env, "bp_outages", 24))
    n_churn = int(_opt(env, "bp_churn", 3))
    n_media = int(_opt(env, "bp_media_users", 2))
    rng = random.Random()
    s = requests.Session()
    s.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
    s.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=16))
    s.headers.update(_op_headers(env))
    pool = gevent.pool.Pool(16)

    def call(method: str, path: str, ok: tuple[int, ...], **kw: Any) -> tuple[int, dict[str, Any]]:
        r = s.request(method, base + path, timeout=30, **kw)
        body = r.json() if r.content and "json" in r.headers.get("content-type", "") else {}
        if r.status_code not in ok:
            raise RuntimeError(f"{method} {path} -> {r.status_code} {body.get('code', '')} "
                               f"{body.get('detail', r.text[:200])}")
        return r.status_code, body

    contracts = [(f"LT-{run_id}-{i:03d}", f"LT{run_id.upper()}{i:03d}") for i in range(n_out + 2 * n_churn)]
    pool.map(lambda ci: call("PUT", f"/v1/contracts/{ci[1][0]}", (200, 201),
                             json=contract_body(ci[1][0], ci[1][1], ci[0])), list(enumerate(contracts)))

    def declare(c: tuple[str, str]) -> str:
        status, body = call("POST", "/v1/outages", (201, 409), json=declare_body(c[0], c[1], rng),
                            headers={"Idempotency-Key": f"lt-{run_id}-{c[0]}"})
        if status == 409:
            if body.get("code") != "outage_already_active":
                raise RuntimeError(f"declare {c[0]}: 409 {body.get('code')}")
            return str(body["outage_id"])
        return str(body["id"])

    stable = pool.map(declare, contracts[:n_out])

    def conf(args: tuple[str, str, int, dict[str, int] | None]) -> Conference:
        oid, title, priority, reserve = args
        body: dict[str, Any] = {"title": title, "priority": priority}
        if reserve:
            body["reserve"] = reserve
        _, c = call("POST", f"/v1/outages/{oid}/conferences", (201,), json=body)
        return Conference(str(c["id"]), oid, str(c["join_token"]), title, priority=priority)

    jobs: list[tuple[str, str, int, dict[str, int] | None]] = []
    for oid in stable:
        jobs += [(oid, title, prio, reserve) for title, prio, reserve in LOAD_CONFERENCES]
    media_jobs = [(stable[i % len(stable)], "Media probe", MEDIA_PRIORITY,
                   {"video": int(_opt(env, "bp_media_peers", 2))}) for i in range(n_media)]
    confs = pool.map(conf, jobs)
    media = pool.map(conf, media_jobs)
    for c in media:
        c.media = True
    by_outage: dict[str, list[dict[str, Any]]] = {o: [] for o in stable}
    for c in confs:
        by_outage[c.outage].append(c.to_json())
    return {
        "op": "init", "stable": stable, "churn": [], "ended": {}, "confs": by_outage,
        "media": [c.to_json() for c in media],
        "churn_contracts": [{"number": n, "serial": sn} for n, sn in contracts[n_out:]],
        "epoch": time.time(), "run_id": run_id,
    }


def _progress_loop(env: Any) -> None:
    path = _opt(env, "bp_progress")
    t0 = time.time()
    while True:
        gevent.sleep(2.0)
        stats = env.runner.stats
        adm = stats.get(ADMISSION_NAME, "POST")
        refused = sum(e.num_requests for e in stats.entries.values() if e.method == REFUSE_TYPE)
        ttff = stats.get(TTFF_NAME, MEDIA_TYPE)
        doc = {
            "t": round(time.time() - t0, 1), "users": env.runner.user_count, "state": env.runner.state,
            "admissions": adm.num_requests, "admissions_per_s": round(adm.current_rps, 1),
            "admission_p99_ms": adm.get_current_response_time_percentile(0.99),
            "refused": refused, "failures": stats.total.num_failures,
            "ttff_p95_ms": ttff.get_response_time_percentile(0.95) if ttff.num_requests else None,
            "outages": len(POOL.stable) + len(POOL.churn),
        }
        try:
            with open(path + ".tmp", "w") as f:
                json.dump(doc, f)
            os.replace(path + ".tmp", path)
        except OSError:
            pass


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kw: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    if _opt(environment, "bp_cleanup") and POOL.ready:
        import requests

        base = _hosts(environment)[0]
        for oid in POOL.stable + POOL.churn:
            with contextlib.suppress(Exception):
                requests.post(f"{base}/v1/outages/{oid}/restore", headers=_op_headers(environment), timeout=10)
    path = _opt(environment, "bp_summary")
    if path:
        write_summary(environment, path)


def write_summary(env: Any, path: str) -> None:
    stats = env.runner.stats
    entries = []
    for e in list(stats.entries.values()):
        dur = max(1e-9, (e.last_request_timestamp or e.start_time) - e.start_time)
        entries.append({
            "type": e.method, "name": e.name, "requests": e.num_requests, "failures": e.num_failures,
            "avg_ms": round(e.avg_response_time, 2), "min_ms": e.min_response_time or 0,
            "max_ms": e.max_response_time,
            **{f"p{k}_ms": (e.get_response_time_percentile(v) if e.num_requests else None)
               for k, v in (("50", 0.5), ("95", 0.95), ("99", 0.99), ("999", 0.999))},
            "rps": round(e.num_requests / dur, 2) if e.num_requests > 1 else 0.0,
            "first_at": e.start_time, "last_at": e.last_request_timestamp,
        })
    total = stats.total
    doc = {
        "setup_error": SETUP["error"], "setup_seconds": SETUP["seconds"], "epoch": POOL.epoch,
        "warmup": float(_opt(env, "bp_warmup", 0.0)), "load_seconds": float(_opt(env, "bp_load_seconds", 0.0)),
        "entries": entries,
        "errors": [{"type": v.method, "name": v.name, "error": str(v.error), "occurrences": v.occurrences}
                   for v in stats.errors.values()],
        "total": {"requests": total.num_requests, "failures": total.num_failures},
        "start": total.start_time, "end": total.last_request_timestamp,
        "outages": {"stable": POOL.stable, "churn": POOL.churn, "ended": list(POOL.ended)},
        "run_id": SETUP.get("run_id"),
        "tally": total_tally(env),
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


# --- users -------------------------------------------------------------------------------------------
class _BrokerUser(FastHttpUser):
    abstract = True
    network_timeout = 30.0
    connection_timeout = 10.0

    def __init__(self, environment: Any) -> None:
        hosts = _hosts(environment)
        self.host = hosts[next(_host_counter) % len(hosts)]
        super().__init__(environment)
        self.rng = random.Random()


class ParticipantUser(_BrokerUser):
    """Meetings: a group joins one conference at once, holds, leaves; paced to offer --bp-rate in total."""

    weight = 100
    concurrency = 8

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.shape = _shape(environment)
        self._next = 0.0
        self.held: dict[str, str] = {}   # participant id -> its participant token

    def wait_time(self) -> float:  # type: ignore[override]
        return max(0.0, self._next - time.monotonic())

    def on_start(self) -> None:
        wait_for_pool(self)
        # spread the first meetings over one cycle so that users do not march in step
        self._next = time.monotonic() + self.rng.uniform(0, 2.6 / max(self.shape.per_user_rate(0), 1e-3))

    def on_stop(self) -> None:
        for pid, token in list(self.held.items()):
            self._leave(pid, token)

    @task
    def meeting(self) -> None:
        if _winding_down(self.environment):
            self._next = time.monotonic() + 1.0
            return
        t = _elapsed()
        knock_ended = bool(POOL.ended) and self.rng.random() < 0.04
        conf = POOL.pick_ended(self.rng) if knock_ended else POOL.pick_conference(self.rng, self.shape, t)
        group = draw_group(self.rng)
        start = time.monotonic()
        cycle = cycle_seconds(len(group), self.shape.per_user_rate(t), self.rng)
        self._next = start + cycle
        if conf is None:
            return
        greenlets = [gevent.spawn(self._join, conf, spec.kind, spec.downgrade, knock_ended) for spec in group]
        gevent.joinall(greenlets)
        admitted = [g.value for g in greenlets if g.value]
        if admitted:
            hold = self.rng.uniform(0.3, 0.7) * cycle
            gevent.sleep(max(0.0, start + hold - time.monotonic()))
            gevent.joinall([gevent.spawn(self._leave, pid, self.held.get(pid, "")) for pid in admitted])

    def _join(self, conf: Conference, kind: str, downgrade: bool, must_be_ended: bool) -> str | None:
        body = {"display_name": f"load {self.rng.randrange(10**6)}", "kind": kind, "downgrade": downgrade}
        t0 = time.perf_counter()
        with self.client.post(f"/v1/conferences/{conf.id}/participants", json=body, name=ADMISSION_NAME,
                              headers={"Authorization": f"Bearer {conf.token}"}, catch_response=True) as r:
            ms = (time.perf_counter() - t0) * 1000
            status = r.status_code or 0
            data = _problem(r)
            tally(admission_outcome(status, data.get("code"), kind, data.get("kind"), bool(data.get("preempted"))))
            if _elapsed() >= float(_opt(self.environment, "bp_warmup", 0.0)):
                _fire(self.environment, SLO_TYPE, SLO_ADMISSION_NAME, ms)
            if status == 201:
                pid, granted, ptoken = data.get("id"), data.get("kind"), data.get("participant_token")
                if pid and ptoken:
                    self.held[str(pid)] = str(ptoken)
                if must_be_ended:
                    r.failure(f"admitted into conference {conf.id} of a restored outage")
                elif not pid or granted not in ("video", "audio") or not ptoken:
                    r.failure(f"201 without id/kind/participant_token: {data}")
                elif granted != kind and not (kind == "video" and granted == "audio" and downgrade):
                    r.failure(f"asked {kind} (downgrade={downgrade}), granted {granted}")
                else:
                    r.success()
                    label = granted if granted == kind else "video->audio (downgraded)"
                    _fire(self.environment, ADMIT_TYPE, label, ms)
                    if data.get("preempted"):
                        _fire(self.environment, ADMIT_TYPE, f"{granted} (preempting)", ms)
                return str(pid) if pid and ptoken else None
            code = data.get("code")
            if status == 409 and code == "capacity_exhausted" and not must_be_ended:
                if not r.headers.get("Retry-After"):
                    r.failure("409 capacity_exhausted without Retry-After")
                else:
                    r.success()
                    _fire(self.environment, REFUSE_TYPE, f"409 capacity_exhausted ({kind})", ms)
            elif status == 410 and code == "outage_ended" and (must_be_ended or conf.outage not in POOL.stable):
                r.success()
                _fire(self.environment, REFUSE_TYPE, "410 outage_ended", ms)
            elif status == 429 and code == "rate_limited" and _opt(self.environment, "bp_rate_limited", False):
                if not r.headers.get("Retry-After"):
                    r.failure("429 rate_limited without Retry-After")
                else:
                    r.success()
                    _fire(self.environment, REFUSE_TYPE, "429 rate_limited", ms)
            else:
                r.failure(f"{status} {code or ''}".strip() + (" (outage was restored: 410 expected)"
                                                             if must_be_ended else ""))
            return None

    def _leave(self, pid: str, token: str) -> None:
        self.held.pop(pid, None)
        with self.client.delete(f"/v1/participants/{pid}", name=LEAVE_NAME,
                                headers={"Authorization": f"Bearer {token}"}, catch_response=True) as r:
            if r.status_code == 204:
                r.success()
            elif r.status_code in (404, 410) and self._outage_ended(_outage_of(pid)):
                r.success()   # restored by the hotline meanwhile: every participant was already removed
            else:
                r.failure(f"{r.status_code} {_problem(r).get('code', '')}".strip())

    def _outage_ended(self, oid: str | None) -> bool:
        if oid is None:
            return False
        if oid in POOL.ended:
            return True
        r = self.client.get(f"/v1/outages/{oid}", name="GET /v1/outages/[id]", headers=_op_headers(self.environment))
        return r.status_code == 200 and _problem(r).get("state") != "active"


class HotlineUser(_BrokerUser):
    """One hotline agent: declares, adds conferences, extends, restores, watches the list."""

    fixed_count = 1
    wait_time = between(1.0, 3.0)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.mine: dict[str, tuple[str, float]] = {}   # outage -> (contract, declared at)
        self.retrying: set[str] = set()                 # outages whose restore failed once
        self.h = _op_headers(environment)

    def on_start(self) -> None:
        wait_for_pool(self)

    def on_stop(self) -> None:
        pass   # hotline outages stay for the watcher's final look; the runner (or --bp-cleanup) restores

    @task(3)
    def churn(self) -> None:
        if _winding_down(self.environment):
            return
        target = int(_opt(self.environment, "bp_churn", 3))
        life = float(_opt(self.environment, "bp_churn_life", 12.0))
        oldest = min(self.mine.items(), key=lambda kv: kv[1][1], default=None)
        if oldest and time.monotonic() - oldest[1][1] > life:
            self._restore(oldest[0])
        elif len(self.mine) < target:
            self._declare()

    def _declare(self) -> None:
        busy = {c for c, _ in self.mine.values()}
        free = [c for c in POOL.churn_contracts if c["number"] not in busy]
        if not free:
            return
        c = self.rng.choice(free)
        with self.client.post("/v1/outages", json=declare_body(c["number"], c["serial"], self.rng),
                              headers=self.h, name="POST /v1/outages", catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"{r.status_code} {_problem(r).get('code', '')}")
                return
            oid = str(_problem(r)["id"])
        self.mine[oid] = (c["number"], time.monotonic())
        confs = []
        for title, priority, reserve in CHURN_CONFERENCES:
            body: dict[str, Any] = {"title": title, "priority": priority}
            if reserve:
                body["reserve"] = reserve
            with self.client.post(f"/v1/outages/{oid}/conferences", json=body, headers=self.h,
                                  name="POST /v1/outages/[id]/conferences", catch_response=True) as r:
                if r.status_code != 201:
                    r.failure(f"{r.status_code} {_problem(r).get('code', '')}")
                    continue
                d = _problem(r)
                confs.append(Conference(str(d["id"]), oid, str(d["join_token"]), title,
                                        priority=priority).to_json())
        publish(self.environment, {"op": "add", "outage": oid, "confs": confs})

    def _restore(self, oid: str) -> None:
        with self.client.post(f"/v1/outages/{oid}/restore", headers=self.h, json={},
                              name="POST /v1/outages/[id]/restore", catch_response=True) as r:
            code = _problem(r).get("code", "")
            if r.status_code == 409 and code == "outage_not_active" and oid in self.retrying:
                r.success()   # an earlier attempt restored it but its answer was lost (503)
            elif r.status_code != 200:
                r.failure(f"{r.status_code} {code}")
                self.retrying.add(oid)
                return   # not restored, or not known to be: it stays ours, tried again at the next turn
            elif _problem(r).get("state") not in (None, "restored"):
                r.failure(f"state after restore: {_problem(r).get('state')}")
        self.mine.pop(oid, None)
        self.retrying.discard(oid)
        # only now: a meeting told that this outage ended must get 410
        publish(self.environment, {"op": "end", "outage": oid})

    @task(2)
    def extend(self) -> None:
        active = POOL.stable + list(self.mine)
        if not active:
            return
        oid = self.rng.choice(active)
        with self.client.post(f"/v1/outages/{oid}/extend", headers=self.h,
                              json={"window_ends_at": window_end(days=self.rng.uniform(3, 6))},
                              name="POST /v1/outages/[id]/extend", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code} {_problem(r).get('code', '')}")

    @task(2)
    def console(self) -> None:
        with self.client.get("/v1/outages?state=active", headers=self.h, name="GET /v1/outages?state=active",
                             catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}")

    @task(1)
    def duplicate_declare(self) -> None:
        """A second call about a server already down: 409 outage_already_active naming the outage."""
        if not self.mine:
            return
        oid, (number, _) = self.rng.choice(list(self.mine.items()))
        serial = next((c["serial"] for c in POOL.churn_contracts if c["number"] == number), "")
        with self.client.post("/v1/outages", json=declare_body(number, serial, self.rng), headers=self.h,
                              name="POST /v1/outages (duplicate)", catch_response=True) as r:
            p = _problem(r)
            if r.status_code == 409 and p.get("code") == "outage_already_active" and p.get("outage_id") == oid:
                r.success()
            else:
                r.failure(f"expected 409 outage_already_active {oid}, got {r.status_code} {p.get('code')}")


class MediaUser(User):
    """Real WebRTC peers in a child process; fires MEDIA events (time to first frame, offer, join)."""

    fixed_count = 2
    wait_time = between(3.0, 6.0)   # probes come and go: a media-heavy broker is not what is measured here

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        hosts = _hosts(environment)
        self.index = next(_media_counter)
        self.base = hosts[self.index % len(hosts)]
        self.proc: Any = None
        self.jobs = itertools.count(1)

    def on_start(self) -> None:
        wait_for_pool(self)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        nice = int(_opt(self.environment, "bp_media_nice", 0) or 0)
        self.proc = gsubprocess.Popen([sys.executable, "-m", "loadtests.media_client"], stdin=gsubprocess.PIPE,
                                      stdout=gsubprocess.PIPE, env=env, text=True, bufsize=1)
        if nice:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, nice)
        with gevent.Timeout(60, RuntimeError("media client did not start within 60 s")):
            line = self.proc.stdout.readline()
        if not line.strip().startswith("{"):
            raise RuntimeError(f"media client: {line!r}")

    def on_stop(self) -> None:
        # EOF: the client finishes (and cleans up) its current job, then exits by itself; SIGTERM makes it
        # cut the job short, still closing its peer connections and DELETEing its participants.
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
            try:
                self.proc.wait(2)
            except Exception:  # noqa: BLE001
                self.proc.terminate()

    @task
    def probe(self) -> None:
        if not POOL.media:
            gevent.sleep(1)
            return
        conf = POOL.media[self.index % len(POOL.media)]
        hold = float(_opt(self.environment, "bp_media_hold", 3.0))
        if _winding_down(self.environment, margin=hold + 3.0):
            gevent.sleep(1.0)
            return
        job = {"job": next(self.jobs), "base": self.base, "conf": conf.id, "token": conf.token,
               "peers": int(_opt(self.environment, "bp_media_peers", 2)),
               "fps": float(_opt(self.environment, "bp_media_fps", 15.0)), "hold": hold, "timeout": 10.0}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        with gevent.Timeout(hold + 60, RuntimeError("media client gave no result within the hold + 60 s")):
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("media client exited")
        env = self.environment
        for peer in json.loads(line)["peers"]:
            # a probe whose join got no answer (exception) may still have been decided: "unknown"
            tally(admission_outcome(int(peer.get("join_status") or 0), peer.get("join_code"), "video",
                                    peer.get("granted"), bool(peer.get("preempting"))))
            if "join_ms" in peer:
                _fire(env, MEDIA_TYPE, "join (video, no downgrade)", peer["join_ms"],
                      None if peer.get("join_status") == 201 else Exception(peer.get("error")))
            if "offer_ms" in peer:
                _fire(env, MEDIA_TYPE, "offer/answer", peer["offer_ms"])
            if peer.get("ok"):
                _fire(env, MEDIA_TYPE, TTFF_NAME, peer["ttff_ms"])
            elif peer.get("join_status") == 201 or "join_status" not in peer:
                _fire(env, MEDIA_TYPE, TTFF_NAME, peer.get("ttff_ms", 10000.0), Exception(peer.get("error")))
