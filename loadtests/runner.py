"""``backupplus loadtest``: one command that starts a broker (or targets one), runs the locust scenarios
headless, watches the caps, enforces the SLOs and writes a report.

    backupplus loadtest [--duration S] [--brokers N] [--users U] [--spawn-rate R] [--target URL]
    backupplus loadtest worker --master-host HOST [--master-port 5557]      # a remote load generator

Exit status: 0 all SLOs and checks passed; 1 a breach (named on the last lines); 2 the run could not
be set up (redis-server, brokers or locust did not come up).

The brokers it starts run with the per-conference admission rate limit lifted (the load is thousands
of joins a second through a few dozen links, not people joining meetings); ``--rate-limit on`` keeps
the configured limit, and 429 rate_limited then counts as an expected refusal. ``--inject-cap-violation``
proves the cap watcher end to end: it corrupts the ledger in Redis behind the brokers' back.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from loadtests.report import Slo, evaluate, plot, render
from loadtests.scenario import ADMISSION_NAME
from loadtests.watcher import CapWatcher

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
REPO = Path(__file__).resolve().parent.parent


# After --duration s of load, users start nothing new and leave; locust stops DRAIN_S s later.
DRAIN_S = 7.0
# The admission rate limit of the brokers started with --rate-limit lifted: burst and tokens a second.
LIFTED_RATE = 1_000_000


class SetupError(RuntimeError):
    pass


def _free_port() -> int:
    from infra.redisproc import free_port

    return free_port()


def _say(msg: str) -> None:
    print(msg, flush=True)


# --- arguments ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backupplus loadtest",
                                description="Load test the broker: caps, admission latency, time to media.")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--brokers", type=int, default=2, help="broker processes to start (without --target)")
    p.add_argument("--users", type=int, default=200, help="participant users (default 200)")
    p.add_argument("--spawn-rate", type=float, default=50.0, help="users started per second (default 50)")
    p.add_argument("--media-nodes", type=int, default=1,
                   help="standalone media node processes (`backupplus media`) beside API-only brokers (default 1); "
                        "0 = every broker runs its in-process media node")
    p.add_argument("--media-nice", type=int, default=10,
                   help="niceness of the media node(s) and the WebRTC probes (default 10): on one small machine they "
                        "take the CPU the admission path leaves, as if they ran on their own machines; 0 = off")
    p.add_argument("--target", default=None,
                   help="broker base URL(s), comma-separated, of a running deployment (needs --token, --redis-url)")
    p.add_argument("--token", default=os.environ.get("BACKUPPLUS_LOADTEST_TOKEN"),
                   help="operator token for --target (or env BACKUPPLUS_LOADTEST_TOKEN)")
    p.add_argument("--redis-url", default=None, help="the deployment's Redis, read by the cap watcher (--target)")
    p.add_argument("--rate", type=float, default=300.0, help="admission attempts offered per second (default 300)")
    p.add_argument("--outages", type=int, default=24, help="concurrent outages set up for the run (default 24)")
    p.add_argument("--churn", type=int, default=3, help="extra outages the hotline declares and restores")
    p.add_argument("--media-users", type=int, default=2, help="WebRTC media users (default 2, 0 = none)")
    p.add_argument("--burst-period", type=float, default=15.0)
    p.add_argument("--burst-len", type=float, default=3.0)
    p.add_argument("--burst-factor", type=float, default=2.5)
    p.add_argument("--workers", type=int, default=2,
                   help="local locust worker processes (default 2; 0 = a single locust process)")
    p.add_argument("--expect-workers", type=int, default=0,
                   help="extra remote workers to wait for (started with `backupplus loadtest worker`)")
    p.add_argument("--master-bind-host", default="127.0.0.1",
                   help="where the locust master listens for workers (0.0.0.0 for remote workers)")
    p.add_argument("--master-port", type=int, default=0, help="locust master port (default: a free one)")
    p.add_argument("--report", default=None, help="report folder (default reports/<timestamp>)")
    p.add_argument("--lease", type=float, default=30.0, help="admission lease (s) the leak check waits out")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds excluded from the admission SLO at the start (default: ramp-up + 5 s, "
                        "at most a third of the run); the whole run is reported too")
    p.add_argument("--slo-admission-p99-ms", type=float, default=25.0)
    p.add_argument("--slo-ttff-p95-ms", type=float, default=2000.0)
    p.add_argument("--keep-outages", action="store_true",
                   help="with --target: leave this run's outages active (default: restore them)")
    p.add_argument("--locust-arg", action="append", default=[], help="extra argument passed to locust (repeat)")
    p.add_argument("--rate-limit", choices=("lifted", "on"), default="lifted",
                   help="the brokers' per-conference admission rate limit (default lifted: the brokers started "
                        f"here get BACKUPPLUS_ADMISSION_RATE_*={LIFTED_RATE}); on: as configured, 429 rate_limited "
                        "is then an expected refusal (always so with --target)")
    p.add_argument("--inject-cap-violation", type=float, default=None, metavar="SECONDS",
                   help="self-check of the watcher: SECONDS into the load, write fake leases past the video cap "
                        "of the busiest outage straight into Redis (they expire when the load ends); the run "
                        "must then FAIL with 'cap violation'")
    return p


# --- processes ---------------------------------------------------------------------------------------
class Procs:
    """Children started by this run, stopped in reverse order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen[bytes], Any]] = []
        self.on_start: Any = None   # called with each child's pid (= its session id)

    def start(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None,
              nice: int = 0) -> subprocess.Popen[bytes]:
        f = log.open("ab")
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(REPO), start_new_session=True)
        if nice:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
        self.items.append((name, proc, f))
        if self.on_start is not None:
            self.on_start(proc.pid)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)

    def stop_all(self) -> None:
        for _, proc, f in reversed(self.items):
            self.stop(proc)
            f.close()
        self.items.clear()


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except Exception:  # noqa: BLE001
        return 0


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def broker_command(redis_url: str, port: int, media: bool = True) -> list[str]:
    # no TURN server: the load's WebRTC probes connect directly on this machine, and the brokers of one
    # run would otherwise share the working directory's .state for their private turnservers
    return [sys.executable, "-m", "backupplus.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--redis-url", redis_url, "--no-turn", *([] if media else ["--no-media"])]


def media_command(redis_url: str, port: int) -> list[str]:
    return [sys.executable, "-m", "backupplus.cli", "media", "--host", "127.0.0.1", "--port", str(port),
            "--redis-url", redis_url, "--drain-timeout", "5"]


def start_brokers(procs: Procs, n: int, redis_url: str, token: str, report: Path, media_nodes: int = 0,
                  media_nice: int = 0, timeout: float = 60.0, rate_limited: bool = False) -> list[str]:
    env = dict(os.environ, BACKUPPLUS_OPERATOR_TOKENS=token, PYTHONUNBUFFERED="1")
    env.setdefault("BACKUPPLUS_MEDIA_REMOTE_CANDIDATES", "loopback")  # the media clients run on this machine
    if not rate_limited:
        env.update(BACKUPPLUS_ADMISSION_RATE_BURST=str(LIFTED_RATE), BACKUPPLUS_ADMISSION_RATE_PER_S=str(LIFTED_RATE))
    env.pop("BACKUPPLUS_REDIS_URL", None)
    for i in range(media_nodes):
        procs.start(f"media-{i}", media_command(redis_url, _free_port()), report / f"media-{i}.log",
                    dict(env, BACKUPPLUS_STATE_DIR=str(report / f"state-media-{i}")), nice=media_nice)
    started = []
    for i in range(n):
        port = _free_port()
        env_i = dict(env, BACKUPPLUS_STATE_DIR=str(report / f"state-broker-{i}"))
        log = report / f"broker-{i}.log"
        started.append((procs.start(f"broker-{i}", broker_command(redis_url, port, media_nodes == 0), log, env_i),
                        f"http://127.0.0.1:{port}", log))
    deadline = time.monotonic() + timeout
    for proc, url, log in started:
        while _get(url + "/readyz") != 200:
            if proc.poll() is not None:
                raise SetupError(f"broker {url} exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise SetupError(f"broker {url} not ready (GET /readyz != 200) within {timeout:.0f} s:\n{_tail(log)}")
            time.sleep(0.2)
    return [u for _, u, _ in started]


def locust_command(args: argparse.Namespace, hosts: list[str], report: Path, master_port: int) -> list[str]:
    classes = ["HotlineUser", "ParticipantUser"] + (["MediaUser"] if args.media_users > 0 else [])
    total = args.users + 1 + max(0, args.media_users)
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-H", hosts[0],
           "-u", str(total), "-r", str(args.spawn_rate), "-t", f"{round(args.duration + DRAIN_S)}s",
           "--bp-load-seconds", str(args.duration),
           "--stop-timeout", "20", "--csv", str(report / "locust"), "--csv-full-history",
           "--html", str(report / "report.html"), "--only-summary", "--exit-code-on-error", "0",
           "--bp-hosts", ",".join(hosts), "--bp-rate", str(args.rate), "--bp-participants", str(args.users),
           "--bp-outages", str(args.outages), "--bp-churn", str(args.churn),
           "--bp-media-users", str(max(0, args.media_users)), "--bp-media-nice", str(args.media_nice),
           "--bp-burst-period", str(args.burst_period), "--bp-burst-len", str(args.burst_len),
           "--bp-burst-factor", str(args.burst_factor),
           "--bp-warmup", str(warmup_seconds(args)),
           "--bp-summary", str(report / "locust_summary.json"), "--bp-progress", str(report / "progress.json")]
    if args.rate_limit == "on" or args.target:
        cmd.append("--bp-rate-limited")
    n_workers = args.workers + args.expect_workers
    if n_workers > 0:
        cmd += ["--master", "--master-bind-host", args.master_bind_host, "--master-bind-port", str(master_port),
                "--expect-workers", str(n_workers), "--expect-workers-max-wait", "120"]
    return cmd + list(args.locust_arg) + classes


def warmup_seconds(args: argparse.Namespace) -> float:
    if args.warmup is not None:
        return max(0.0, args.warmup)
    ramp = (args.users + 1 + args.media_users) / max(args.spawn_rate, 0.1)
    return round(min(ramp + 5.0, args.duration / 3), 1)


def worker_command(master_host: str, master_port: int, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", master_host,
            "--master-port", str(master_port), *(extra or [])]


def worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="backupplus loadtest worker",
                                description="A locust worker (load generator) for a `backupplus loadtest` master.")
    p.add_argument("--master-host", required=True)
    p.add_argument("--master-port", type=int, default=5557)
    p.add_argument("--processes", type=int, default=None, help="fork this many worker processes")
    a = p.parse_args(argv)
    extra = ["--processes", str(a.processes)] if a.processes else []
    return subprocess.call(worker_command(a.master_host, a.master_port, extra), cwd=str(REPO))


# --- the run -----------------------------------------------------------------------------------------
def _progress(report: Path, watcher: CapWatcher, duration: float, started: float) -> str:
    try:
        p = json.loads((report / "progress.json").read_text())
    except (OSError, ValueError):
        p = {}
    last = watcher.timeline[-1] if watcher.timeline else {}
    use = last.get("use_audio", 0) + last.get("use_video", 0)
    cap = last.get("cap_audio", 0) + last.get("cap_video", 0)
    p99 = p.get("admission_p99_ms")
    return (f"[{time.monotonic() - started:5.0f}s / {duration:.0f}s] users {p.get('users', 0):>3}  "
            f"admissions {p.get('admissions_per_s', 0):6.1f}/s  p99 {p99 if p99 is not None else '-':>4} ms  "
            f"refused {p.get('refused', 0):>6}  fails {p.get('failures', 0):>4}  "
            f"ports {use:>3}/{cap:<3} in {last.get('outages', 0):>2} outages  "
            f"hottest {last.get('max_ratio', 0):.0%}  violations {len(watcher.violations)}")


def main(argv: list[str]) -> int:
    if argv and argv[0] == "worker":
        return worker_main(argv[1:])
    args = build_parser().parse_args(argv)
    report = Path(args.report or REPO / "reports" / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    report.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    redis_server = None
    watcher: CapWatcher | None = None
    t_start = time.monotonic()
    try:
        # 1. the system under test
        if args.target:
            hosts = [h.strip().rstrip("/") for h in args.target.split(",") if h.strip()]
            if not args.token or not args.redis_url:
                raise SetupError("--target needs --token (operator) and --redis-url (for the cap watcher)")
            if args.inject_cap_violation is not None:
                raise SetupError("--inject-cap-violation corrupts the ledger: only for the brokers this command starts")
            token, redis_url = args.token, args.redis_url
            for h in hosts:
                if _get(h + "/readyz", 5) != 200:
                    raise SetupError(f"{h}/readyz is not 200")
            where = f"target {', '.join(hosts)}"
        else:
            from infra.redisproc import RedisServer

            redis_server = RedisServer().start()
            redis_url = redis_server.url
            token = "lt-" + secrets.token_urlsafe(24)
            _say(f"starting redis-server ({redis_url}), {args.brokers} broker(s) and {args.media_nodes} media node(s) ...")
            hosts = start_brokers(procs, max(1, args.brokers), redis_url, token, report, max(0, args.media_nodes),
                                  args.media_nice, rate_limited=args.rate_limit == "on")
            where = (f"{len(hosts)} local broker(s) {', '.join(hosts)}, "
                     + (f"{args.media_nodes} standalone media node(s)" if args.media_nodes > 0
                        else "in-process media nodes"))
        _say(f"system under test ready in {time.monotonic() - t_start:.1f} s: {where}")

        # 2. the watcher, independent of the users
        watcher = CapWatcher(redis_url, [h + "/metrics" for h in hosts], token)
        watcher.cpu.sessions.update(p.pid for _, p, _ in procs.items)
        if redis_server is not None and redis_server.process is not None:
            watcher.cpu.sessions.add(redis_server.process.pid)
        procs.on_start = watcher.cpu.sessions.add
        watcher.start()

        # 3. locust
        master_port = args.master_port or _free_port()
        env = dict(os.environ, BACKUPPLUS_LOADTEST_TOKEN=token, PYTHONUNBUFFERED="1")
        master = procs.start("locust", locust_command(args, hosts, report, master_port), report / "locust.log", env)
        for i in range(max(0, args.workers)):
            procs.start(f"locust-worker-{i}", worker_command("127.0.0.1", master_port),
                        report / f"locust-worker-{i}.log", env)
        if args.expect_workers:
            _say(f"waiting for {args.expect_workers} remote worker(s): backupplus loadtest worker "
                 f"--master-host <this host> --master-port {master_port}")
        _say(f"load: {args.users} participants, {args.rate:g} admissions/s offered with bursts, "
             f"{args.outages} outages (+{args.churn} hotline), {args.media_users} media users, "
             f"{args.workers} local worker(s), {args.duration:g} s")
        t_load = time.monotonic()
        tty = sys.stdout.isatty()
        limit = args.duration + DRAIN_S + 180 + (120 if args.expect_workers else 0)
        next_line = time.monotonic() + 5
        inject_at = None if args.inject_cap_violation is None else t_load + args.inject_cap_violation
        while master.poll() is None:
            if inject_at is not None and time.monotonic() >= inject_at:
                # once the scene is set and participants hold ports (on a busy machine, later than asked)
                done = inject_cap_violation(watcher.redis, max(3.0, args.duration - (args.inject_cap_violation or 0.0)))
                if done:
                    inject_at = None
                    _say("injecting a cap violation: " + done)
            if time.monotonic() - t_load > limit:
                _say(f"locust still running {limit:.0f} s after start: stopping it")
                procs.stop(master, 20)
                break
            time.sleep(0.5)
            if time.monotonic() >= next_line:
                line = _progress(report, watcher, args.duration, t_load)
                print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
                next_line = time.monotonic() + (2 if tty else 5)
        if tty:
            print()
        users_gone_at = time.time()
        for name, proc, _ in procs.items:
            if name.startswith("locust-worker"):
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    procs.stop(proc)
        summary_path = report / "locust_summary.json"
        if not summary_path.exists():
            raise SetupError(f"locust wrote no summary (exit {master.returncode}):\n{_tail(report / 'locust.log', 25)}")
        summary = json.loads(summary_path.read_text())

        # 4. end-of-run checks: quiet agreement with /metrics, then leaks once the lease has passed
        _say("load stopped; checking /metrics against the quiet ledger and waiting for every port to be free ...")
        outages = summary.get("outages", {})
        run_outages = [o for part in ("stable", "churn", "ended") for o in outages.get(part, [])]
        violations = watcher.finish(users_gone_at, args.lease, outages=run_outages)
        prefix = f"LT-{summary['run_id']}-" if summary.get("run_id") else None
        trail = watcher.trail_summary(run_outages, prefix)
        accounting = watcher.account_trails(summary.get("tally") or {}, run_outages, prefix)
        watcher.stop()
        watcher.dump(str(report / "watcher.json"))
        if args.target and not args.keep_outages:
            _restore_outages(hosts[0], token, summary)
    except SetupError as exc:
        _say(f"loadtest: setup failed: {exc}")
        return 2
    finally:
        if watcher is not None:
            watcher.stop()
        procs.stop_all()
        if redis_server is not None:
            redis_server.stop()

    # 5. verdicts, summary, plot
    slo = Slo(args.slo_admission_p99_ms, args.slo_ttff_p95_ms)
    verdicts = evaluate(summary, violations, slo, args.media_users,
                        {"samples": watcher.samples, "scrapes": watcher.metrics_ok}, trail, accounting)
    peaks = watcher.peak_summary()
    adm = next((e for e in summary.get("entries", []) if e["name"] == ADMISSION_NAME and e["type"] == "POST"), None)
    server = watcher.server_admission_quantiles(adm["requests"] if adm else None)
    span = args.duration   # rates over the load phase (the drain after it starts nothing)
    header = (f"Backup+ load test: {args.duration:g} s, {where}; {args.users} participants + 1 hotline + "
              f"{args.media_users} media users, {args.rate:g} admissions/s offered")
    epoch0 = summary.get("epoch") or 0.0
    cpu = watcher.cpu_summary(epoch0, epoch0 + args.duration) if epoch0 else watcher.cpu_summary()
    text = render(summary, verdicts, peaks, server, header, span)
    if cpu:
        text = text.replace("\n\nSLOs and checks:", (
            f"\nCPU during the load ({cpu['cores']} cores): this run's processes {cpu['ours']:.2f} cores, other "
            f"processes on the machine {cpu['others']:.2f} on average (max {cpu['others_max']:.2f}); "
            f"max load average {cpu['load1_max']:.1f}\n\nSLOs and checks:"), 1)
    png = report / "loadtest.png"
    epoch = summary.get("epoch") or 0.0
    plotted = plot(png, watcher, report / "locust_stats_history.csv", slo,
                   warmup=(watcher.started_at, epoch + summary.get("warmup", 0.0)) if epoch else None,
                   title=f"{args.users} participants, {args.rate:g} admissions/s offered, {where}")
    failed = [v for v in verdicts if not v.ok]
    text += "\n\nReport: " + ", ".join(str(report / n) for n in ("report.html", "loadtest.png", "locust_stats.csv")
                                       if (report / n).exists() or (n == "loadtest.png" and plotted))
    text += "\nRESULT: " + ("PASS" if not failed else "FAIL (" + "; ".join(v.name for v in failed) + ")")
    (report / "summary.txt").write_text(text + "\n")
    (report / "summary.json").write_text(json.dumps({
        "args": {k: v for k, v in vars(args).items() if k != "token"},
        "verdicts": [v.__dict__ for v in verdicts], "peaks": peaks, "server_admission_ms": server, "cpu": cpu,
        "audit_trail": {**trail, "locust": accounting.locust, "trail": accounting.trail},
        "locust": summary, "passed": not failed, "wall_seconds": round(time.monotonic() - t_start, 1),
    }, indent=1, default=str))
    _say("")
    _say(text)
    _say(f"(whole run {time.monotonic() - t_start:.0f} s)")
    return 0 if not failed else 1


def inject_cap_violation(client: Any, expire_in_s: float) -> str | None:
    """Corrupts the ledger as a bug would: fake leases past the video cap of the busiest active outage,
    written straight into its keys (quotas.keys.ledger_keys; consistent with each other, as
    quotas/lua/_lib.lua keeps them, so neither an admission's derive_use nor the broker's audit "repairs"
    them away: they are counted as ports in use). They belong to the outage's most important conference
    (never a preemption victim) and expire after ``expire_in_s``: the brokers' own sweeper then reclaims
    them, so the run's leak check is not what catches them. Returns what it did, None when no outage
    with a conference has a port in use yet (the load has not started)."""
    from quotas import keys

    best: tuple[int, str] | None = None
    for oid in client.smembers(keys.ACTIVE_OUTAGES):
        oid = oid.decode() if isinstance(oid, bytes) else str(oid)
        use = int(client.hget(keys.in_use(oid), "video") or 0)
        if use > 0 and client.hlen(keys.conferences(oid)) and (best is None or use > best[0]):
            best = (use, oid)
    if best is None:
        return None
    oid = best[1]
    prios = {(c.decode() if isinstance(c, bytes) else str(c)): int(p) for c, p in client.hgetall(keys.priorities(oid)).items()}
    conf = min(prios, key=lambda c: (prios[c], c)) if prios else str(next(iter(client.hkeys(keys.conferences(oid)))))
    if isinstance(conf, bytes):
        conf = conf.decode()
    cap = int(client.hget(keys.capacity(oid), "video") or 0)
    n = cap + 2   # past the cap by themselves: however many real participants leave meanwhile
    sec, usec = client.time()
    expiry = int(sec) * 1000 + int(usec) // 1000 + int(expire_in_s * 1000)
    pipe = client.pipeline(transaction=True)
    for i in range(n):
        pid = f"{oid}.fake{i:03d}{secrets.token_hex(3)}"
        pipe.hset(keys.lease_meta(oid), pid, f"{conf}|video")
        pipe.zadd(keys.leases(oid), {pid: expiry})
        pipe.zadd(keys.lease_order(oid), {pid: 0})
        pipe.hset(keys.participant_states(oid), pid, "admitted")
        pipe.hset(keys.participant_kinds(oid), pid, "video")
        pipe.hset(keys.participant_conferences(oid), pid, conf)
    pipe.hincrby(keys.in_use(oid), "video", n)
    pipe.hincrby(keys.conference_use(oid), f"{conf}:video", n)
    pipe.execute()
    return f"{n} fake video lease(s) in outage {oid} (capacity {cap}), expiring in {expire_in_s:.0f} s"


def _restore_outages(base: str, token: str, summary: dict[str, Any]) -> None:
    outs = summary.get("outages", {})
    for oid in list(outs.get("stable", [])) + list(outs.get("churn", [])):
        req = urllib.request.Request(f"{base}/v1/outages/{oid}/restore", data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        with contextlib.suppress(Exception):
            urllib.request.urlopen(req, timeout=10).close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
