"""One full outage on one media node: 10 video senders (640x480, 30 fps) + 8 audio participants.

Runs the node in its own process (so its CPU is measured apart from the clients'), once with the shared
encoder (one VP8 encode per composed frame) and once with per-receiver encoding, and prints the node's
CPU (cores), the frame rate each video receiver gets, the server-added video latency (source frame
decoded on the node -> composed frame packed for a receiver: p50/p95) and the node's peak memory.

The clients send pre-encoded VP8 / Opus packets (no client-side encoding) to leave the CPU to the node.

    .venv/bin/python benchmarks/media_outage.py [--seconds 20] [--fps 25] [--modes shared,per_receiver]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from broker.redisproc import RedisServer, free_port  # noqa: E402
from broker.settings import Settings  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- node child ----------------------------------------------------------------------------------
async def node_child(args: argparse.Namespace) -> None:
    import redis.asyncio as aioredis

    from media.internal import add_internal_routes
    from media.node import MediaNode

    redis = aioredis.Redis.from_url(args.redis_url, decode_responses=True)
    url = f"http://127.0.0.1:{args.port}"
    node = MediaNode(Settings(), url=url, node_id=f"bench-{args.mode}", fps=args.fps, video_mode=args.mode,
                     collect_stats=True)
    app = web.Application(client_max_size=1 << 20)
    add_internal_routes(app, lambda: node)

    async def stats(request: web.Request) -> web.Response:
        st = node.stats
        assert st is not None
        if request.query.get("reset"):
            st.samples.clear()
            st.sent.clear()
            st.composed = 0
            return web.json_response({"ok": True})
        lat = np.fromiter(st.samples, dtype=float) if st.samples else np.zeros(1)
        return web.json_response({
            "p50_ms": float(np.percentile(lat, 50) * 1000), "p95_ms": float(np.percentile(lat, 95) * 1000),
            "p99_ms": float(np.percentile(lat, 99) * 1000), "samples": len(st.samples), "sent": st.sent,
            "composed": st.composed, "sessions": len(node.sessions),
        })

    app.router.add_get("/bench/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    await node.start(redis)
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await node.stop()
    await runner.cleanup()
    await redis.aclose()


# --- clients -------------------------------------------------------------------------------------
def clip_vp8(width: int, height: int, frames: int, fps: int, seed: int) -> list[bytes]:
    """A smooth moving pattern (like a camera picture, not noise), encoded once at 500 kbit/s."""
    codec: Any = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate = 500_000
    codec.time_base = fractions.Fraction(1, fps)
    codec.gop_size = 10 * frames
    codec.options = {"deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0",
                     "minrate": "500000", "maxrate": "500000", "bufsize": "500000"}
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 6.28, 4)
    out = []
    for i in range(frames):
        t = i / fps
        y = 128 + 60 * np.sin(xx / 37 + t * 2 + phase[0]) + 50 * np.cos(yy / 23 - t * 3 + phase[1])
        buf = np.empty((height * 3 // 2, width), dtype=np.uint8)
        buf[:height] = np.clip(y, 0, 255)
        buf[height:] = 128 + int(40 * np.sin(phase[2] + t))
        frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
        frame.pts = i
        if i == 0:
            frame.pict_type = av.video.frame.PictureType.I
        out.append(b"".join(bytes(p) for p in codec.encode(frame)))
    return out


def clip_opus(freq: float, frames: int) -> list[bytes]:
    from aiortc.codecs.opus import OpusEncoder

    enc = OpusEncoder()
    out = []
    for n in range(frames):
        t = (np.arange(960) + n * 960) / 48000
        mono = (6000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = 48000, n * 960, fractions.Fraction(1, 48000)
        payloads, _ = enc.encode(frame)
        out.extend(payloads)
    return out


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_mode(mode: str, args: argparse.Namespace, redis_url: str, clips: dict[str, Any]) -> dict[str, Any]:
    import aiohttp
    import redis.asyncio as aioredis
    from aiortc.mediastreams import MediaStreamTrack

    from media.routing import MediaRouter
    from media.testing import Client, PacketTrack, admit, seed_conference
    from quotas.ledger import PortLedger

    class OpusPackets(MediaStreamTrack):
        kind = "audio"

        def __init__(self, packets: list[bytes]) -> None:
            super().__init__()
            self.packets, self._n, self._start = packets, 0, None

        async def recv(self) -> av.Packet:
            if self._start is None:
                self._start = time.monotonic()
            wait = self._start + self._n * 0.02 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            p = av.Packet(self.packets[self._n % len(self.packets)])
            p.pts, p.time_base = self._n * 960, fractions.Fraction(1, 48000)
            self._n += 1
            return p

    port = free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--node-child", "--mode", mode, "--redis-url", redis_url, "--port", str(port),
         "--fps", str(args.fps)],
        stdout=subprocess.PIPE, cwd=ROOT,
    )
    assert child.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
    assert line.strip() == b"ready", line
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    ledger = PortLedger(redis)
    router = MediaRouter(redis, Settings())
    oid, cid = await seed_conference(ledger)
    clients: list[Client] = []
    http = aiohttp.ClientSession()
    base = f"http://127.0.0.1:{port}"
    try:
        for i in range(10):
            p = await admit(ledger, oid, cid, f"Video {i + 1}", "video")
            clients.append(Client(p, audio=OpusPackets(clips["opus"][i % len(clips["opus"])]),
                                  video=PacketTrack(clips["vp8"][i % len(clips["vp8"])], 30)))
        for i in range(8):
            p = await admit(ledger, oid, cid, f"Phone {i + 1}", "audio")
            clients.append(Client(p, audio=OpusPackets(clips["opus"][(i + 10) % len(clips["opus"])]),
                                  want_video=False))
        for c in clients:
            await c.connect(router.offer)
        for c in clients:
            await c.wait_connected(30)
        await asyncio.sleep(args.warmup)
        await http.get(base + "/bench/stats?reset=1")
        counts0 = [c.video_frames for c in clients[:10]]
        cpu0, t0 = proc_cpu_s(child.pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu1, t1 = proc_cpu_s(child.pid), time.monotonic()
        counts1 = [c.video_frames for c in clients[:10]]
        async with http.get(base + "/bench/stats") as resp:
            st = await resp.json()
        wall = t1 - t0
        recv_fps = [(b - a) / wall for a, b in zip(counts0, counts1)]
        sent_fps = [n / wall for n in st["sent"].values()]
        audio_ok = sum(1 for c in clients if len(c.audio_chunks) > 0)
        return {
            "mode": mode, "cores": (cpu1 - cpu0) / wall, "composed_fps": st["composed"] / wall,
            "sent_fps_min": min(sent_fps) if sent_fps else 0.0, "sent_fps_mean": float(np.mean(sent_fps)) if sent_fps else 0.0,
            "recv_fps_min": min(recv_fps), "recv_fps_mean": float(np.mean(recv_fps)),
            "p50_ms": st["p50_ms"], "p95_ms": st["p95_ms"], "p99_ms": st["p99_ms"], "samples": st["samples"],
            "peak_mb": proc_peak_mb(child.pid), "audio_receivers": audio_ok, "max_height": max(c.max_height for c in clients),
        }
    finally:
        for c in clients:
            await c.close()
        await http.close()
        await router.close()
        await redis.aclose()
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


async def main_async(args: argparse.Namespace) -> None:
    t = time.monotonic()
    clips = {"vp8": [clip_vp8(640, 480, 60, 30, seed) for seed in range(3)],
             "opus": [clip_opus(200 + 90 * i, 50) for i in range(18)]}
    print(f"clips encoded in {time.monotonic() - t:.1f} s", flush=True)
    server = RedisServer().start()
    results = []
    client_cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        for mode in args.modes.split(","):
            results.append(await run_mode(mode, args, server.url, clips))
            print(json.dumps(results[-1]), flush=True)
    finally:
        server.stop()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print()
    print(f"full outage on one node: 10 video senders 640x480@30 (pre-encoded VP8) + 8 audio; "
          f"composed {args.fps:g} fps, {args.seconds:g} s measured after {args.warmup:g} s warm-up; "
          f"{os.cpu_count()} CPUs on the machine")
    head = f"{'':<34}" + "".join(f"{r['mode']:>16}" for r in results)
    print(head)
    rows = [
        ("node CPU (cores)", "cores", "{:.2f}"),
        ("composed frames/s", "composed_fps", "{:.1f}"),
        ("frames/s sent per receiver (min)", "sent_fps_min", "{:.1f}"),
        ("frames/s decoded by client (min)", "recv_fps_min", "{:.1f}"),
        ("frames/s decoded by client (mean)", "recv_fps_mean", "{:.1f}"),
        ("added latency p50 (ms)", "p50_ms", "{:.1f}"),
        ("added latency p95 (ms)", "p95_ms", "{:.1f}"),
        ("added latency p99 (ms)", "p99_ms", "{:.1f}"),
        ("node peak RSS (MiB)", "peak_mb", "{:.0f}"),
        ("max video height received", "max_height", "{}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:<34}" + "".join(f"{fmt.format(r[key]):>16}" for r in results))
    if len(results) == 2 and results[0]["cores"] > 0:
        print(f"per_receiver / shared CPU ratio: {results[1]['cores'] / results[0]['cores']:.2f}x")
    print(f"client process CPU over the whole run: {ru.ru_utime + ru.ru_stime - client_cpu0.ru_utime - client_cpu0.ru_stime:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--fps", type=float, default=25)
    p.add_argument("--modes", default="shared,per_receiver")
    p.add_argument("--node-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="shared", help=argparse.SUPPRESS)
    p.add_argument("--redis-url", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.node_child:
        asyncio.run(node_child(args))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
