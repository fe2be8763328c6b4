"""Join time: from opening a join link (``?autojoin=1``) to the first remote video frame on screen.

Headless Chromium (fake camera and microphone) against a real ``backupplus serve`` on loopback. One
peer is already in the conference (the usual case: you join people who are waiting); then N
participants join one after the other, each in a fresh browser context (new camera permission, no
cache), and leave. The join page sets ``performance.mark('bp-first-remote-frame')`` from
``requestVideoFrameCallback`` on the remote ``<video>``; its ``startTime`` is milliseconds since the
navigation started, i.e. since the link was opened. Also printed: admission and answer marks.

    .venv/bin/python benchmarks/join_time.py              # starts its own server (private Redis)
    .venv/bin/python benchmarks/join_time.py --api http://127.0.0.1:8080 --token T   # an existing one
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.redisproc import free_port
from tests.chromium import CHROMIUM_ARGS, require_chromium

TARGET_MS = 1500


def _call(api: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def _start_server(token: str, state_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPPLUS_")}
    env["BACKUPPLUS_OPERATOR_TOKENS"] = token
    log = (state_dir / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "backupplus.cli", "serve", "--port", str(port), "--state-dir", str(state_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    api = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited: see {state_dir / 'serve.log'}")
        try:
            with urllib.request.urlopen(api + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return proc, api
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("serve not ready within 60 s")


def _conference(api: str, token: str) -> str:
    today = date.today()
    number = f"BENCH-{os.getpid()}-{int(time.time())}"
    serial = f"{number}-MCU"
    _call(
        api,
        token,
        "PUT",
        f"/v1/contracts/{number}",
        {
            "number": number,
            "client": {"company": "Benchmark"},
            "start_date": str(today - timedelta(days=10)),
            "term_years": 1,
            "status": "active",
            "equipment": [
                {
                    "serial": serial,
                    "brand": "Poly",
                    "model": "RMX",
                    "kind": "video_bridge",
                    "warranty_until": str(today + timedelta(days=300)),
                }
            ],
        },
    )
    outage = _call(
        api,
        token,
        "POST",
        "/v1/outages",
        {
            "contract": number,
            "serial": serial,
            "ticket": {"priority": "urgent", "site": "bench", "contact": "bench"},
        },
    )
    conf = _call(
        api, token, "POST", f"/v1/outages/{outage['id']}/conferences", {"title": "Join-time benchmark"}
    )
    return str(conf["join_url"])


MARKS_JS = """() => Object.fromEntries(
  ['bp-join-start', 'bp-admitted', 'bp-media', 'bp-ice', 'bp-answer', 'bp-first-remote-frame'].map((n) => {
    const e = performance.getEntriesByName(n)[0];
    return [n, e ? e.startTime : null];
  }))"""


def run(api: str, token: str, joins: int, peer: bool) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    join_url = _conference(api, token)
    results: list[dict[str, float]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
        peer_ctx = None
        if peer:
            peer_ctx = browser.new_context()
            page = peer_ctx.new_page()
            page.goto(join_url + "?name=Peer&kind=video&autojoin=1")
            page.wait_for_selector("body[data-first-frame]", state="attached", timeout=30000)
        for i in range(joins):
            ctx = browser.new_context()
            page = ctx.new_page()
            t0 = time.perf_counter()
            page.goto(join_url + f"?name=Joiner{i}&kind=video&autojoin=1")
            page.wait_for_selector("body[data-first-frame]", state="attached", timeout=30000)
            wall = (time.perf_counter() - t0) * 1000
            marks = page.evaluate(MARKS_JS)
            results.append(
                {
                    "first_frame_ms": marks["bp-first-remote-frame"],
                    "admitted_ms": marks["bp-admitted"],
                    "answer_ms": marks["bp-answer"],
                    "join_start_ms": marks["bp-join-start"],
                    "media_ms": marks["bp-media"],
                    "ice_ms": marks["bp-ice"],
                    "wall_ms": wall,
                }
            )
            page.click("#leave")
            page.wait_for_selector('body[data-state="idle"]', state="attached", timeout=10000)
            ctx.close()
            time.sleep(0.5)
        if peer_ctx is not None:
            peer_ctx.close()
        browser.close()
    first = [r["first_frame_ms"] for r in results]
    return {
        "joins": results,
        "p50_first_frame_ms": statistics.median(first),
        "min_first_frame_ms": min(first),
        "max_first_frame_ms": max(first),
        "p50_admitted_ms": statistics.median(r["admitted_ms"] for r in results),
        "p50_answer_ms": statistics.median(r["answer_ms"] for r in results),
        "p50_wall_ms": statistics.median(r["wall_ms"] for r in results),
        "target_ms": TARGET_MS,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", help="an existing broker (default: start one with a private Redis)")
    ap.add_argument("--token", help="operator token for --api")
    ap.add_argument("--joins", type=int, default=5)
    ap.add_argument("--no-peer", action="store_true", help="join an empty conference")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    proc = None
    tmp = None
    if args.api:
        if not args.token:
            ap.error("--api needs --token")
        api, token = args.api.rstrip("/"), args.token
    else:
        token = "bench-" + os.urandom(8).hex()
        tmp = tempfile.TemporaryDirectory(prefix="backupplus-bench-")
        proc, api = _start_server(token, Path(tmp.name))
    try:
        out = run(api, token, args.joins, peer=not args.no_peer)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for i, r in enumerate(out["joins"]):
            print(
                f"join {i + 1}: first remote frame {r['first_frame_ms']:.0f} ms "
                f"(script {r['join_start_ms']:.0f}, admitted {r['admitted_ms']:.0f}, media {r['media_ms']:.0f}, "
                f"ICE {r['ice_ms']:.0f}, answer {r['answer_ms']:.0f} ms; wall {r['wall_ms']:.0f} ms)"
            )
        verdict = "OK" if out["p50_first_frame_ms"] <= TARGET_MS else "OVER TARGET"
        print(
            f"p50 open-link -> first remote frame: {out['p50_first_frame_ms']:.0f} ms "
            f"(min {out['min_first_frame_ms']:.0f}, max {out['max_first_frame_ms']:.0f}; "
            f"target <= {TARGET_MS} ms: {verdict})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
