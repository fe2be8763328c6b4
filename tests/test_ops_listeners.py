"""Ops routes: with ``ops_port`` /metrics, /healthz and /readyz are on a listener of their own (the
public one has none of them); otherwise ``metrics_token`` makes /metrics want a bearer token. A real
Prometheus scrapes both, configured from the examples in ops/prometheus/."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from infra.redisproc import free_port

from .api_helpers import AUTH, api_client
from .broker_process import stop_process

OPS = Path(__file__).resolve().parents[1] / "ops" / "prometheus"


class Prometheus:
    """/usr/bin/prometheus on a free port with the given scrape configs (rule files left out)."""

    def __init__(self, workdir: Path, scrape_configs: list[dict[str, Any]]) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            pytest.fail("prometheus is missing: `make setup-test` installs the Debian package prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape_configs}))
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
            )

    async def up(self, job: str, timeout: float = 30.0) -> float:
        """The value of ``up{job=…}`` once Prometheus has scraped the job."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"{self.url}/api/v1/query", params={"query": f'up{{job="{job}"}}'}) as r:
                        result = (await r.json())["data"]["result"]
                        if result:
                            return float(result[0]["value"][1])
                except (aiohttp.ClientError, KeyError):
                    pass
                await asyncio.sleep(0.25)
        raise AssertionError(f"Prometheus never scraped {job}: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        stop_process(self.proc)


def example(name: str, target: str, **changes: Any) -> dict[str, Any]:
    """The one scrape config of an example file, aimed at ``target`` (and ``changes`` applied)."""
    config = yaml.safe_load((OPS / name).read_text())
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    job.update(changes)
    return dict(job)


async def test_ops_routes_on_a_listener_of_their_own(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    async with api_client(redis_url, ops_port=port) as client:
        for path in ("/metrics", "/healthz", "/readyz"):
            assert (await client.get(path)).status == 404, path
        assert (await client.get("/openapi.json")).status == 200
        assert (await client.get("/v1/outages", headers=AUTH)).status == 200
        ops = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(ops + "/healthz") as r:
                assert r.status == 200
            async with http.get(ops + "/metrics") as r:
                assert r.status == 200 and "backupplus_outages" in await r.text()
            async with http.get(ops + "/readyz") as r:  # no media node in this app: a problem, with its request id
                body = await r.json()
                assert r.status == 503 and body["code"] == "no_media_node"
                assert body["request_id"] == r.headers["X-Request-Id"]
            async with http.get(ops + "/v1/outages", headers=AUTH) as r:
                assert r.status == 404  # the ops listener serves nothing else
        prometheus = Prometheus(tmp_path, [example("scrape-ops-listener.yml", f"127.0.0.1:{port}")])
        try:
            assert await prometheus.up("backupplus") == 1
        finally:
            prometheus.stop()


async def test_metrics_want_the_metrics_token(redis_url: str, tmp_path: Path) -> None:
    token = "mt_" + secrets.token_urlsafe(32)
    async with api_client(redis_url, metrics_token=token) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH):  # an operator token is not the metrics token
            r = await client.get("/metrics", headers=headers)
            assert r.status == 401 and (await r.json())["code"] == "unauthorized"
            assert "backupplus_" not in await r.text()
        r = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status == 200 and "backupplus_outages" in await r.text()
        assert (await client.get("/healthz")).status == 200  # liveness stays open
        credentials = tmp_path / "metrics.token"
        credentials.write_text(token + "\n")
        credentials.chmod(0o600)
        target = f"127.0.0.1:{client.port}"
        with_token = example("scrape-metrics-token.yml", target, scheme="http")
        with_token["authorization"]["credentials_file"] = str(credentials)
        without = {"job_name": "anonymous", "static_configs": [{"targets": [target]}]}
        prometheus = Prometheus(tmp_path, [with_token, without])
        try:
            assert await prometheus.up("backupplus") == 1
            assert await prometheus.up("anonymous") == 0
        finally:
            prometheus.stop()


def test_short_metrics_token_is_refused() -> None:
    from pydantic import ValidationError

    from infra.settings import Settings

    with pytest.raises(ValidationError, match="at least 32"):
        Settings(metrics_token="short")
