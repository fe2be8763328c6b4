"""Admission benchmark: throughput and latency of the broker's admission path, beside baselines.

Run: `.venv/bin/python benchmarks/admission.py` (or `make bench`). It starts its own redis-server
and broker processes (no media plane) on loopback and prints, for 1 and 2 broker processes:

(a) saturation: admit+leave cycles per second with 32 concurrent clients, beside a bare aiohttp
    server (same two requests, no work) measured the same way in the same run;
(b) latency: admission p50/p99 at a fixed offered rate (open loop: each request is timed from the
    moment it was due, so a stalled server cannot hide its queue) of 500 and 1,000 admissions/s,
    beside one Redis round trip (PING) measured in the same run;
(c) Redis commands per admission, from INFO commandstats (the target is one script call);
(d) the cost of ``--durability strict``: one broker on a primary with one replica, standard beside
    strict (each declare and admission WAITs for the replica), and one broker on a Redis that fsyncs
    each write (``appendfsync always``, what strict gives the private Redis); saturation and p50/p99
    at 500 admissions/s offered, each (``--no-durability`` skips it);
(e) preemption: admission p50/p99 at ``--preempt-rate`` (default 200/s) offered, side by side in one run,
    into outages with a free port (no preemption) and into full outages where each admission, to a
    priority-1 conference, preempts a participant of a priority-5 conference (each cycle then leaves and
    refills the outage, untimed); the answers' ``preempted`` flag tells how many really preempted.

The brokers run with the per-conference admission rate limit lifted (BACKUPPLUS_ADMISSION_RATE_*: the
benchmark pushes thousands of joins a second through a few links) and a long admission lease (the
participants here never send an offer). Leaves use each participant's own ``participant_token``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra.redisproc import RedisServer, free_port

TOKEN = "bench-operator-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Every broker of the benchmark: no per-conference rate limit, leases that outlast a measurement.
BROKER_ENV = {"BACKUPPLUS_ADMISSION_RATE_BURST": "1000000", "BACKUPPLUS_ADMISSION_RATE_PER_S": "1000000",
              "BACKUPPLUS_ADMISSION_LEASE_S": "600"}

BARE_SERVER = r"""
import sys
from aiohttp import web
async def admit(request):
    await request.read()
    return web.json_response({"id": "o-000000000000.p00000000", "kind": "audio", "participant_token": "p"},
                             status=201)
async def leave(request):
    return web.Response(status=204)
async def ready(request):
    return web.json_response({"status": "ready"})
app = web.Application()
app.add_routes([web.post("/v1/conferences/{id}/participants", admit), web.delete("/v1/participants/{id}", leave),
                web.get("/healthz", ready)])
loop = None
if sys.argv[2] == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None, loop=loop)
"""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def start_broker(redis_url: str, port: int, loop: str = "asyncio", **env_extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BACKUPPLUS_OPERATOR_TOKENS": TOKEN, "BACKUPPLUS_LOG_LEVEL": "WARNING", "BACKUPPLUS_LOOP": loop,
           **BROKER_ENV, **env_extra}
    return subprocess.Popen(
        [sys.executable, "-m", "backupplus.cli", "serve", "--no-media", "--no-turn", "--redis-url", redis_url, "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def healthy(base: str) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(base + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{base} did not come up")


def leave_headers(payload: dict) -> dict[str, str]:
    """A participant leaves with its own token (a join token gets 403 there)."""
    return {"Authorization": f"Bearer {payload['participant_token']}"}


async def seed(base: str, outages: int, prefix: str = "",
               conference_bodies: tuple[dict, ...] = ({"title": "bench"},)) -> list[tuple[str, str]]:
    """Contracts, outages and their conferences (one per body); returns (conference id, join token),
    outage by outage."""
    today = date.today()
    conferences = []
    async with aiohttp.ClientSession(headers=AUTH) as s:
        for i in range(outages):
            number = f"BENCH-{prefix}{i}"
            contract = {
                "number": number, "client": {"company": f"Bench {i}"}, "status": "active", "term_years": 3,
                "start_date": (today - timedelta(days=30)).isoformat(),
                "equipment": [{"serial": f"S{i}", "brand": "Poly", "model": "RMX", "kind": "video_bridge",
                               "warranty_until": (today + timedelta(days=365)).isoformat()}],
            }
            async with s.put(f"{base}/v1/contracts/{number}", json=contract) as r:
                assert r.status in (200, 201), await r.text()
            async with s.post(f"{base}/v1/outages", json={"contract": number, "serial": f"S{i}",
                                                          "ticket": {"priority": "urgent", "site": "Aix", "contact": "J. Martin",
                                                                     "description": "bench"}}) as r:
                assert r.status == 201, await r.text()
                outage = await r.json()
            for body in conference_bodies:
                async with s.post(f"{base}/v1/outages/{outage['id']}/conferences", json=body) as r:
                    conf = await r.json()
                    assert r.status == 201, conf
                conferences.append((conf["id"], conf["join_token"]))
    return conferences


async def saturation(bases: list[str], conferences: list[tuple[str, str]], seconds: float, clients: int = 32) -> float:
    """Admit+leave cycles per second, `clients` concurrent loops, spread over the servers."""
    done = 0
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def loop(i: int) -> None:
            nonlocal done
            base = bases[i % len(bases)]
            cid, token = conferences[i % len(conferences)]
            h = {"Authorization": f"Bearer {token}"}
            body = {"display_name": f"c{i}", "kind": "audio" if i % 2 else "video"}
            while time.monotonic() < stop_at:
                async with s.post(f"{base}/v1/conferences/{cid}/participants", json=body, headers=h) as r:
                    payload = await r.json()
                    if r.status != 201:
                        raise RuntimeError(f"admission failed: {r.status} {payload}")
                async with s.delete(f"{base}/v1/participants/{payload['id']}", headers=leave_headers(payload)) as r:
                    await r.read()
                done += 1

        await asyncio.gather(*(loop(i) for i in range(clients)))
    return done / seconds


async def open_loop(bases: list[str], conferences: list[tuple[str, str]], rate: float, seconds: float) -> dict[str, float]:
    """Admissions at a fixed offered rate; latency from the moment each was due."""
    latencies: list[float] = []
    errors = 0
    refused: dict[str, int] = {}  # status (or the client error) -> count, of those not admitted
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def one(n: int, due: float) -> None:
            nonlocal errors
            base = bases[n % len(bases)]
            cid, token = conferences[n % len(conferences)]
            h = {"Authorization": f"Bearer {token}"}
            try:
                async with s.post(f"{base}/v1/conferences/{cid}/participants",
                                  json={"display_name": "o", "kind": "audio"}, headers=h) as r:
                    payload = await r.json()
                    latencies.append(time.perf_counter() - due)
                    if r.status != 201:
                        errors += 1
                        refused[str(r.status)] = refused.get(str(r.status), 0) + 1
                        return
                async with s.delete(f"{base}/v1/participants/{payload['id']}", headers=leave_headers(payload)) as r:
                    await r.read()
            except aiohttp.ClientError as exc:
                errors += 1
                refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for n in range(total):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
    ms = [x * 1000 for x in latencies]
    return {"p50": pct(ms, 50), "p99": pct(ms, 99), "n": len(ms), "errors": errors, "refused": refused}


CAPACITY = {"audio": 8, "video": 10}
HIGH, LOW = {"title": "crisis room", "priority": 1}, {"title": "all hands", "priority": 5}


async def _admit(s: aiohttp.ClientSession, base: str, conference: tuple[str, str], kind: str) -> tuple[int, dict]:
    cid, token = conference
    async with s.post(f"{base}/v1/conferences/{cid}/participants", headers={"Authorization": f"Bearer {token}"},
                      json={"display_name": "b", "kind": kind, "downgrade": False}) as r:
        return r.status, await r.json()


async def fill(base: str, pairs: list[tuple[tuple[str, str], tuple[str, str]]]) -> int:
    """Every port of each outage taken by its priority-5 conference; returns how many were admitted."""
    async with aiohttp.ClientSession() as s:
        answers = await asyncio.gather(*(_admit(s, base, low, kind) for _, low in pairs
                                         for kind, n in CAPACITY.items() for _ in range(n)))
    return sum(1 for status, _ in answers if status == 201)


async def preempting_open_loop(base: str, pairs: list[tuple[tuple[str, str], tuple[str, str]]], rate: float,
                               seconds: float) -> dict:
    """Admissions to the priority-1 conference of each outage at a fixed offered rate (audio and video in
    turn), timed from the moment each was due; each cycle then leaves and asks a port for the priority-5
    conference (untimed). Into full outages (``fill``): they are full of priority-5 participants, so each admission
    preempts one, and that last call refills the port so that the next one preempts again. Otherwise the
    admission finds a free port, and the last call is refused (the priority-5 conference has a ``max`` of
    0): both cases make the same three calls per cycle, so the broker serves the same call rate."""
    latencies: list[float] = []
    preempting: list[float] = []
    statuses: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def one(n: int, due: float) -> None:
            high, low = pairs[n % len(pairs)]
            kind = "audio" if (n // len(pairs)) % 2 == 0 else "video"
            try:
                status, payload = await _admit(s, base, high, kind)
                ms = (time.perf_counter() - due) * 1000
                latencies.append(ms)
                key = f"{status} {payload.get('code', '')}".strip() + (" preempting" if payload.get("preempted") else "")
                statuses[key] = statuses.get(key, 0) + 1
                if status != 201:
                    return
                if payload.get("preempted"):
                    preempting.append(ms)
                async with s.delete(f"{base}/v1/participants/{payload['id']}", headers=leave_headers(payload)) as r:
                    await r.read()
                await _admit(s, base, low, payload["kind"])
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1

        tasks = []
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
    return {"latencies": latencies, "preempting": preempting, "answers": statuses}


async def preemption_cost(base: str, args: argparse.Namespace) -> dict:
    """(e): the same admissions at the same offered rate, with a free port and into full outages."""
    out: dict = {"rate": args.preempt_rate}
    free = await seed(base, args.outages, prefix="PF",
                      conference_bodies=(HIGH, {**LOW, "max": {"audio": 0, "video": 0}}))
    full = await seed(base, args.outages, prefix="PP", conference_bodies=(HIGH, LOW))
    free_pairs = list(zip(free[::2], free[1::2], strict=True))
    full_pairs = list(zip(full[::2], full[1::2], strict=True))
    out["filled_ports"] = await fill(base, full_pairs)
    setups = (("free port", free_pairs), ("full, preempting", full_pairs))
    for _, pairs in setups:   # warm-up, untimed: the broker's first requests, the scripts' first calls
        await preempting_open_loop(base, pairs, args.preempt_rate, 1.0)
    runs: dict[str, dict] = {label: {"latencies": [], "preempting": [], "answers": {}} for label, _ in setups}
    for _ in range(args.rounds):   # interleaved, so the machine's background load hits both alike
        for label, pairs in setups:
            r = await preempting_open_loop(base, pairs, args.preempt_rate, args.seconds)
            runs[label]["latencies"] += r["latencies"]
            runs[label]["preempting"] += r["preempting"]
            for k, v in r["answers"].items():
                runs[label]["answers"][k] = runs[label]["answers"].get(k, 0) + v
    for label, r in runs.items():
        lat, pre = r["latencies"], r["preempting"]
        row = {"p50": pct(lat, 50), "p99": pct(lat, 99), "n": len(lat),
               "preempting": {"p50": pct(pre, 50), "p99": pct(pre, 99), "n": len(pre)}, "answers": r["answers"]}
        out[label] = row
        print(f"(e) 1 broker at {args.preempt_rate:g}/s offered, {label}: admission p50 {row['p50']:.2f} ms  "
              f"p99 {row['p99']:.2f} ms over {len(lat)}; of which preempting: {len(pre)} (p50 "
              f"{row['preempting']['p50']:.2f} ms  p99 {row['preempting']['p99']:.2f} ms); answers {r['answers']}",
              flush=True)
    return out


async def redis_round_trip(url: str, n: int = 3000) -> dict[str, float]:
    client = aioredis.Redis.from_url(url)
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await client.ping()
        samples.append((time.perf_counter() - t) * 1000)
    await client.aclose()
    return {"p50": pct(samples, 50), "p99": pct(samples, 99)}


async def commands_per_admission(url: str, base: str, conference: tuple[str, str], n: int = 100) -> dict[str, float]:
    """Redis round trips the broker makes for one admission, read from MONITOR: commands sent by
    clients (not those a script runs inside Redis) between two markers around each admission; the
    median discards the background sweeper's occasional commands."""
    marker = aioredis.Redis.from_url(url, decode_responses=True)
    monitor_client = aioredis.Redis.from_url(url, decode_responses=True)
    commands: list[str] = []

    async def watch() -> None:
        async with monitor_client.monitor() as m:
            while True:
                cmd = await m.next_command()
                if cmd.get("client_type") != "lua":
                    commands.append(str(cmd["command"]))

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    cid, token = conference
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
        for i in range(n):
            await marker.echo(f"bench-mark-{i}-begin")
            async with s.post(f"{base}/v1/conferences/{cid}/participants", json={"display_name": "c", "kind": "audio"}) as r:
                payload = await r.json()
            await marker.echo(f"bench-mark-{i}-end")
            async with s.delete(f"{base}/v1/participants/{payload['id']}", headers=leave_headers(payload)) as r:
                await r.read()
    await asyncio.sleep(0.3)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    counts, scripts, inside, names = [], [], None, []
    window: list[str] = []
    for c in commands:
        if "bench-mark-" in c and c.endswith("-begin"):
            inside, window = 0, []
        elif "bench-mark-" in c and c.endswith("-end") and inside is not None:
            counts.append(inside)
            scripts.append(sum(1 for w in window if w in ("EVALSHA", "EVAL")))
            inside = None
        elif inside is not None:
            inside += 1
            window.append(c.split(" ", 1)[0].upper())
            names.append(window[-1])
    await marker.aclose()
    await monitor_client.aclose()
    # Background work of the brokers lands in the same windows (the audit feed's XREAD and its rescan of
    # the outages after each event, the lease sweeper): the script calls are counted apart.
    return {"per_admission": statistics.median(counts), "max": max(counts),
            "script_calls": statistics.median(scripts), "script_calls_max": max(scripts),
            "commands": ", ".join(sorted(set(names)))}


async def run(args: argparse.Namespace) -> dict:
    results: dict = {"machine": {"cores": os.cpu_count()}, "loop": args.loop, "runs": {}}
    print(f"event loop (brokers and bare server): {args.loop}", flush=True)
    with ExitStack() as stack:
        redis_server = RedisServer().start()
        stack.callback(redis_server.stop)
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port), args.loop])  # noqa: ASYNC220
        stack.callback(bare.terminate)
        bare_base = f"http://127.0.0.1:{bare_port}"
        ports = [free_port(), free_port()]
        procs = [start_broker(redis_server.url, p, args.loop) for p in ports]
        for p in procs:
            stack.callback(p.terminate)
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        for b in bases:
            await healthy(b)
        await healthy(bare_base)
        conferences = await seed(bases[0], args.outages)
        rtt = await redis_round_trip(redis_server.url)
        results["redis_round_trip_ms"] = rtt
        cmds = await commands_per_admission(redis_server.url, bases[0], conferences[0])
        results["redis_round_trips_per_admission"] = cmds
        print(f"Redis round trip (PING, redis-py asyncio): p50 {rtt['p50']:.3f} ms  p99 {rtt['p99']:.3f} ms", flush=True)
        print(f"Redis round trips per admission (MONITOR): script calls median {cmds['script_calls']:g}, max "
              f"{cmds['script_calls_max']}; all commands in the window median {cmds['per_admission']:g}, max "
              f"{cmds['max']} ({cmds['commands']}: the others are the brokers' background work)", flush=True)
        # (a) saturation, interleaved rounds (bare, 1 broker, 2 brokers) so that the machine's
        # background load hits all three alike; medians reported.
        rates: dict[str, list[float]] = {"bare": [], "1": [], "2": []}
        for round_no in range(args.rounds):
            rates["bare"].append(await saturation([bare_base], conferences, args.seconds))
            rates["1"].append(await saturation(bases[:1], conferences, args.seconds))
            rates["2"].append(await saturation(bases, conferences, args.seconds))
            print(f"    round {round_no + 1}/{args.rounds}: bare {rates['bare'][-1]:,.0f}  1 broker {rates['1'][-1]:,.0f}"
                  f"  2 brokers {rates['2'][-1]:,.0f} cycles/s", flush=True)
        bare_rate = statistics.median(rates["bare"])
        results["bare_cycles_per_s"] = bare_rate
        print(f"(a) bare aiohttp server: {bare_rate:,.0f} admit+leave cycles/s (32 clients, median of {args.rounds})",
              flush=True)
        for n in (1, 2):
            rate = statistics.median(rates[str(n)])
            ratios = sorted(r / b for r, b in zip(rates[str(n)], rates["bare"], strict=True))
            row: dict = {"cycles_per_s": rate, "ratio_to_bare": rate / bare_rate, "ratios_per_round": ratios}
            print(f"(a) {n} broker process(es): {rate:,.0f} cycles/s = {rate / bare_rate:.2f}x the bare server "
                  f"(per-round ratios {', '.join(f'{x:.2f}' for x in ratios)})", flush=True)
            results["runs"][str(n)] = row
        for n in (1, 2):
            row = results["runs"][str(n)]
            for offered in (500, 1000):
                lat = await open_loop(bases[:n], conferences, offered, args.seconds)
                row[f"open_loop_{offered}"] = lat
                print(f"(b) {n} broker(s) at {offered}/s offered: admission p50 {lat['p50']:.2f} ms  "
                      f"p99 {lat['p99']:.2f} ms  ({lat['n']} admissions, {lat['errors']} not admitted)", flush=True)
        if args.preemption:
            results["preemption"] = await preemption_cost(bases[0], args)
    if args.durability:
        results["durability"] = await durability_cost(args)
    return results


async def run_preemption_only(args: argparse.Namespace) -> dict:
    with ExitStack() as stack:
        redis_server = RedisServer().start()
        stack.callback(redis_server.stop)
        port = free_port()
        proc = start_broker(redis_server.url, port, args.loop)
        stack.callback(proc.terminate)
        base = f"http://127.0.0.1:{port}"
        await healthy(base)
        return {"machine": {"cores": os.cpu_count()}, "loop": args.loop, "preemption": await preemption_cost(base, args)}


async def durability_cost(args: argparse.Namespace) -> dict:
    """(d): standard vs strict on a primary with one replica, and a Redis with appendfsync always."""
    out: dict = {}
    with ExitStack() as stack:
        primary = RedisServer().start()
        stack.callback(primary.stop)
        replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]).start()
        stack.callback(replica.stop)
        fsync = RedisServer(persistent=True, fsync_always=True).start()
        stack.callback(fsync.stop)
        probe = aioredis.Redis.from_url(replica.url, decode_responses=True)
        while (await probe.info("replication")).get("master_link_status") != "up":
            await asyncio.sleep(0.05)
        await probe.aclose()
        setups = {
            "standard, 1 replica": (primary.url, {}),
            "strict (WAIT 1 replica)": (primary.url, {"BACKUPPLUS_DURABILITY": "strict"}),
            "appendfsync always": (fsync.url, {}),
        }
        for label, (url, env) in setups.items():
            port = free_port()
            proc = start_broker(url, port, args.loop, **env)
            stack.callback(proc.terminate)
            base = f"http://127.0.0.1:{port}"
            await healthy(base)
            conferences = await seed(base, args.outages, prefix=f"D{len(out)}")
            rate = statistics.median([await saturation([base], conferences, args.seconds) for _ in range(args.rounds)])
            lat = await open_loop([base], conferences, 500, args.seconds)
            out[label] = {"cycles_per_s": rate, "open_loop_500": lat}
            print(f"(d) 1 broker, {label}: {rate:,.0f} admit+leave cycles/s; at 500/s offered p50 {lat['p50']:.2f} ms"
                  f"  p99 {lat['p99']:.2f} ms ({lat['n']} admissions, {lat['errors']} not admitted: {lat['refused']})",
                  flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved saturation rounds")
    parser.add_argument("--outages", type=int, default=20, help="outages to spread the load over")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                        help="event loop of the brokers and of the bare server alike")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--no-durability", dest="durability", action="store_false",
                        help="skip (d), the cost of --durability strict")
    parser.add_argument("--preempt-rate", type=float, default=200.0,
                        help="(e): admissions/s offered with and without preemption (default 200)")
    parser.add_argument("--no-preemption", dest="preemption", action="store_false",
                        help="skip (e), admission latency with preemption beside without")
    parser.add_argument("--only-preemption", action="store_true",
                        help="run (e) alone (its own redis-server and one broker)")
    args = parser.parse_args()
    results = asyncio.run(run_preemption_only(args) if args.only_preemption else run(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
