"""backupplus_store_up and backupplus_store_errors_total: /metrics keeps answering while Redis is down,
says so, and leaves out the gauges it could not read (zero media nodes would be a false alarm)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.redisproc import RedisServer

from .api_helpers import AUTH, api_client

pytestmark = pytest.mark.timeout(60)


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


async def test_store_down_then_back() -> None:
    server = RedisServer().start()
    try:
        async with api_client(server.url) as client:
            up = _families(await (await client.get("/metrics")).text())
            assert up["backupplus_store_up"] == [({}, 1.0)]
            assert ({"state": "ready"}, 0.0) in up["backupplus_media_nodes"]
            assert ({"kind": "video", "result": "refused_capacity"}, 0.0) in [
                (labels, v) for labels, v in up["backupplus_admissions"] if labels.get("result")
            ]

            server.kill()
            refused = await client.get("/v1/outages", headers=AUTH)
            assert refused.status == 503
            r = await client.get("/metrics")
            down = _families(await r.text())
            assert r.status == 200
            assert down["backupplus_store_up"] == [({}, 0.0)]
            assert "backupplus_media_nodes" not in down and "backupplus_outages" not in down
            assert ({}, 1.0) in down["backupplus_store_errors"]

            server.start()
            back = _families(await (await client.get("/metrics")).text())
            assert back["backupplus_store_up"] == [({}, 1.0)] and "backupplus_media_nodes" in back
    finally:
        server.stop()
