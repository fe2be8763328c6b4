"""Schemathesis against a running broker, from its own /openapi.json: no 5xx, every status code,
content type and response body as documented (problem+json included)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.redisproc import RedisServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
TOKEN = "fuzz-operator-token-0123456789abcdef"


@pytest.fixture
def broker_url(redis_server: RedisServer) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "BACKUPPLUS_OPERATOR_TOKENS": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "backupplus.cli", "serve", "--no-media", "--port", str(port), "--redis-url", redis_server.url],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def test_the_api_keeps_its_openapi_promises(broker_url: str, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st, "schemathesis is missing: `make setup-test` installs it"
    res = subprocess.run(
        [st, "run", f"{broker_url}/openapi.json", "-H", f"Authorization: Bearer {TOKEN}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
         # The coverage phase has hit internal errors of schemathesis itself here; fuzzing and the
         # stateful phase (declare -> conference -> participant -> leave chains) are what we rely on.
         "--phases", "fuzzing,stateful", "--max-examples", "30", "--workers", "2", "--seed", "20261126",
         # This broker runs without a media plane: its readiness probe answers 503 no_media_node, as
         # documented, and not_a_server_error counts every 5xx.
         "--exclude-path", "/readyz",
         # The live feed streams until its lifetime ends (10 min): tests/test_api_events.py covers it.
         "--exclude-path", "/v1/events",
         "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert " passed" in out and "failed" not in out.split("Test cases:")[-1], out[-3000:]
