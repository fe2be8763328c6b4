"""Helpers shared by the API tests: a real app on a real Redis, and a valid contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from infra.settings import Settings

OPERATOR = "bpo_test-operator-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {OPERATOR}"}


def contract_body(number: str = "SER-T-1", **changes: Any) -> dict[str, Any]:
    today = date.today()
    body = {
        "number": number,
        "client": {"company": "Cabinet Test", "admin_password": "hunter2"},
        "start_date": (today - timedelta(days=200)).isoformat(),
        "term_years": 3,
        "status": "active",
        "equipment": [
            {"serial": "BR-1", "brand": "Poly", "model": "RMX 1800", "kind": "video_bridge",
             "warranty_until": (today + timedelta(days=400)).isoformat()},
            {"serial": "PJ-1", "brand": "Epson", "model": "EB-L", "kind": "projector",
             "warranty_until": (today + timedelta(days=400)).isoformat()},
            {"serial": "EP-OLD", "brand": "Cisco", "model": "Room Kit", "kind": "video_endpoint",
             "warranty_until": (today - timedelta(days=1)).isoformat()},
        ],
    }
    body.update(changes)
    return body


def declare_body(number: str = "SER-T-1", serial: str = "BR-1", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contract": number,
        "serial": serial,
        "ticket": {"priority": "urgent", "site": "Aix", "contact": "M. Test", "description": "bridge down"},
    }
    body.update(changes)
    return body


@asynccontextmanager
async def api_client(redis_url: str, **overrides: Any) -> AsyncIterator[TestClient]:
    """The app on ``redis_url``. Its admission rate limit is lifted unless a test sets it (tests that
    fill an outage from one conference in a burst are not about the rate limit)."""
    overrides.setdefault("admission_rate_burst", 10_000)
    settings = Settings.from_env(redis_url=redis_url, operator_tokens=frozenset({OPERATOR}), **overrides)
    app = create_app(settings, pages=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def open_outage(client: TestClient, number: str = "SER-T-1") -> dict[str, Any]:
    r = await client.put(f"/v1/contracts/{number}", json=contract_body(number), headers=AUTH)
    assert r.status in (200, 201), await r.text()
    r = await client.post("/v1/outages", json=declare_body(number), headers=AUTH)
    assert r.status == 201, await r.text()
    return dict(await r.json())


async def new_conference(client: TestClient, outage_id: str, **body: Any) -> dict[str, Any]:
    r = await client.post(
        f"/v1/outages/{outage_id}/conferences", json={"title": "Board", **body}, headers=AUTH
    )
    assert r.status == 201, await r.text()
    return dict(await r.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def join(client: TestClient, conf: dict[str, Any], name: str = "P", kind: str = "audio", **body: Any
               ) -> dict[str, Any]:
    """Admits one participant with the conference's join token; its admission answer."""
    r = await client.post(f"/v1/conferences/{conf['id']}/participants",
                          json={"display_name": name, "kind": kind, **body}, headers=bearer(conf["join_token"]))
    assert r.status == 201, await r.text()
    return dict(await r.json())
