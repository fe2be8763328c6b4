"""``backupplus --log-format json serve``: every log line is one JSON object; lines logged while serving a
request carry its request id (the one in ``X-Request-Id``) and the outage, ticket, conference or
participant it was about; and no token or secret appears anywhere in what the process wrote."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import aiohttp
import pytest

from infra.redisproc import RedisServer, free_port

from .api_helpers import contract_body, declare_body
from .broker_process import running_broker
from .test_api_middleware import BROWSER_OFFER

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

OPERATOR = "op-" + "7Qm2xR9vLc4Tz8Kp1Wn6Hy3Jd5Fb0Gs"
SECRET = "whsec_" + base64.b64encode(b"a serve-run secret, 32 bytes!!!").decode()
RECEIVER_KEY = "receiver-query-secret-4f9a1c"
OFFER = BROWSER_OFFER  # a valid offer (a malformed one is 422 before any media plane is asked)


async def _run_requests(api: str) -> dict[str, str]:
    """Declares, joins, fetches the join page, fails an offer (no media plane) and knocks with bad tokens."""
    auth = {"Authorization": f"Bearer {OPERATOR}"}
    seen: dict[str, str] = {}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.put(f"{api}/v1/contracts/SER-L-1", json=contract_body("SER-L-1"), headers=auth) as r:
            assert r.status == 201
        async with s.post(f"{api}/v1/outages", json=declare_body("SER-L-1"), headers=auth) as r:
            outage = await r.json()
            seen["declare_request"] = r.headers["X-Request-Id"]
        async with s.post(f"{api}/v1/outages/{outage['id']}/conferences", json={"title": "Board"}, headers=auth) as r:
            conf = await r.json()
        seen.update(outage=outage["id"], ticket=outage["ticket"]["number"], join_token=conf["join_token"])
        join = {"Authorization": f"Bearer {conf['join_token']}"}
        async with s.get(f"{api}/join/{conf['join_token']}?name=Ann&kind=audio") as r:
            assert r.status == 200
        async with s.post(f"{api}/v1/conferences/{conf['id']}/participants", headers=join,
                          json={"display_name": "Ann", "kind": "audio"}) as r:
            participant = await r.json()
        seen["participant"] = participant["id"]
        if "participant_token" in participant:
            seen["participant_token"] = participant["participant_token"]
        async with s.post(f"{api}/v1/participants/{participant['id']}/offer", headers=auth,
                          json={"type": "offer", "sdp": OFFER}) as r:
            assert r.status == 503  # serve --no-media: no media node
            seen["offer_request"] = r.headers["X-Request-Id"]
        for bogus in ("bpo_" + "x" * 32, conf["join_token"][:-4] + "AAAA"):
            async with s.get(f"{api}/v1/outages", headers={"Authorization": f"Bearer {bogus}"}) as r:
                assert r.status == 401
    return seen


async def test_json_logs_carry_ids_and_no_token(tmp_path: Path) -> None:
    closed = free_port()  # the webhook receiver is down: each failed delivery is logged with its URL
    env = {"BACKUPPLUS_OPERATOR_TOKENS": OPERATOR, "BACKUPPLUS_WEBHOOK_SECRET": SECRET,
           "BACKUPPLUS_WEBHOOK_URLS": f"http://127.0.0.1:{closed}/hook?key={RECEIVER_KEY}",
           "BACKUPPLUS_WEBHOOK_RETRY_BASE_S": "0.2", "BACKUPPLUS_WEBHOOK_RETRY_MAX_S": "0.5"}
    with RedisServer() as redis_server:
        with running_broker(redis_server.url, tmp_path, global_args=("--log-format", "json"), env=env) as broker:
            seen = await _run_requests(broker.url)
            import asyncio

            await asyncio.sleep(1.0)  # a few webhook retries get logged
        stdout, log = broker.output.read_text(), broker.errors.read_text()
    lines = [json.loads(line) for line in log.splitlines()]  # every line is JSON
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    declared = [line for line in lines if line.get("request_id") == seen["declare_request"]]
    assert any(line.get("outage") == seen["outage"] and line.get("ticket") == seen["ticket"] for line in declared), (
        declared)
    offer = [line for line in lines if line.get("request_id") == seen["offer_request"]]
    assert offer and all(line["participant"] == seen["participant"] and line["outage"] == seen["outage"]
                         for line in offer)
    retries = [line for line in lines if "webhook" in line["message"] and "failed" in line["message"]]
    assert retries and all(line.get("outage") == seen["outage"] for line in retries)
    secrets = [OPERATOR, SECRET, RECEIVER_KEY, seen["join_token"], "bpo_" + "x" * 32,
               seen.get("participant_token", OPERATOR)]
    for secret in secrets:
        assert secret not in log and secret not in stdout, f"a token reached the output: {secret[:6]}…"


async def test_the_default_log_is_readable_text(tmp_path: Path) -> None:
    with RedisServer() as redis_server:
        with running_broker(redis_server.url, tmp_path, env={"BACKUPPLUS_OPERATOR_TOKENS": OPERATOR}) as broker:
            seen = await _run_requests(broker.url)
        log = broker.errors.read_text()
    line = next(line for line in log.splitlines() if seen["offer_request"] in line)
    assert not line.startswith("{") and " WARNING backupplus.api: no_media_node: " in line
    assert line.endswith(f"[request_id={seen['offer_request']} outage={seen['outage']} participant={seen['participant']}]")
