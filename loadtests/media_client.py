"""Real WebRTC participants for the load test, in their own process (asyncio + aiortc; gevent stays out).

Protocol: one JSON job per line on stdin, one JSON result per line on stdout. A job joins ``peers``
video participants to one conference at once; each sends a synthetic 640x480 VP8 stream (non-trickle
offer, ICE gathered before sending, with the participant token the admission returned), waits for its first decoded remote video frame, keeps receiving
for ``hold`` seconds, then closes and DELETEs its participant. Per peer the result carries the time
from the join request to the first remote frame (``ttff_ms``), the join and offer/answer latencies,
frames received and the largest frame height seen.

    {"job": 1, "base": "http://127.0.0.1:8080", "conf": "...", "token": "...", "peers": 2, "hold": 4}

Run standalone for a quick check: ``python -m loadtests.media_client`` and type a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import signal
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

WIDTH, HEIGHT = 640, 480


def _allow_loopback_ice() -> None:
    """aioice leaves out 127.0.0.1 from host candidates; a loopback target needs it."""
    from aioice import ice

    original = ice.get_host_addresses

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addrs = original(use_ipv4, use_ipv6)
        return (["127.0.0.1"] + addrs) if use_ipv4 else addrs

    ice.get_host_addresses = with_loopback


def _make_frames(n: int) -> list[np.ndarray]:
    """A moving bar over a gradient, as yuv420p planes stacked (H*3/2, W)."""
    frames = []
    y = np.tile(np.linspace(16, 235, WIDTH, dtype=np.uint8), (HEIGHT, 1))
    uv = np.full((HEIGHT // 2, WIDTH), 128, dtype=np.uint8)
    for i in range(n):
        luma = y.copy()
        x0 = (i * WIDTH // n) % WIDTH
        luma[:, x0:x0 + 40] = 235
        luma[(i * 7) % HEIGHT:(i * 7) % HEIGHT + 20, :] = 40
        frames.append(np.vstack([luma, uv]))
    return frames


class SyntheticVideo:
    """A 640x480 video track at ``fps`` (built lazily: aiortc imports are heavy)."""

    _frames: list[np.ndarray] | None = None

    @classmethod
    def create(cls, fps: float) -> Any:
        import av
        from aiortc import MediaStreamTrack

        if cls._frames is None:
            cls._frames = _make_frames(30)
        frames = cls._frames

        class Track(MediaStreamTrack):
            kind = "video"

            def __init__(self) -> None:
                super().__init__()
                self._n = 0
                self._start: float | None = None

            async def recv(self) -> Any:
                if self._start is None:
                    self._start = time.monotonic()
                target = self._start + self._n / fps
                delay = target - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                frame = av.VideoFrame.from_ndarray(frames[self._n % len(frames)], format="yuv420p")
                frame.pts = int(self._n * 90000 / fps)
                frame.time_base = fractions.Fraction(1, 90000)
                self._n += 1
                return frame

        return Track()


async def _peer(session: aiohttp.ClientSession, job: dict[str, Any], index: int) -> dict[str, Any]:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack

    base = job["base"].rstrip("/")
    timeout = float(job.get("timeout", 10.0))
    res: dict[str, Any] = {"ok": False, "error": None, "participant": None}
    t0 = time.monotonic()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pid = None
    auth = {"Authorization": f"Bearer {job['token']}"}
    try:
        async with session.post(f"{base}/v1/conferences/{job['conf']}/participants", headers=auth,
                                json={"display_name": f"media-probe-{job['job']}-{index}", "kind": "video",
                                      "downgrade": False}) as r:
            body = await r.json(content_type=None)
            res["join_ms"] = (time.monotonic() - t0) * 1000
            res["join_status"] = r.status
            if isinstance(body, dict):
                res["join_code"] = body.get("code")
                res["granted"] = body.get("kind")
                res["preempting"] = bool(body.get("preempted"))
            if r.status != 201:
                res["error"] = f"join {r.status} {body.get('code') if isinstance(body, dict) else body}"
                return res
        pid = body["id"]
        res["participant"] = pid
        # from now on the participant acts alone, with its own token (the join token gets 403 there)
        auth = {"Authorization": f"Bearer {body['participant_token']}"}

        first_frame: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        stats = {"frames": 0, "max_height": 0, "width": 0}
        consumers: list[asyncio.Task[None]] = []

        async def consume(track: Any) -> None:
            try:
                while True:
                    frame = await track.recv()
                    if track.kind != "video":
                        continue
                    stats["frames"] += 1
                    stats["max_height"] = max(stats["max_height"], frame.height)
                    stats["width"] = max(stats["width"], frame.width)
                    if not first_frame.done():
                        first_frame.set_result(time.monotonic())
            except Exception:  # noqa: BLE001 - the track ended (peer closed): stop consuming
                return

        @pc.on("track")
        def on_track(track: Any) -> None:
            consumers.append(asyncio.ensure_future(consume(track)))

        pc.addTrack(SyntheticVideo.create(float(job.get("fps", 15))))
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())  # gathers ICE (non-trickle)
        t1 = time.monotonic()
        async with session.post(f"{base}/v1/participants/{pid}/offer", headers=auth,
                                json={"type": "offer", "sdp": pc.localDescription.sdp}) as r:
            answer = await r.json(content_type=None)
            res["offer_ms"] = (time.monotonic() - t1) * 1000
            if r.status != 200:
                res["error"] = f"offer {r.status} {answer.get('code') if isinstance(answer, dict) else answer}"
                return res
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        try:
            t_first = await asyncio.wait_for(first_frame, timeout)
        except TimeoutError:
            res["error"] = f"no remote video frame within {timeout:.0f} s (ice {pc.iceConnectionState})"
            return res
        res["ttff_ms"] = (t_first - t0) * 1000
        await asyncio.sleep(float(job.get("hold", 4.0)))
        res.update(stats)
        res["ok"] = True
        if stats["max_height"] > 480:
            res["ok"] = False
            res["error"] = f"received video of {stats['max_height']} lines (> 480)"
        return res
    except Exception as exc:  # noqa: BLE001 - reported to locust as a failure
        res["error"] = f"{type(exc).__name__}: {exc}"
        return res
    finally:
        await asyncio.shield(_cleanup(session, pc, base, pid, auth, res))


async def _cleanup(session: aiohttp.ClientSession, pc: Any, base: str, pid: str | None,
                   auth: dict[str, str], res: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pc.close(), 5)
    if pid is not None:
        try:
            async with session.delete(f"{base}/v1/participants/{pid}", headers=auth) as r:
                res["delete_status"] = r.status
        except Exception as exc:  # noqa: BLE001
            res["delete_status"] = f"{type(exc).__name__}"


async def run_job(session: aiohttp.ClientSession, job: dict[str, Any]) -> dict[str, Any]:
    peers = await asyncio.gather(*(_peer(session, job, i) for i in range(int(job.get("peers", 2)))))
    return {"job": job.get("job"), "peers": list(peers)}


async def amain() -> None:
    loop = asyncio.get_running_loop()
    current: dict[str, Any] = {"job": None, "stop": False}

    def on_term() -> None:   # cut the running job short: its peers still close and DELETE
        current["stop"] = True
        reader.feed_eof()
        task = current["job"]
        if task is not None and not task.done():
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_term)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    patched = False
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        print(json.dumps({"ready": True}), flush=True)
        while True:
            line = await reader.readline()
            if not line:
                break
            if not line.strip():
                continue
            job = json.loads(line)
            if not patched and urlsplit(job["base"]).hostname in {"127.0.0.1", "localhost"}:
                _allow_loopback_ice()
                patched = True
            if current["stop"]:
                break
            current["job"] = asyncio.ensure_future(run_job(session, job))
            try:
                result = await current["job"]
            except asyncio.CancelledError:
                break
            try:
                print(json.dumps(result), flush=True)
            except BrokenPipeError:
                break


def main() -> None:
    try:
        asyncio.run(amain())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
