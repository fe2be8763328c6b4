"""Our media node against Janus, side by side: the same clients, one run.

Three servers get the same full outage (10 video senders 640x480@30, pre-encoded VP8, + 8 audio; the
18 send Opus tones, all talking) from the same aiortc clients:

- **ours**: the media node, as ``benchmarks/media_outage.py`` runs it (own process, shared encoder): every
  participant has one peer connection, gets one mix-minus audio stream, and video participants one
  854x480 grid (MCU);
- **Janus** (Debian's ``janus``, started here with its own configuration in a temp folder, HTTP API on
  loopback): AudioBridge mixes the 18 audio streams (mix-minus, like ours); VideoRoom forwards each
  video sender to the 9 other video participants (SFU). A video participant has three peer connections
  there (AudioBridge, publisher, multistream subscriber), as a Janus deployment of this service would.

Then, by default, the audio job alone: 18 audio-only talkers on each (our node; AudioBridge).

Printed per server: server CPU (cores), frames/s received per video stream, added latency p50/p95
(client-side probe, see ``docs/PEERS.md``), downlink per video receiver, audio CPU per talker, picture
quality (PSNR, luma) of what a receiver gets against the senders' own pictures; then ours/Janus.

    .venv/bin/python benchmarks/peers.py [--seconds 20] [--warmup 4] [--plot docs/img/peers.png]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import glob
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from media.mixer import CANVAS_H, CANVAS_W, fit, grid

from benchmarks import media_outage as mo
from benchmarks.janus_client import JanusError, JanusHandle, JanusSession
from infra import eventloop
from infra.redisproc import RedisServer, free_port
from tests.support.media_clients import PacketTrack

JANUS = "/usr/bin/janus"
JANUS_AUDIO_THREADS = {"mixer"}  # what Janus 1.1.2 names the AudioBridge room's thread
ROOM = 1234
VIDEO, AUDIO = 10, 8
CLIPS = 3  # distinct sender pictures (sender i sends clip i % CLIPS)
CLIP_FRAMES, CLIP_FPS = 60, 30
LABEL_ROWS = 16  # the grid's name label at the bottom of a tile: left out of the PSNR
MATCH_WINDOW_S = 1.5  # a grid tile is matched against the frames its sender sent this long before
ANALYSE_EVERY = 3
CLIENT_RCVBUF = 4 << 20  # PSNR / grid latency: every third received frame in the window


# --- clients -------------------------------------------------------------------------------------
class LoggedPacketTrack(PacketTrack):
    """A pre-encoded VP8 sender that logs when it hands each frame to its RTP sender (the latency
    probe's start) and which picture of the clip that frame is."""

    def __init__(self, packets: list[bytes], fps: float) -> None:
        super().__init__(packets, fps)
        self.times: list[float] = []
        self.indices: list[int] = []
        self.last_sent: dict[int, float] = {}

    async def recv(self) -> av.Packet:
        packet = await super().recv()
        n = round(packet.pts * self.fps / 90000) % len(self.packets)
        now = time.monotonic()
        self.times.append(now)
        self.indices.append(n)
        self.last_sent[n] = now
        return packet

    def sent_between(self, t0: float, t1: float) -> list[tuple[float, int]]:
        lo, hi = bisect.bisect_left(self.times, t0), bisect.bisect_right(self.times, t1)
        return list(zip(self.times[lo:hi], self.indices[lo:hi]))


@dataclass
class VideoIn:
    """One video stream a client takes in full: frames counted where aiortc's jitter buffer completes
    them (the node's tap, so no decoder runs in the client process)."""

    sender: int | None  # the video sender it carries (SFU); None for our grid
    frames: int = 0
    record: list[tuple[float, bytes]] | None = None  # (arrival, frame) for the PSNR/latency analysis
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (arrival, latency), SFU


class Link:
    """One client peer connection as the probe sees it. Every SRTP packet is counted where it arrives
    (before decryption: the downlink on the wire, less UDP/IP headers) by SSRC, with its RTP marker
    bits (one per video frame). A *light* link stops there: its video packets are not decrypted or
    reassembled, so that one Python process can take in 90 forwarded streams (its frame rate is then
    read from the marker bits); the others go on through aiortc's receivers to the probe's taps."""

    def __init__(self, video_receiver: bool, light: bool) -> None:
        self.video_receiver, self.light = video_receiver, light
        self.streams: list[VideoIn] = []
        self.audio_frames = 0
        self.ssrc_bytes: dict[int, int] = {}
        self.ssrc_marks: dict[int, int] = {}
        self.ssrc_pt: dict[int, int] = {}
        self.video_pts: set[int] = set()
        self.primary_video_pts: set[int] = set()

    def on_srtp(self, data: bytes) -> None:
        ssrc = int.from_bytes(data[8:12], "big")
        self.ssrc_bytes[ssrc] = self.ssrc_bytes.get(ssrc, 0) + len(data)
        self.ssrc_pt[ssrc] = data[1] & 0x7F
        if data[1] & 0x80:
            self.ssrc_marks[ssrc] = self.ssrc_marks.get(ssrc, 0) + 1

    def video_bytes(self) -> int:
        return sum(n for ssrc, n in self.ssrc_bytes.items() if self.ssrc_pt[ssrc] in self.video_pts)

    def frame_counts(self) -> dict[Any, int]:
        if self.light:
            return {s: n for s, n in self.ssrc_marks.items() if self.ssrc_pt[s] in self.primary_video_pts}
        return {i: s.frames for i, s in enumerate(self.streams)}


class CountingSrtp:
    """Stands in for a DTLS transport's inbound SRTP session: counts each packet, then decrypts it
    (or, on a light link, hands the video packets on as they are, to be dropped)."""

    def __init__(self, session: Any, link: Link) -> None:
        self.session, self.link = session, link

    def unprotect(self, data: bytes) -> bytes:
        self.link.on_srtp(data)
        if self.link.light and data[1] & 0x7F in self.link.video_pts:
            return data
        return bytes(self.session.unprotect(data))

    def unprotect_rtcp(self, data: bytes) -> bytes:
        return bytes(self.session.unprotect_rtcp(data))


def sdp_video_pts(sdp: str) -> tuple[set[int], set[int]]:
    """Payload types of the video m-sections of an SDP: all of them, and those that are not RTX."""
    every, primary, in_video = set(), set(), False
    rtx: set[int] = set()
    for line in sdp.splitlines():
        if line.startswith("m="):
            in_video = line.startswith("m=video")
            if in_video:
                every |= {int(pt) for pt in line.split()[3:] if pt.isdigit()}
        elif in_video and line.startswith("a=rtpmap:") and " rtx/" in line.lower():
            rtx.add(int(line[9:].split()[0]))
    primary = every - rtx
    return every, primary


@dataclass
class Probe:
    """What the clients saw: their links (peer connections) and the senders' logs."""

    senders: list[LoggedPacketTrack]
    frame_index: dict[bytes, int]  # a sender's encoded frame -> its picture index in the clip
    links: list[Link] = field(default_factory=list)

    def watch(
        self,
        pc: Any,
        *,
        video_receiver: bool,
        sender_of_mid: Callable[[str], int | None] | None = None,
        record: bool = False,
        light: bool = False,
    ) -> Link:
        """Tap every receiver of ``pc`` (call before the remote description is applied, and
        :meth:`count` once it is connected)."""
        from media import inbound

        link = Link(video_receiver, light)
        self.links.append(link)

        @pc.on("track")
        def on_track(track: Any) -> None:
            receiver = inbound.receiver_of(pc, track)
            if receiver is None:
                return
            if track.kind == "audio":

                def count_audio(codec: Any, frame: Any) -> None:
                    link.audio_frames += 1

                inbound.install(receiver, count_audio)
                return
            mid = next((t.mid for t in pc.getTransceivers() if t.receiver is receiver), None)
            stream = VideoIn(sender_of_mid(str(mid)) if sender_of_mid else None, record=[] if record else None)
            link.streams.append(stream)
            inbound.install(receiver, lambda codec, frame: self._on_frame(stream, frame))

        return link

    @staticmethod
    def count(pc: Any, link: Link) -> None:
        """Count the SRTP of a connected peer connection (its DTLS transports have their keys)."""
        link.video_pts, link.primary_video_pts = sdp_video_pts(pc.remoteDescription.sdp)
        seen = set()
        for t in pc.getTransceivers():
            dtls = t.receiver.transport
            if dtls is None or id(dtls) in seen or dtls._rx_srtp is None:
                continue
            seen.add(id(dtls))
            dtls._rx_srtp = CountingSrtp(dtls._rx_srtp, link)
            for protocol in dtls.transport._connection._protocols:
                # The client process shares its CPU with the machine's other tenants: room for bursts
                # while it waits (aioice asks for 256 KiB; the kernel caps this at net.core.rmem_max).
                sock = protocol.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
            if link.light:
                original = dtls._handle_rtp_data

                async def drop_video(data: bytes, arrival_time_ms: int, original: Any = original) -> None:
                    if data[1] & 0x7F not in link.video_pts:
                        await original(data, arrival_time_ms)

                dtls._handle_rtp_data = drop_video

    def _on_frame(self, stream: VideoIn, frame: Any) -> None:
        now = time.monotonic()
        stream.frames += 1
        data = bytes(frame.data)
        if stream.record is not None:
            stream.record.append((now, data))
        if stream.sender is not None:  # forwarded as sent: the frame tells which picture it is
            index = self.frame_index.get(data)
            sent = self.senders[stream.sender].last_sent.get(index) if index is not None else None
            if sent is not None:
                stream.latencies.append((now, now - sent))

    def streams(self) -> list[VideoIn]:
        return [s for link in self.links for s in link.streams]


# --- measuring a server process ------------------------------------------------------------------
class Window:
    """CPU, frames and bytes over the measured window."""

    def __init__(self, pid: int, probe: Probe) -> None:
        self.pid, self.probe = pid, probe

    def _snap(self) -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        receivers = [link for link in self.probe.links if link.video_receiver]
        return {
            "t": time.monotonic(),
            "cpu": mo.proc_cpu_s(self.pid),
            "threads": threads_by_name(self.pid),
            "frames": [link.frame_counts() for link in receivers],
            "bytes": [link.video_bytes() for link in receivers],
            "client": ru.ru_utime + ru.ru_stime,
            "load": os.getloadavg()[0],
            "sent": [len(s.times) for s in self.probe.senders],
            "drops": (udp_drops(self.pid), udp_drops(os.getpid())),
            "audio": sum(1 for link in self.probe.links if link.audio_frames),
        }

    async def measure(self, seconds: float) -> dict[str, Any]:
        a = self._snap()
        await asyncio.sleep(seconds)
        b = self._snap()
        wall = b["t"] - a["t"]
        fps = [
            (after.get(key, 0) - before.get(key, 0)) / wall
            for before, after in zip(a["frames"], b["frames"])
            for key in after
        ]
        downlink = [(y - x) * 8 / wall / 1000 for x, y in zip(a["bytes"], b["bytes"])]
        names = set(a["threads"]) | set(b["threads"])
        return {
            "t0": a["t"],
            "t1": b["t"],
            "cores": (b["cpu"] - a["cpu"]) / wall,
            "threads": {n: (b["threads"].get(n, 0.0) - a["threads"].get(n, 0.0)) / wall for n in names},
            "recv_fps_min": min(fps, default=0.0),
            "recv_fps_mean": float(np.mean(fps)) if fps else 0.0,
            "video_streams": len(fps),
            "video_receivers": len(downlink),
            "downlink_kbps": float(np.mean(downlink)) if downlink else 0.0,
            "sent_fps": float(np.mean([(y - x) / wall for x, y in zip(a["sent"], b["sent"])])) if a["sent"] else 0.0,
            "client_cores": (b["client"] - a["client"]) / wall,
            "loadavg": (a["load"] + b["load"]) / 2,
            "audio_receivers": b["audio"],
            "peak_mb": mo.proc_peak_mb(self.pid),
            "server_udp_drops": b["drops"][0] - a["drops"][0],
            "client_udp_drops": b["drops"][1] - a["drops"][1],
        }


def udp_drops(pid: int) -> int:
    """Datagrams the kernel dropped because a socket of ``pid`` had a full receive buffer."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                total += int(cols[-1])
    return total


def threads_by_name(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, grouped by OS thread name (digits dropped)."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            cpu = mo._task_cpu_s(pid, int(tid))
        except (OSError, ValueError):
            continue
        key = "main" if int(tid) == pid else name.rstrip("0123456789 #-").strip() or name
        out[key] = out.get(key, 0.0) + cpu
    return out


# --- Janus ---------------------------------------------------------------------------------------
class JanusServer:
    """Debian's Janus as a child process: its own configuration in a temp folder (only the AudioBridge
    and VideoRoom plugins and the HTTP transport, bound to loopback on a free port), stopped at the end."""

    def __init__(self, cpus: set[int] | None) -> None:
        self.cpus = cpus
        self.dir = Path(tempfile.mkdtemp(prefix="backupplus-janus-"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/janus"
        self.proc: subprocess.Popen[bytes] | None = None

    def _configure(self) -> Path:
        if not Path(JANUS).exists():
            raise SystemExit(f"{JANUS} is missing: `make setup-test` installs the Debian package janus")
        libdir = next(iter(glob.glob("/usr/lib/*/janus")), None)
        if libdir is None:
            raise SystemExit("Janus's plugins are missing (/usr/lib/<arch>/janus)")
        conf, plugins, transports, empty = (self.dir / d for d in ("conf", "plugins", "transports", "none"))
        for d in (conf, plugins, transports, empty):
            d.mkdir()
        for name in ("libjanus_audiobridge.so", "libjanus_videoroom.so"):
            (plugins / name).symlink_to(f"{libdir}/plugins/{name}")
        (transports / "libjanus_http.so").symlink_to(f"{libdir}/transports/libjanus_http.so")
        (conf / "janus.jcfg").write_text(
            f"""general: {{
  configs_folder = "{conf}"
  plugins_folder = "{plugins}"
  transports_folder = "{transports}"
  events_folder = "{empty}"
  loggers_folder = "{empty}"
  debug_level = 3
  session_timeout = 60
}}
media: {{ }}
nat: {{ nice_debug = false }}
plugins: {{ }}
transports: {{ }}
loggers: {{ }}
events: {{ }}
"""
        )
        (conf / "janus.transport.http.jcfg").write_text(
            f"""general: {{
  json = "compact"
  base_path = "/janus"
  http = true
  port = {self.port}
  ip = "127.0.0.1"
  https = false
}}
admin: {{ admin_http = false }}
"""
        )
        (conf / "janus.plugin.audiobridge.jcfg").write_text(
            f"""general: {{ }}
room-{ROOM}: {{
  description = "Backup+ benchmark"
  sampling_rate = 48000
  record = false
}}
"""
        )
        (conf / "janus.plugin.videoroom.jcfg").write_text(
            f"""general: {{ }}
room-{ROOM}: {{
  description = "Backup+ benchmark"
  publishers = {VIDEO}
  bitrate = 1000000
  fir_freq = 10
  videocodec = "vp8"
  audiocodec = "opus"
  notify_joining = false
}}
"""
        )
        return conf

    def _spawn(self) -> None:
        conf = self._configure()
        # pinned from its first instruction (its threads inherit it), as our node pins itself
        pin = ["taskset", "-c", ",".join(map(str, sorted(self.cpus)))] if self.cpus else []
        with (self.dir / "janus.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [*pin, JANUS, "-C", str(conf / "janus.jcfg"), "-F", str(conf), "-o"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self, http: Any) -> None:
        self._spawn()
        assert self.proc is not None
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"janus exited:\n{self.log_tail()}")
            try:
                async with http.post(self.base, json={"janus": "info", "transaction": "ready"}) as resp:
                    if (await resp.json(content_type=None)).get("janus") == "server_info":
                        return
            except OSError:
                pass
            except Exception as exc:  # aiohttp's connection errors while Janus starts
                if time.monotonic() > deadline:
                    raise SystemExit(f"janus not ready: {exc}\n{self.log_tail()}") from exc
            if time.monotonic() > deadline:
                raise SystemExit(f"janus not ready within 20 s\n{self.log_tail()}")
            await asyncio.sleep(0.2)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self) -> str:
        try:
            return "\n".join((self.dir / "janus.log").read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


async def janus_message_retry(handle: JanusHandle, body: dict[str, Any], jsep: Any = None) -> tuple[Any, Any]:
    """A VideoRoom request that may come before Janus has the feeds it names (428: no such feed)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await handle.message(body, jsep)
        except JanusError as exc:
            if " 428 " not in f"{exc} " or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def janus_phase(args: argparse.Namespace, clips: dict[str, Any], audio_only: bool) -> dict[str, Any]:
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from tests.support.media_clients import Client

    server = JanusServer({args.server_cpu} if args.server_cpu is not None else None)
    http = aiohttp.ClientSession()
    sessions: list[JanusSession] = []
    clients: list[Client] = []
    pcs: list[Any] = []
    video = 0 if audio_only else VIDEO
    senders = [LoggedPacketTrack(clips["vp8"][i % CLIPS], CLIP_FPS) for i in range(video)]
    probe = Probe(senders, clips["index"])
    try:
        await server.start(http)
        for i in range(VIDEO + AUDIO):
            session = await JanusSession.create(http, server.base)
            sessions.append(session)
            bridge = await session.attach("janus.plugin.audiobridge")
            name = f"Video {i + 1}" if i < video else f"Phone {i + 1}"
            await bridge.message({"request": "join", "room": ROOM, "display": name})
            client = Client(
                {"id": name}, audio=mo.OpusPackets(clips["opus"][i % len(clips["opus"])]), want_video=False
            )
            clients.append(client)
            link = probe.watch(client.pc, video_receiver=False)

            async def configure(
                participant: dict[str, Any], sdp: str, sdp_type: str, bridge: JanusHandle = bridge
            ) -> dict[str, str]:
                _, jsep = await bridge.message({"request": "configure", "muted": False}, {"type": sdp_type, "sdp": sdp})
                assert jsep is not None
                return jsep

            await client.connect(configure)
            await client.wait_connected(60)
            probe.count(client.pc, link)
        feeds: list[int] = []
        for i in range(video):  # publishers
            handle = await sessions[i].attach("janus.plugin.videoroom")
            joined, _ = await handle.message(
                {"request": "join", "ptype": "publisher", "room": ROOM, "display": f"Video {i + 1}"}
            )
            feeds.append(int(joined["id"]))
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pcs.append(pc)
            pc.addTransceiver(senders[i], direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            _, jsep = await handle.message({"request": "publish"}, {"type": "offer", "sdp": pc.localDescription.sdp})
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
            await wait_connected(pc)
        for i in range(video):  # subscribers: the 9 others each
            handle = await sessions[i].attach("janus.plugin.videoroom")
            others = [feeds[j] for j in range(video) if j != i]
            attached, jsep = await janus_message_retry(
                handle,
                {"request": "join", "ptype": "subscriber", "room": ROOM, "streams": [{"feed": f} for f in others]},
            )
            sender_of = {str(s["mid"]): feeds.index(int(s["feed_id"])) for s in attached["streams"]}
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pcs.append(pc)
            sampled = i in args.sample_sfu
            link = probe.watch(pc, video_receiver=True, sender_of_mid=sender_of.get, record=sampled, light=not sampled)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type=jsep["type"]))
            await pc.setLocalDescription(await pc.createAnswer())
            await handle.message({"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp})
            await wait_connected(pc)
            probe.count(pc, link)
        await asyncio.sleep(args.warmup)
        result = await Window(server.pid, probe).measure(args.seconds)
        result["server"] = "janus-audiobridge" if audio_only else "janus"
        result["talkers"] = VIDEO + AUDIO
        # the AudioBridge's mixing thread (mixes and encodes; the Opus decodes run in the handles' loops)
        result["audio_cores"] = sum(c for n, c in result["threads"].items() if n in JANUS_AUDIO_THREADS)
        if not audio_only:
            latencies = [lat for s in probe.streams() for t, lat in s.latencies if result["t0"] <= t <= result["t1"]]
            result.update(percentiles(latencies))
            result.update(sfu_quality(probe, clips, result["t0"], result["t1"]))
        return result
    except BaseException:
        print(f"janus log (last lines):\n{server.log_tail()}", file=sys.stderr, flush=True)
        raise
    finally:
        for c in clients:
            await c.close()
        for pc in pcs:
            await pc.close()
        for s in sessions:
            await s.destroy()
        await http.close()
        server.stop()


async def wait_connected(pc: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if time.monotonic() > deadline or pc.connectionState in ("failed", "closed"):
            raise TimeoutError(f"peer connection {pc.connectionState}")
        await asyncio.sleep(0.05)


# --- our node ------------------------------------------------------------------------------------
async def ours_phase(
    args: argparse.Namespace, redis_url: str, clips: dict[str, Any], audio_only: bool
) -> dict[str, Any]:
    import aiohttp
    import redis.asyncio as aioredis

    from infra.settings import Settings
    from media.routing import MediaRouter
    from quotas import nodes as registry
    from quotas.ledger import PortLedger
    from tests.support.media_clients import Client, admit, seed_conference

    port = free_port()
    node_id = "bench-shared"
    child = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
        [
            sys.executable,
            str(Path(mo.__file__)),
            "--node-child",
            "--loop",
            args.loop,
            "--mode",
            "shared",
            "--redis-url",
            redis_url,
            "--port",
            str(port),
            "--fps",
            "25",
            "--switch-interval",
            "1",
            "--cpus",
            "" if args.server_cpu is None else str(args.server_cpu),
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    await mo.wait_ready(child)
    redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    for other in await registry.live_nodes(redis):  # a previous phase's node, if it lingers
        if other != node_id:
            await registry.unregister(redis, other)
    ledger = PortLedger(redis)
    router = MediaRouter(redis, Settings())
    video = 0 if audio_only else VIDEO
    oid, cid = await seed_conference(ledger, audio=VIDEO + AUDIO - video, video=video)
    senders = [LoggedPacketTrack(clips["vp8"][i % CLIPS], CLIP_FPS) for i in range(video)]
    probe = Probe(senders, clips["index"])
    clients: list[Client] = []
    http = aiohttp.ClientSession()
    try:
        for i in range(VIDEO + AUDIO):
            opus = mo.OpusPackets(clips["opus"][i % len(clips["opus"])])
            if i < video:
                p = await admit(ledger, oid, cid, f"Video {i + 1}", "video")
                client = Client(p, audio=opus, video=senders[i])
            else:
                p = await admit(ledger, oid, cid, f"Phone {i + 1}", "audio")
                client = Client(p, audio=opus, want_video=False)
            clients.append(client)
            link = probe.watch(client.pc, video_receiver=i < video, record=i in args.sample_mcu)
            # one by one, as media_outage.py does; each admitted just before (its admission lease is
            # 30 s, and 18 handshakes can take longer than that on a busy machine)
            await client.connect(router.offer)
            await client.wait_connected(60)
            probe.count(client.pc, link)
        await asyncio.sleep(args.warmup)
        async with http.get(f"http://127.0.0.1:{port}/bench/stats?reset=1") as resp:
            await resp.json()
        result = await Window(child.pid, probe).measure(args.seconds)
        async with http.get(f"http://127.0.0.1:{port}/bench/stats") as resp:
            st = await resp.json()
        result["server"] = "ours-audio" if audio_only else "ours"
        result["talkers"] = VIDEO + AUDIO
        result["audio_cores"] = result["threads"].get("mcu-audio", 0.0)
        result["node_p50_ms"], result["node_p95_ms"] = st["p50_ms"], st["p95_ms"]
        if not audio_only:
            result.update(grid_quality(probe, clips, result["t0"], result["t1"]))
        return result
    finally:
        for c in clients:
            await c.close()
        await http.close()
        await router.close()
        await redis.aclose()
        mo.stop_node(child)


# --- picture quality and the grid's latency ------------------------------------------------------
def luma(frame: av.VideoFrame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The Y plane (int16), scaled with a good filter when a size is given (as a browser draws a tile)."""
    if width is not None and height is not None:
        frame = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
    else:
        frame = frame.reformat(format="yuv420p")
    return frame.to_ndarray()[: frame.height].astype(np.int16)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b).astype(np.float32) ** 2))
    return 99.0 if mse == 0 else 10 * float(np.log10(255 * 255 / mse))


def tile_geometry() -> tuple[list[tuple[int, int]], int, int]:
    """Where our grid puts each of the 10 senders' pictures (top-left corners) and their size."""
    origins = []
    tw = th = 0
    for x, y, cw, ch in grid(VIDEO):
        tw, th = fit(640, 480, cw, ch)
        origins.append((x + ((cw - tw) // 2 & ~1), y + ((ch - th) // 2 & ~1)))
    return origins, tw, th


def reference_tiles(clips: dict[str, Any], tw: int, th: int) -> list[list[np.ndarray]]:
    """Each clip picture scaled to a tile (label rows left out): what a perfect grid would show."""
    out = []
    for pictures in clips["pictures"]:
        out.append(
            [luma(av.VideoFrame.from_ndarray(p, format="yuv420p"), tw, th)[: th - LABEL_ROWS] for p in pictures]
        )
    return out


def decoded(record: list[tuple[float, bytes]]) -> list[tuple[float, av.VideoFrame]]:
    """A received stream decoded in order (frames that do not decode are left out)."""
    decoder: Any = av.CodecContext.create("vp8", "r")
    out = []
    for t, data in record:
        try:
            frames = decoder.decode(av.Packet(data))
        except av.error.FFmpegError:
            continue
        out.extend((t, f) for f in frames)
    return out


def grid_quality(probe: Probe, clips: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    """PSNR of each grid tile against its sender's pictures, and the latency from the sender's frame
    to the grid frame showing it. A tile is matched to the picture, among those its sender sent in the
    last ``MATCH_WINDOW_S``, that it resembles best."""
    origins, tw, th = tile_geometry()
    refs = reference_tiles(clips, tw, th)
    scores, latencies = [], []
    for stream in probe.streams():
        if stream.record is not None:
            for k, (t, frame) in enumerate(decoded(stream.record)):
                if not t0 <= t <= t1 or k % ANALYSE_EVERY or frame.width != CANVAS_W or frame.height != CANVAS_H:
                    continue
                y_plane = luma(frame)
                for s, (ox, oy) in enumerate(origins):
                    tile = y_plane[oy : oy + th - LABEL_ROWS, ox : ox + tw]
                    candidates = probe.senders[s].sent_between(t - MATCH_WINDOW_S, t)
                    if not candidates:
                        continue
                    best = max(candidates, key=lambda c: psnr(tile, refs[s % CLIPS][c[1]]))
                    scores.append(psnr(tile, refs[s % CLIPS][best[1]]))
                    latencies.append(t - best[0])
    return {"psnr_tile_db": float(np.mean(scores)) if scores else 0.0, "psnr_samples": len(scores)} | percentiles(
        latencies
    )


def sfu_quality(probe: Probe, clips: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    """PSNR of the forwarded streams against the senders' pictures: at full size, and scaled into the
    same tile as our grid's (what the receiver's browser would draw for a 10-person layout)."""
    _, tw, th = tile_geometry()
    refs = reference_tiles(clips, tw, th)
    full, tiles = [], []
    for stream in probe.streams():
        if stream.record is not None and stream.sender is not None:
            clip = stream.sender % CLIPS
            frames = decoded(stream.record)
            data_at = dict(stream.record)
            for k, (t, frame) in enumerate(frames):
                index = probe.frame_index.get(data_at.get(t, b""))
                if not t0 <= t <= t1 or k % ANALYSE_EVERY or index is None:
                    continue
                picture = clips["pictures"][clip][index]
                full.append(psnr(luma(frame), picture[:480].astype(np.int16)))
                tiles.append(psnr(luma(frame, tw, th)[: th - LABEL_ROWS], refs[clip][index]))
    return {
        "psnr_full_db": float(np.mean(full)) if full else 0.0,
        "psnr_tile_db": float(np.mean(tiles)) if tiles else 0.0,
        "psnr_samples": len(tiles),
    }


def percentiles(latencies: list[float]) -> dict[str, Any]:
    if not latencies:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "latency_samples": 0}
    arr = np.array(latencies) * 1000
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "latency_samples": len(latencies),
    }


# --- report --------------------------------------------------------------------------------------
ROWS: list[tuple[str, str, str, bool | None]] = [
    # label, key, format, lower is better (None: no ratio)
    ("server CPU (cores)", "cores", "{:.2f}", True),
    ("frames/s received per video stream (min)", "recv_fps_min", "{:.1f}", False),
    ("frames/s received per video stream (mean)", "recv_fps_mean", "{:.1f}", False),
    ("video streams per video receiver", "streams_per_receiver", "{:.0f}", None),
    ("added latency p50 (ms), client probe", "p50_ms", "{:.0f}", True),
    ("added latency p95 (ms), client probe", "p95_ms", "{:.0f}", True),
    ("downlink per video receiver (kbit/s)", "downlink_kbps", "{:.0f}", True),
    ("audio threads CPU per talker (ms/s)", "audio_ms_per_talker", "{:.2f}", True),
    ("PSNR in a 10-tile layout (dB, luma)", "psnr_tile_db", "{:.1f}", False),
    ("PSNR at full size (dB, luma)", "psnr_full_db", "{:.1f}", None),
    ("audio receivers getting audio", "audio_receivers", "{}", None),
    ("server peak RSS (MiB)", "peak_mb", "{:.0f}", None),
    ("client process CPU (cores)", "client_cores", "{:.2f}", None),
    ("UDP datagrams dropped, full buffer: server", "server_udp_drops", "{}", None),
    ("UDP datagrams dropped, full buffer: clients", "client_udp_drops", "{}", None),
    ("frames/s sent per video sender", "sent_fps", "{:.1f}", None),
    ("node's own probe p50 / p95 (ms)", "node_probe", "{}", None),
    ("machine load average (1 min)", "loadavg", "{:.1f}", None),
]
# what the receivers measure (and so the clients, when they cannot keep up)
RECEIVER_KEYS = {"recv_fps_min", "recv_fps_mean", "p50_ms", "p95_ms", "downlink_kbps", "psnr_tile_db"}
AUDIO_ROWS: list[tuple[str, str, str, bool | None]] = [
    ("server CPU (cores), 18 audio talkers", "cores", "{:.2f}", True),
    ("server CPU per talker (ms/s)", "cores_ms_per_talker", "{:.2f}", True),
    ("audio threads CPU per talker (ms/s)", "audio_ms_per_talker", "{:.2f}", True),
    ("audio receivers getting audio", "audio_receivers", "{}", None),
    ("machine load average (1 min)", "loadavg", "{:.1f}", None),
]


def derive(r: dict[str, Any]) -> dict[str, Any]:
    r["audio_ms_per_talker"] = r["audio_cores"] * 1000 / r["talkers"]
    r["cores_ms_per_talker"] = r["cores"] * 1000 / r["talkers"]
    r["streams_per_receiver"] = r["video_streams"] / VIDEO if r["video_streams"] else 0
    if "node_p50_ms" in r:
        r["node_probe"] = f"{r['node_p50_ms']:.0f} / {r['node_p95_ms']:.0f}"
    return r


def ratio(ours: dict[str, Any], janus: dict[str, Any], key: str) -> float | None:
    a, b = ours.get(key), janus.get(key)
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return None
    return float(a) / float(b)


def table(
    ours: dict[str, Any], janus: dict[str, Any], rows: list[Any], heads: tuple[str, str]
) -> list[tuple[str, float, bool, str]]:
    print(f"{'':<44}{heads[0]:>14}{heads[1]:>20}{'ours/Janus':>12}")
    ratios = []
    for label, key, fmt, lower_better in rows:
        cells = [fmt.format(r[key]) if key in r else "-" for r in (ours, janus)]
        q = ratio(ours, janus, key) if lower_better is not None else None
        print(f"{label:<44}{cells[0]:>14}{cells[1]:>20}{'' if q is None else f'{q:.2f}x':>12}")
        if q is not None:
            ratios.append((label, q, bool(lower_better), key))
    return ratios


def plot(ratios: list[tuple[str, float, bool]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(ratios) + 1.6))
    labels = [r[0] for r in ratios][::-1]
    values = [r[1] for r in ratios][::-1]
    better = [(q <= 1) == lower for _, q, lower in ratios][::-1]
    colours = ["#999999" if label.endswith("*") else "#55a868" if b else "#c44e52" for label, b in zip(labels, better)]
    ax.barh(labels, values, color=colours)
    ax.axvline(1, color="black", linewidth=1)
    ax.set_xscale("log")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}x", va="center", fontsize=8)
    ax.set_xlabel(
        "ours / Janus (log scale); green: ours better, red: Janus better;\n"
        "grey *: the clients could not keep up (their sockets dropped datagrams)"
        if any(label.endswith("*") for label in labels)
        else "ours / Janus (log scale); green: ours better, red: Janus better"
    )
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlim(min(values + [1]) / 2, max(values + [1]) * 2.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def main_async(args: argparse.Namespace) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    args.server_cpu = None
    if args.pin and len(cpus) >= 2:
        # each server alone on the first CPU, as on its own machine; clients and redis on the others
        args.server_cpu = cpus[0]
        os.sched_setaffinity(0, set(cpus[1:]))
    t = time.monotonic()
    pictures = [mo.clip_pictures(640, 480, CLIP_FRAMES, CLIP_FPS, seed) for seed in range(CLIPS)]
    vp8 = [mo.clip_vp8(640, 480, CLIP_FRAMES, CLIP_FPS, seed, pics) for seed, pics in enumerate(pictures)]
    clips = {
        "pictures": pictures,
        "vp8": vp8,
        "index": {data: i for clip in vp8 for i, data in enumerate(clip)},
        "opus": [mo.clip_opus(200 + 90 * i, 50, talking=True) for i in range(VIDEO + AUDIO)],
    }
    reference_ms = mo.machine_reference_ms(vp8[0])
    print(
        f"clips encoded in {time.monotonic() - t:.1f} s; machine reference: one 640x480 VP8 decode "
        f"{reference_ms:.2f} ms; load average {os.getloadavg()[0]:.1f}; "
        + (f"servers pinned to CPU {args.server_cpu}" if args.server_cpu is not None else "not pinned"),
        flush=True,
    )
    redis_server = RedisServer().start()
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in args.phases.split(","):
            audio_only = name.endswith("-audio")
            if name.startswith("ours"):
                r = await ours_phase(args, redis_server.url, clips, audio_only)
            else:
                r = await janus_phase(args, clips, audio_only)
            results[name] = derive(r)
            print(json.dumps({k: v for k, v in r.items() if k != "threads"} | {"threads": top(r["threads"])}), flush=True)
    finally:
        redis_server.stop()
    meta = {
        "seconds": args.seconds,
        "warmup": args.warmup,
        "server_cpu": args.server_cpu,
        "reference_ms": reference_ms,
        "load_end": os.getloadavg()[0],
    }
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    report(results, meta, args.plot)


def report(results: dict[str, dict[str, Any]], meta: dict[str, Any], plot_path: str) -> None:
    """The side-by-side tables, the ratios and their plot (also from a saved ``--json``)."""
    print()
    print(
        f"one full outage, 10 video senders 640x480@30 (pre-encoded VP8, ~460 kbit/s) + 8 audio, all 18 "
        f"talking; {meta['seconds']:g} s measured after {meta['warmup']:g} s; "
        + (
            f"each server alone on CPU {meta['server_cpu']}, clients on the other"
            if meta["server_cpu"] is not None
            else "not pinned"
        )
        + f"; machine reference {meta['reference_ms']:.2f} ms per VP8 decode; load average at the end "
        f"{meta['load_end']:.1f}"
    )
    ratios: list[tuple[str, float, bool]] = []
    if "ours" in results and "janus" in results:
        full = table(results["ours"], results["janus"], ROWS, ("ours (MCU)", "Janus AB + VR (SFU)"))
        drops = max(results["ours"]["client_udp_drops"], results["janus"]["client_udp_drops"])
        if drops:
            # what the receivers saw is then the clients' limit, not the server's
            print(
                f"* the clients' sockets dropped {drops} datagrams (their process had "
                f"{results['janus']['client_cores']:.2f} core in the Janus run): the receivers' figures "
                "(marked *) measure the clients there"
            )
            full = [(f"{label} *" if key in RECEIVER_KEYS else label, q, lower, key) for label, q, lower, key in full]
        ratios += [(label, q, lower) for label, q, lower, _ in full]
        print(f"Janus threads (cores): {top(results['janus']['threads'])}")
        print(f"our node's threads (cores): {top(results['ours']['threads'])}")
    if "ours-audio" in results and "janus-audio" in results:
        print()
        audio = table(results["ours-audio"], results["janus-audio"], AUDIO_ROWS, ("ours", "Janus AudioBridge"))
        ratios += [(f"{label} (audio only)", q, lower) for label, q, lower, _ in audio if "per talker" in label]
        print(f"Janus threads, audio only (cores): {top(results['janus-audio']['threads'])}")
    if plot_path and ratios:
        loads = [r["loadavg"] for r in results.values()]
        plot(
            ratios,
            f"Our media node / Janus 1.1.2 (AudioBridge + VideoRoom), one full outage\n"
            f"load average {min(loads):.1f}-{max(loads):.1f} during the runs, VP8 decode reference "
            f"{meta['reference_ms']:.2f} ms",
            Path(plot_path),
        )
        print(f"plot: {plot_path}")


def top(threads: dict[str, float], n: int = 6) -> dict[str, float]:
    return {k: round(v, 3) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])[:n] if v > 0.001}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=4)
    p.add_argument(
        "--phases",
        default="ours,janus,ours-audio,janus-audio",
        help="which runs, in order: ours, janus (full outage); ours-audio, janus-audio (18 audio talkers)",
    )
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--loop", choices=eventloop.CHOICES, default="uvloop", help="our node's event loop")
    p.add_argument(
        "--client-loop", choices=eventloop.CHOICES, default="uvloop", help="the clients' event loop (both servers')"
    )
    p.add_argument(
        "--client-srtp",
        choices=("pylibsrtp", "ctypes"),
        default="pylibsrtp",
        help="the clients' SRTP: pylibsrtp as aiortc has it, or the node's media.srtp (cheaper per packet)",
    )
    p.add_argument("--plot", default="", help="PNG of the ratios ours/Janus")
    p.add_argument("--json", default="", help="write every figure to this file")
    p.add_argument("--from-json", default="", help="no run: print (and --plot) the figures saved by --json")
    args = p.parse_args()
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        report(saved["results"], saved["meta"], args.plot)
        return
    # the video receivers whose frames are kept for PSNR and latency: two grids; one SFU receiver (its 9
    # streams through aiortc's receivers; the 81 others are only counted, see Link)
    args.sample_mcu, args.sample_sfu = {0, VIDEO - 1}, {0}
    if args.client_srtp == "ctypes":
        from media import srtp

        srtp.install()
    # The clients' ICE consent checks (RFC 7675) get no answer from our node, so aioice closes each
    # client's connection ~30-40 s after it connects (media_outage.py --seconds 40 shows it too; two
    # plain aiortc peers keep theirs): the clients here do not act on lost consent, for both servers.
    import aioice.ice

    aioice.ice.CONSENT_FAILURES = 1 << 30
    eventloop.run(main_async(args), args.client_loop)


if __name__ == "__main__":
    main()
