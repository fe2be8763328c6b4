"""The benchmark's media node: the production ``MediaNode`` and ``Room`` with the switches only the
benchmark needs (none of them is a parameter of the production constructors),
and the node process of ``media_outage.py`` (its stats endpoint, event-loop lag probe, profiler).

- ``video_mode``: ``shared`` (production: the grid encoded once for every receiver) or
  ``per_receiver`` (each receiver's aiortc sender encodes the composed frame itself, aiortc's default):
  the comparison the benchmark is for.
- ``rtp_send``: ``direct`` (production, ``media.outbound``) or ``aiortc`` (one aiortc task per sender).
- ``decode_threads``: video decoder threads per conference.
- latency probes: every room reports to one ``LatencyStats``; each frame sent is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import web
from aiortc import RTCRtpSender

from infra.settings import Settings
from media import aiortc_compat, peer, srtp
from media.grid_encoder import VIDEO_TIME_BASE
from media.inbound import VideoDecoders
from media.internal import add_internal_routes
from media.node import MediaNode
from media.peer import Session
from media.room import Room
from media.stats import LatencyStats
from media.tracks import AudioOutTrack, VideoOutTrack
from media.video import VideoPipeline

MODES = ("shared", "per_receiver")


class PerReceiverVideo(VideoPipeline):
    """Hands every video receiver the raw composed frame: its aiortc sender encodes it (per receiver)."""

    def _encode(
        self, canvas: np.ndarray, pts: int, keyframe: bool, bitrate: int, composing_since: float
    ) -> Any:
        if self.stats is not None:
            self.stats.compose_cpu_s += time.thread_time() - composing_since
        return canvas.copy()  # the compositor draws the next frame on its canvas meanwhile

    def _send(self, canvas: np.ndarray, pts: int, fresh: list[float]) -> None:
        for m in self.members.values():
            if m.video_out is not None:
                frame = av.VideoFrame.from_ndarray(canvas, format="yuv420p")
                frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
                m.video_out.push(frame, fresh)


class BenchRoom(Room):
    """The production ``Room`` with the benchmark's switches: latency probes (``stats``), its decoder
    threads, and the per-receiver video mode."""

    def __init__(
        self, conference_id: str, *, fps: float, stats: LatencyStats, decode_threads: int, video_mode: str
    ) -> None:
        self.stats, self.decode_threads, self.video_mode = stats, decode_threads, video_mode
        super().__init__(conference_id, fps=fps)

    def _new_video(self, fps: float) -> VideoPipeline:
        pipeline = PerReceiverVideo if self.video_mode == "per_receiver" else VideoPipeline
        return pipeline(self.members, fps=fps, name=f"{self.prefix}-compose", stats=self.stats)

    def _new_decoders(self) -> VideoDecoders:
        return VideoDecoders(self.prefix, threads=self.decode_threads, stats=self.stats)


class BenchNode(MediaNode):
    """A ``MediaNode`` whose video mode, RTP sending and decoder threads the benchmark chooses, with
    latency probes on every video sender."""

    def __init__(
        self,
        settings: Settings,
        *,
        url: str,
        node_id: str,
        fps: float,
        video_mode: str = "shared",
        rtp_send: str = "direct",
        decode_threads: int = 2,
    ) -> None:
        super().__init__(settings, url=url, node_id=node_id, fps=fps)
        if video_mode not in MODES:
            raise ValueError(f"video mode {video_mode!r}: one of {MODES}")
        self.video_mode, self.rtp_send, self.decode_threads = video_mode, rtp_send, decode_threads
        self.stats = LatencyStats()

    def _new_room(self, conference: str) -> Room:
        return BenchRoom(
            conference, fps=self.fps, stats=self.stats, decode_threads=self.decode_threads, video_mode=self.video_mode
        )

    def _audio_sender(self, session: Session, sender: RTCRtpSender, track: AudioOutTrack) -> None:
        if self.rtp_send == "direct":
            peer.send_directly(session, sender, track)

    def _video_sender(self, session: Session, room: Room, sender: RTCRtpSender, track: VideoOutTrack) -> None:
        shared = self.video_mode == "shared"
        if shared:  # per receiver: each aiortc sender hears its own receiver's PLI and REMB
            peer.route_feedback(session, room, sender)
        self._probe_latency(session, sender, track)
        if shared and self.rtp_send == "direct":
            peer.send_directly(session, sender, track)

    def _probe_latency(self, session: Session, sender: RTCRtpSender, track: VideoOutTrack) -> None:
        """Time each frame sent to this receiver: from its source frames' arrival to its sending."""
        stats, pid = self.stats, session.pid

        def on_sent(sources: list[float]) -> None:
            now = time.monotonic()
            for t in sources:
                stats.samples.append(now - t)
            stats.sent[pid] = stats.sent.get(pid, 0) + 1

        def sent_by_aiortc() -> None:  # a frame taken by aiortc's own sender task
            on_sent(track.last_sources)
            track.last_sources = []

        track.on_sent = on_sent  # a frame sent by the room (direct sending)
        session.hooks.append(aiortc_compat.after_each_encoded_frame(sender, sent_by_aiortc))

    # --- what the stats endpoint reads ---------------------------------------------------------------
    def audio_encodes(self) -> int:
        return sum(r.audio.encodes for r in self.rooms.values())

    def keyframes(self) -> int:
        return sum(r.video.keyframes for r in self.rooms.values())

    def bitrates(self) -> list[int]:
        return [r.video.encoder.bitrate for r in self.rooms.values() if r.video.encoder is not None]


class LoopLag:
    """How late the event loop runs a 10 ms timer (the last 5,000 samples)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            self.samples.append(time.monotonic() - t - 0.01)
            del self.samples[:-5000]


def _ms(values: Any, q: float) -> float:
    """The q-th percentile of seconds, in ms (0 without samples)."""
    data = np.fromiter(values, dtype=float)
    return float(np.percentile(data, q) * 1000) if data.size else 0.0


def reset_stats(node: BenchNode, lag: LoopLag) -> None:
    """The measurement starts now: every counter and sample of the warm-up dropped."""
    st = node.stats
    st.samples.clear()
    st.sent.clear()
    st.composed = st.held = st.received = 0
    st.compose_cpu_s = st.encode_cpu_s = 0.0
    st.compose_s.clear()
    st.queue_s.clear()
    lag.samples.clear()


def report_stats(node: BenchNode, lag: LoopLag) -> dict[str, Any]:
    """What the node measured since the last reset."""
    st = node.stats
    lat = np.fromiter(st.samples, dtype=float) if st.samples else np.zeros(1)
    return {
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p95_ms": float(np.percentile(lat, 95) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "samples": len(st.samples),
        "sent": st.sent,
        "composed": st.composed,
        "held": st.held,
        "received": st.received,
        "compose_cpu_ms": st.compose_cpu_s * 1000 / max(1, st.composed),
        "encode_cpu_ms": st.encode_cpu_s * 1000 / max(1, st.composed),
        "keyframes": node.keyframes(),
        "audio_encodes": node.audio_encodes(),
        "bitrate": node.bitrates(),
        "sessions": len(node.sessions),
        "compose_p50_ms": _ms(st.compose_s, 50),
        "compose_p95_ms": _ms(st.compose_s, 95),
        "lag_p50_ms": _ms(lag.samples, 50),
        "lag_p95_ms": _ms(lag.samples, 95),
        "queue_p95_ms": _ms(st.queue_s, 95),
    }


def bench_app(node: BenchNode, lag: LoopLag, profile: str) -> web.Application:
    """The node's internal routes and ``GET /bench/stats`` (``?reset=1``: start measuring; without:
    report, and write the profile if one was asked for)."""
    app = web.Application(client_max_size=1 << 20)
    add_internal_routes(app, lambda: node)
    profiler = cProfile.Profile()

    async def stats(request: web.Request) -> web.Response:
        if request.query.get("reset"):
            if profile:
                profiler.enable()
            reset_stats(node, lag)
            return web.json_response({"ok": True, "audio_encodes": node.audio_encodes()})
        if profile:
            profiler.disable()
            profiler.dump_stats(profile)
        return web.json_response(report_stats(node, lag))

    app.router.add_get("/bench/stats", stats)
    return app


def enter_cpu_budget(args: argparse.Namespace) -> None:
    """Pin the process and join its CPU-quota cgroup, before any thread starts: every thread of the
    node inherits them."""
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.cgroup:
        (Path(args.cgroup) / "cgroup.procs").write_text(str(os.getpid()))


async def node_child(args: argparse.Namespace) -> None:
    """The node process: a ``BenchNode`` on ``args.port`` until SIGTERM; prints ``ready`` once up."""
    import redis.asyncio as aioredis

    enter_cpu_budget(args)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval / 1000)
    if args.srtp_gil == "hold":  # the composition root's process-wide patch, as `backupplus media` does
        srtp.install()
    redis = aioredis.Redis.from_url(args.redis_url, decode_responses=True)
    node = BenchNode(
        Settings(media_remote_candidates="loopback"),  # its clients run on this machine
        url=f"http://127.0.0.1:{args.port}",
        node_id=f"bench-{args.mode}",
        fps=args.fps,
        video_mode=args.mode,
        rtp_send=args.rtp_send,
        decode_threads=args.decode_threads,
    )
    lag = LoopLag()
    lag.start()
    runner = web.AppRunner(bench_app(node, lag, args.profile))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    await node.start(redis)
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    lag.stop()
    await node.stop()
    await runner.cleanup()
    await redis.aclose()
