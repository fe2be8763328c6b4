"""/healthz, /readyz, /metrics (checked by promtool) and /openapi.json (validated as OpenAPI 3.1)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis.asyncio as aioredis
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from .api_helpers import AUTH, api_client, new_conference, open_outage


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_report_the_ledger_and_pass_promtool(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url) as client, api_client(redis_url) as other_process:
        outage = await open_outage(client)
        conf = await new_conference(client, outage["id"])
        join = {"Authorization": f"Bearer {conf['join_token']}"}
        for kind in ("video", "video", "audio"):
            r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                                  json={"display_name": "x", "kind": kind}, headers=join)
            assert r.status == 201
        r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                              json={"display_name": "x", "kind": "hologram"}, headers=join)
        assert r.status == 422
        # The gauges come from Redis: a process that admitted nothing reports the same usage.
        text = await (await other_process.get("/metrics")).text()
        s = _samples(text)
        o = outage["id"]
        assert s[("backupplus_ports_capacity", (("kind", "video"), ("outage", o)))] == 10
        assert s[("backupplus_ports_capacity", (("kind", "audio"), ("outage", o)))] == 8
        assert s[("backupplus_ports_in_use", (("kind", "video"), ("outage", o)))] == 2
        assert s[("backupplus_ports_in_use", (("kind", "audio"), ("outage", o)))] == 1
        assert s[("backupplus_outages", (("state", "active"),))] == 1
        assert ("backupplus_media_nodes", (("state", "ready"),)) in s
        # Counters and the histogram are per process.
        mine = _samples(await (await client.get("/metrics")).text())
        assert mine[("backupplus_admissions_total", (("kind", "video"), ("result", "granted")))] == 2
        assert mine[("backupplus_admission_seconds_count", ())] == 3
        await client.post(f"/v1/outages/{o}/restore", headers=AUTH)
        s = _samples(await (await client.get("/metrics")).text())
        assert s[("backupplus_outages", (("state", "restored"),))] == 1
        assert not any(name == "backupplus_ports_in_use" and dict(labels).get("outage") == o for name, labels in s)
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.fail("promtool is missing: `make setup` installs the Debian package prometheus")
        check = subprocess.run(  # noqa: ASYNC221 - a short one-off check
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30, check=False
        )
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()


async def test_openapi_is_valid_3_1_and_covers_the_api(redis_url: str) -> None:
    async with api_client(redis_url) as client:
        doc = await (await client.get("/openapi.json")).json()
        validate(doc)
        assert doc["openapi"].startswith("3.1")
        for path in ("/v1/outages", "/v1/outages/{id}/restore", "/v1/conferences/{id}/participants",
                     "/v1/participants/{id}/offer", "/v1/sla", "/v1/contracts/{number}"):
            assert path in doc["paths"], path
        declare = doc["components"]["schemas"]["OutageDeclare"]
        assert set(declare["required"]) == {"contract", "serial", "ticket"}


async def test_health_and_readiness(redis_url: str, redis: aioredis.Redis) -> None:
    async with api_client(redis_url) as client:
        assert (await client.get("/healthz")).status == 200
        r = await client.get("/readyz")  # Redis is fine but no media node runs in this app
        assert r.status == 503 and (await r.json())["code"] == "no_media_node"
