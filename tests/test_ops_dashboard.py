"""The Grafana dashboard (ops/grafana): the committed JSON is what the code builds, and every panel's
PromQL runs on a real Prometheus scraping a real broker (``backupplus serve --no-media``) after some
admissions: each query is valid, and each one over metrics that exist today returns series."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from infra.redisproc import RedisServer, free_port

from .api_helpers import OPERATOR, contract_body, declare_body
from .broker_process import running_broker, stop_process
from .test_ops_alerts import PENDING_METRICS, RULES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "ops" / "grafana" / "dashboard.py"
COMMITTED = ROOT / "ops" / "grafana" / "backupplus.json"
AUTH = {"Authorization": f"Bearer {OPERATOR}"}


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("backupplus_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with Grafana's variables as Grafana would fill them."""
    out = []
    for panel in _panels(doc):
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "15s").replace("$outage", ".*")
            out.append((panel["title"], expr))
    return out


def test_committed_json_is_what_the_code_builds() -> None:
    assert COMMITTED.read_text() == _generator().render(), "run: .venv/bin/python ops/grafana/dashboard.py"
    titles = {p["title"] for p in _panels(json.loads(COMMITTED.read_text())) if p["type"] != "row"}
    assert {"Ports in use vs capacity, per outage and kind", "Admissions by result", "Admission latency",
            "Preemptions", "Media nodes by state", "Media sessions, direct / relay",
            "SLA deadlines met / missed"} <= titles


class Prometheus:
    """/usr/bin/prometheus with its own config and data in a temporary directory, on a free port."""

    def __init__(self, workdir: Path, target: str) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            pytest.fail("prometheus is missing: `make setup-test` installs the Debian package prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES}\n"
            "scrape_configs:\n  - job_name: backupplus\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
            )

    def stop(self) -> None:
        stop_process(self.proc)


async def _get(session: aiohttp.ClientSession, url: str, **params: str) -> dict[str, Any]:
    async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(total=10)) as r:
        return dict(await r.json())


async def _until(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await check()
            if result:
                return result
        except (aiohttp.ClientError, TimeoutError, KeyError):
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await _sleep(0.25)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def _admissions(session: aiohttp.ClientSession, api: str) -> str:
    """One outage: video and audio joins, some refused for capacity; returns the outage id."""
    async with session.put(f"{api}/v1/contracts/SER-D-1", json=contract_body("SER-D-1"), headers=AUTH) as r:
        assert r.status in (200, 201)
    async with session.post(f"{api}/v1/outages", json=declare_body("SER-D-1"), headers=AUTH) as r:
        outage = await r.json()
    async with session.post(f"{api}/v1/outages/{outage['id']}/conferences", json={"title": "Board"},
                            headers=AUTH) as r:
        conf = await r.json()
    join = {"Authorization": f"Bearer {conf['join_token']}"}
    statuses = []
    for kind, downgrade in [("video", False)] * 11 + [("audio", True)] * 3:
        async with session.post(f"{api}/v1/conferences/{conf['id']}/participants", headers=join,
                                json={"display_name": "x", "kind": kind, "downgrade": downgrade}) as r:
            statuses.append(r.status)
    assert statuses.count(201) == 13 and statuses.count(409) == 1, statuses
    return str(outage["id"])


async def test_every_panel_query_runs_on_a_real_prometheus(tmp_path: Path) -> None:
    queries = _queries(json.loads(COMMITTED.read_text()))
    with RedisServer() as redis_server, running_broker(
        redis_server.url, tmp_path,
        env={"BACKUPPLUS_OPERATOR_TOKENS": OPERATOR, "BACKUPPLUS_ADMISSION_RATE_BURST": "100"},  # 14 joins at once
    ) as broker:
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{broker.port}")
        try:
            async with aiohttp.ClientSession() as session:
                query = f"{prometheus.url}/api/v1/query"

                async def scraped(n: int) -> bool:
                    body = await _get(session, query, query="count_over_time(backupplus_store_up[1m])")
                    return bool(body["data"]["result"]) and float(body["data"]["result"][0]["value"][1]) >= n

                await _until("Prometheus to scrape the broker", lambda: scraped(3))
                outage = await _admissions(session, broker.url)
                await _sleep(1.5)
                await _admissions_again(session, broker.url, outage)
                scrapes = float((await _get(session, query, query="count_over_time(backupplus_store_up[1m])"))
                                ["data"]["result"][0]["value"][1])
                await _until("more scrapes", lambda: scraped(scrapes + 4))
                results = {}
                for title, expr in queries:
                    body = await _get(session, query, query=expr)
                    assert body["status"] == "success", (title, expr, body)
                    results[expr] = body["data"]["result"]
                variable = await _get(session, f"{prometheus.url}/api/v1/label/outage/values",
                                      **{"match[]": "backupplus_ports_in_use"})
                rules = await _get(session, f"{prometheus.url}/api/v1/rules")
        finally:
            prometheus.stop()
    empty = {expr for expr, result in results.items() if not result}
    pending = {expr for expr in results if any(m in expr for m in PENDING_METRICS)}
    assert empty <= pending, f"queries over today's metrics returned no series: {sorted(empty - pending)}"
    assert pending, "the pending list should name the panels over metrics still to come"
    in_use = next(r for e, r in results.items() if e.startswith("max by (outage, kind) (backupplus_ports_in_use"))
    assert {(s["metric"]["kind"], s["value"][1]) for s in in_use if s["metric"]["outage"] == outage} == {
        ("video", "10"), ("audio", "4")}
    by_result = next(r for e, r in results.items() if "backupplus_admissions_total" in e)
    assert {s["metric"]["result"] for s in by_result} >= {"granted", "downgraded", "refused_capacity"}
    assert outage in variable["data"]
    for group in rules["data"]["groups"]:
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule


async def _admissions_again(session: aiohttp.ClientSession, api: str, outage: str) -> None:
    """A second wave on the same outage after a scrape, so that rates have two points to differ."""
    async with session.get(f"{api}/v1/outages/{outage}/conferences", headers=AUTH) as r:
        (conf,) = await r.json()
    join = {"Authorization": f"Bearer {conf['join_token']}"}
    for kind in ("video", "audio"):
        async with session.post(f"{api}/v1/conferences/{conf['id']}/participants", headers=join,
                                json={"display_name": "y", "kind": kind, "downgrade": False}):
            pass


