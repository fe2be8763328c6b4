"""One full outage on one media node: 10 video senders (640x480, 30 fps) + 8 audio participants.

Runs the node in its own process (so its CPU is measured apart from the clients'), once with the shared
encoder (one VP8 encode per composed frame) and once with per-receiver encoding, and prints the node's
CPU (cores), the frame rate each video receiver gets, the server-added video latency (source frame
decoded on the node -> composed frame packed for a receiver: p50/p95) and the node's peak memory.

The clients send pre-encoded VP8 / Opus packets (no client-side encoding) to leave the CPU to the node.

    .venv/bin/python benchmarks/media_outage.py [--seconds 20] [--fps 25] [--modes shared,per_receiver]
    .venv/bin/python benchmarks/media_outage.py --modes shared --turn tcp   # every client relayed by coturn

``--turn udp|tcp``: the 18 clients allow only relay candidates and reach a coturn started for the run
(``infra.turnproc``) over that transport; its CPU (cores) over the measured window is printed too.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # infra, media and the test clients (tests/support) of this checkout

from infra import eventloop
from infra.redisproc import RedisServer, free_port
from infra.settings import Settings
from tests.support.media_clients import encode_vp8

if TYPE_CHECKING:
    from tests.support.media_clients import Client

CLK_TCK = os.sysconf("SC_CLK_TCK")
# the targets for one full outage on one node, drawn on the plots
TARGET_CORES, TARGET_FPS, TARGET_P95_MS = 1.0, 25, 60


# --- clients -------------------------------------------------------------------------------------
class CountingDecoder:
    """Stands in for aiortc's decoders in the client process: counts the frames each receiver gets
    (and reads VP8 keyframe sizes) without decoding them, so that the clients leave the CPU to the node."""

    instances: ClassVar[list[CountingDecoder]] = []

    def __init__(self, kind: str) -> None:
        self.kind, self.frames, self.max_height = kind, 0, 0
        CountingDecoder.instances.append(self)

    def decode(self, encoded_frame: Any) -> list[Any]:
        self.frames += 1
        data = encoded_frame.data
        if self.kind == "video" and len(data) >= 10 and not data[0] & 1 and data[3:6] == b"\x9d\x01\x2a":
            self.max_height = max(self.max_height, int.from_bytes(data[8:10], "little") & 0x3FFF)
        return []


def count_on_the_loop(pc: Any) -> None:
    """Feed every receiver of ``pc`` to a :class:`CountingDecoder` right where aiortc reassembles
    frames (``media.inbound``'s tap), so the client process runs no decoder thread at all."""
    from media import inbound

    @pc.on("track")
    def on_track(track: Any) -> None:
        receiver = inbound.receiver_of(pc, track)
        if receiver is not None:
            counter = CountingDecoder(track.kind)
            inbound.install(receiver, lambda codec, frame: counter.decode(frame))


def clip_pictures(width: int, height: int, frames: int, fps: int, seed: int) -> list[np.ndarray]:
    """A smooth moving pattern (like a camera picture, not noise) as yuv420p planes stacked
    (``height * 3 // 2`` rows): the senders' pictures, before they are encoded."""
    xx, yy = np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 6.28, 4)

    def picture(i: int) -> np.ndarray:
        t = i / fps
        row = 128 + 60 * np.sin(xx / 37 + t * 2 + phase[0])
        col = 50 * np.cos(yy / 23 - t * 3 + phase[1])
        buf = np.empty((height * 3 // 2, width), dtype=np.uint8)
        buf[:height] = np.clip(col[:, None] + row[None, :], 0, 255)
        buf[height:] = 128 + int(40 * np.sin(phase[2] + t))
        return buf

    return [picture(i) for i in range(frames)]


def clip_vp8(
    width: int, height: int, frames: int, fps: int, seed: int, pictures: list[np.ndarray] | None = None
) -> list[bytes]:
    """:func:`clip_pictures` encoded once at 500 kbit/s (the first frame a keyframe)."""
    if pictures is None:
        pictures = clip_pictures(width, height, frames, fps, seed)
    return encode_vp8(pictures, width, height, fps, bitrate=500_000, gop_size=10 * frames, cbr=True)


def clip_opus(freq: float, frames: int, talking: bool = True) -> list[bytes]:
    """A tone (or, not talking, a quiet room's noise) as a browser's microphone sends it: Opus mono,
    32 kbit/s (Chrome's default), 20 ms."""
    codec: Any = av.CodecContext.create("libopus", "w")
    codec.bit_rate = 32_000
    codec.format, codec.layout, codec.sample_rate = "s16", "mono", 48000
    codec.time_base = fractions.Fraction(1, 48000)
    codec.options = {"application": "voip"}
    rng = np.random.default_rng(int(freq))
    out = []
    for n in range(frames):
        t = (np.arange(960) + n * 960) / 48000
        if talking:
            mono = (6000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        else:  # about -60 dBFS of noise: an open microphone in a quiet room
            mono = rng.normal(0, 30, 960).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, n * 960, fractions.Fraction(1, 48000)
        out.extend(bytes(p) for p in codec.encode(frame))
    return out


def machine_reference_ms(clip: list[bytes]) -> float:
    """CPU ms of one VP8 decode of the clip, alone on a thread: how fast this machine is today (machines
    of one kind differ from day to day; docs/MEDIA.md)."""
    best = float("inf")
    for _ in range(3):
        decoder: Any = av.CodecContext.create("libvpx", "r")
        decoder.thread_count = 1
        t = time.thread_time()
        for data in clip:
            decoder.decode(av.Packet(data))
        best = min(best, (time.thread_time() - t) * 1000 / len(clip))
    return best


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _task_cpu_s(pid: int, tid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_wait_s(pid: int) -> float:
    """Time the node's threads spent runnable but waiting for a CPU (scheduler run-queue delay)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


# OS thread names (media.mixer / media.inbound name their threads) -> the result keys of their CPU
THREAD_GROUPS = {"mcu-compose": "compose_cores", "mcu-vdecode": "vdec_cores", "mcu-audio": "audio_cores"}
OTHER_THREADS = "other_cores"


def thread_cpu_by_name(pid: int) -> dict[str, float]:
    """CPU seconds of the node's threads other than the event loop, grouped by OS name."""
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            cpu = _task_cpu_s(pid, int(tid))
        except (OSError, ValueError):
            continue
        if int(tid) != pid:  # the event loop is measured on its own
            key = THREAD_GROUPS.get(name, OTHER_THREADS)
            out[key] = out.get(key, 0.0) + cpu
    return out


def proc_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class CpuQuota:
    """The node's CPU capped at a fraction of one core by a CFS quota (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``), to see how it behaves on a machine that slower: a slower CPU makes every
    operation longer, a quota makes the node wait for its next period. With a 10 ms period the wait
    is at most a few ms, small beside the 40 ms between composed frames. Needs a writable cgroup
    (root in a container). The cgroup is made before the node starts; the node joins it itself,
    before it starts any thread."""

    PERIOD_US = 10_000

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        v2 = Path("/sys/fs/cgroup/cgroup.controllers")
        self.v2 = v2.exists() and "cpu" in v2.read_text().split()
        base = Path("/sys/fs/cgroup") if self.v2 else Path("/sys/fs/cgroup/cpu")
        self.path = base / f"backupplus-bench-{os.getpid()}"

    def create(self) -> None:
        try:
            self.path.mkdir(exist_ok=True)
            quota = round(self.fraction * self.PERIOD_US)
            if self.v2:
                (self.path / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        except OSError as e:
            self.remove()
            raise SystemExit(f"--cpu-quota needs a writable cpu cgroup ({self.path}): {e}") from e

    def throttled_s(self) -> float:
        """How long the quota held the node back so far."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        if "throttled_usec" in stat:
            return int(stat["throttled_usec"]) / 1e6
        return int(stat.get("throttled_time", 0)) / 1e9

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


class OpusPackets(MediaStreamTrack):
    """A pre-encoded Opus clip looped in real time, 20 ms a packet: a browser's microphone."""

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__()
        self.packets, self._n = packets, 0
        self._start: float | None = None

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


async def start_node(
    mode: str, args: argparse.Namespace, redis_url: str, port: int, cap: CpuQuota | None
) -> subprocess.Popen[bytes]:
    """The node process of one run (``media_node_bench.node_child``), once it says it is ready."""
    child = subprocess.Popen(  # noqa: ASYNC220 - started once, before measuring
        [
            sys.executable,
            __file__,
            "--node-child",
            "--loop",
            args.loop,
            "--mode",
            mode,
            "--redis-url",
            redis_url,
            "--port",
            str(port),
            "--fps",
            str(args.fps),
            "--switch-interval",
            str(args.switch_interval),
            "--cpus",
            args.node_cpus,
            "--decode-threads",
            str(args.decode_threads),
            "--srtp-gil",
            args.srtp_gil,
            "--rtp-send",
            args.rtp_send,
        ]
        + (["--profile", f"{args.profile}.{mode}"] if args.profile else [])
        + (["--cgroup", str(cap.path)] if cap else []),
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        await wait_ready(child)
    except RuntimeError:
        stop_node(child)
        raise
    return child


async def wait_ready(child: subprocess.Popen[bytes]) -> None:
    """The node child prints "ready" once it serves and is in the registry."""
    assert child.stdout is not None
    line = await asyncio.get_running_loop().run_in_executor(None, child.stdout.readline)
    if line.strip() != b"ready":
        raise RuntimeError(f"the node child did not start: {line!r}")


def stop_node(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


async def claim_registry(redis: Any, this_node: str) -> None:
    """The previous run's node may still be in the registry (it had 10 s to stop, then was killed):
    this run's outage must land on this run's node."""
    from quotas import nodes as registry

    for node_id in await registry.live_nodes(redis):
        if node_id != this_node:
            await registry.unregister(redis, node_id)
    if this_node not in await registry.live_nodes(redis):
        raise RuntimeError(f"{this_node} said ready but is not in the registry")


async def join_outage(
    clients: list[Client], ledger: Any, router: Any, clips: dict[str, Any], config: Any = None
) -> None:
    """One full outage joins, one by one (18 DTLS handshakes at once are slow on a busy machine):
    10 video senders and 8 audio participants, appended to ``clients`` as they are made.
    ``config(participant id)``: each client's RTCConfiguration (TURN), default none."""
    from tests.support.media_clients import Client, PacketTrack, admit, seed_conference

    config = config or (lambda _pid: None)

    async def join(client: Client) -> None:  # each one admitted just before it joins: no lease runs out
        clients.append(client)
        count_on_the_loop(client.pc)
        await client.connect(router.offer)
        await client.wait_connected(30)

    oid, cid = await seed_conference(ledger)
    for i in range(10):
        p = await admit(ledger, oid, cid, f"Video {i + 1}", "video")
        await join(Client(
            p,
            audio=OpusPackets(clips["opus"][i % len(clips["opus"])]),
            video=PacketTrack(clips["vp8"][i % len(clips["vp8"])], 30),
            config=config(p["id"]),
        ))
    for i in range(8):
        p = await admit(ledger, oid, cid, f"Phone {i + 1}", "audio")
        await join(Client(p, audio=OpusPackets(clips["opus"][(i + 10) % len(clips["opus"])]), want_video=False,
                          config=config(p["id"])))


@dataclass
class Reading:
    """The node's counters at one instant, read from /proc by the client process."""

    t: float
    cpu: float
    loop_cpu: float
    runq: float
    load: float
    threads: dict[str, float]
    throttled: float
    frames: list[int]  # frames each video client received so far

    @classmethod
    def take(cls, pid: int, cap: CpuQuota | None, video_decoders: list[CountingDecoder]) -> Reading:
        return cls(
            cpu=proc_cpu_s(pid),
            loop_cpu=_task_cpu_s(pid, pid),
            t=time.monotonic(),
            runq=runqueue_wait_s(pid),
            load=os.getloadavg()[0],
            threads=thread_cpu_by_name(pid),
            throttled=cap.throttled_s() if cap else 0.0,
            frames=[d.frames for d in video_decoders],
        )


async def measure(
    args: argparse.Namespace, child: subprocess.Popen[bytes], cap: CpuQuota | None, base: str, first_decoder: int
) -> tuple[Reading, Reading, dict[str, Any], int, list[CountingDecoder]]:
    """After the warm-up, ``args.seconds`` of the node's work: its counters before and after, what it
    measured itself (``/bench/stats``), its Opus encodes at the start, and the clients' decoders."""
    import aiohttp

    await asyncio.sleep(args.warmup)
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/bench/stats?reset=1") as resp:
            encodes0 = (await resp.json())["audio_encodes"]
        decoders = CountingDecoder.instances[first_decoder:]
        video_decoders = [d for d in decoders if d.kind == "video"]
        before = Reading.take(child.pid, cap, video_decoders)
        await asyncio.sleep(args.seconds)
        after = Reading.take(child.pid, cap, video_decoders)
        async with http.get(base + "/bench/stats") as resp:
            st = await resp.json()
    return before, after, st, encodes0, decoders


def summarise(
    mode: str,
    quota: float,
    pid: int,
    readings: tuple[Reading, Reading],
    st: dict[str, Any],
    encodes0: int,
    decoders: list[CountingDecoder],
) -> dict[str, Any]:
    """One run's result row."""
    before, after = readings
    wall = after.t - before.t
    video_decoders = [d for d in decoders if d.kind == "video"]
    recv_fps = [(b - a) / wall for a, b in zip(before.frames, after.frames)]
    sent_fps = [n / wall for n in st["sent"].values()]
    delivered_fps = float(np.mean(sent_fps)) if sent_fps else 0.0
    cores = (after.cpu - before.cpu) / wall
    return {
        # per frame delivered (sent to every receiver): a per-receiver node composes more than its
        # encoders can take, and a composed frame no receiver gets costs without counting
        "cpu_ms_per_frame": cores * 1000 / delivered_fps if delivered_fps else 0.0,
        "mode": mode,
        "quota": quota,
        "throttled_per_s": (after.throttled - before.throttled) / wall,
        "cores": cores,
        "loop_cores": (after.loop_cpu - before.loop_cpu) / wall,
        "runq_wait": (after.runq - before.runq) / wall,
        **{
            key: (after.threads.get(key, 0.0) - before.threads.get(key, 0.0)) / wall
            for key in (*THREAD_GROUPS.values(), OTHER_THREADS)
        },
        "loadavg": (before.load + after.load) / 2,
        "composed_fps": st["composed"] / wall,
        "held_per_s": st["held"] / wall,
        "sent_fps_min": min(sent_fps) if sent_fps else 0.0,
        "sent_fps_mean": delivered_fps,
        "recv_fps_min": min(recv_fps),
        "recv_fps_mean": float(np.mean(recv_fps)),
        **{key: st[key] for key in ("p50_ms", "p95_ms", "p99_ms", "samples", "compose_p50_ms", "compose_p95_ms")},
        **{key: st[key] for key in ("queue_p95_ms", "lag_p50_ms", "lag_p95_ms")},
        "peak_mb": proc_peak_mb(pid),
        "keyframes": st["keyframes"],
        "opus_per_tick": (st["audio_encodes"] - encodes0) / (wall / 0.02),
        "inbound_fps": st["received"] / wall / 10,
        "compose_cpu_ms": st["compose_cpu_ms"],
        "encode_cpu_ms": st["encode_cpu_ms"],
        "bitrate": st["bitrate"],
        "audio_receivers": sum(1 for d in decoders if d.kind == "audio" and d.frames > 0),
        "max_height": max((d.max_height for d in video_decoders), default=0),
        "video_receivers": len(video_decoders),
    }


async def run_mode(
    mode: str, args: argparse.Namespace, redis_url: str, clips: dict[str, Any], quota: float = 0.0
) -> dict[str, Any]:
    """One run: a node in ``mode`` (capped at ``quota`` of a core if given), one full outage on it."""
    import redis.asyncio as aioredis

    from media.routing import MediaRouter
    from quotas.ledger import PortLedger

    cap = CpuQuota(quota) if quota else None
    if cap:
        cap.create()
    port = free_port()
    clients: list[Client] = []
    redis: Any = None
    router: MediaRouter | None = None
    turn, config = start_turn(args.turn)
    try:
        child = await start_node(mode, args, redis_url, port, cap)
        try:
            redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
            await claim_registry(redis, f"bench-{mode}")
            router = MediaRouter(redis, Settings())
            first_decoder = len(CountingDecoder.instances)
            await join_outage(clients, PortLedger(redis), router, clips, config)
            turn0 = (time.monotonic(), proc_cpu_s(turn.process.pid)) if turn and turn.process else None
            before, after, st, encodes0, decoders = await measure(
                args, child, cap, f"http://127.0.0.1:{port}", first_decoder
            )
            result = summarise(mode, quota, child.pid, (before, after), st, encodes0, decoders)
            if turn0 is not None and turn is not None and turn.process is not None:
                result["turn"] = args.turn
                result["turn_cores"] = (proc_cpu_s(turn.process.pid) - turn0[1]) / (time.monotonic() - turn0[0])
            return result
        finally:
            for c in clients:
                await c.close()
            if router is not None:
                await router.close()
            if redis is not None:
                await redis.aclose()
            stop_node(child)
    finally:
        if turn is not None:
            turn.stop()
        if cap:
            cap.remove()


def start_turn(transport: str) -> tuple[Any, Any]:
    """A coturn for the run and each client's relay-only RTCConfiguration, or (None, None)."""
    if transport == "none":
        return None, None
    from aiortc import RTCConfiguration, RTCIceServer
    from aiortc.rtcconfiguration import RTCIceTransportPolicy

    from broker.turn import credentials
    from infra.turnproc import TurnConfig, TurnServer, local_addresses

    secret = os.urandom(16).hex()
    turn = TurnServer(TurnConfig(secret=secret, port=0, tls_port=0, allowed_peers=local_addresses())).start()
    url = f"turn:127.0.0.1:{turn.config.port}?transport={transport}"

    def config(pid: str) -> Any:
        username, password = credentials(secret, pid, int(time.time()) + 3600)
        return RTCConfiguration(iceServers=[RTCIceServer(urls=url, username=username, credential=password)],
                                iceTransportPolicy=RTCIceTransportPolicy.RELAY)

    return turn, config


async def main_async(args: argparse.Namespace) -> None:
    args.node_cpus = pin_clients(args.pin)
    t = time.monotonic()
    clips = {
        "vp8": [clip_vp8(640, 480, 60, 30, seed) for seed in range(3)],
        # participants 0..talkers-1 talk (a tone each) all the time, the others have their microphone
        # open in a quiet room
        "opus": [clip_opus(200 + 90 * i, 50, talking=i < args.talkers) for i in range(18)],
    }
    print(f"clips encoded in {time.monotonic() - t:.1f} s", flush=True)
    args.reference_ms = machine_reference_ms(clips["vp8"][0])
    print(f"machine reference: one 640x480 VP8 decode of the clip takes {args.reference_ms:.2f} ms", flush=True)
    server = RedisServer().start()
    results = []
    client_cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        quotas = [float(q) for q in args.cpu_quota.split(",")] if args.cpu_quota else [0.0]
        for mode in args.modes.split(","):
            for quota in quotas:
                results.append(await run_mode(mode, args, server.url, clips, quota))
                print(json.dumps(results[-1]), flush=True)
    finally:
        server.stop()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu_s = ru.ru_utime + ru.ru_stime - client_cpu0.ru_utime - client_cpu0.ru_stime
    # the machine's speed drifts during a run (other tenants): measured again at the end
    print_report(results, args, machine_reference_ms(clips["vp8"][0]), client_cpu_s)
    if args.plot:
        (plot_headroom if args.cpu_quota else plot)(results, args, Path(args.plot))
        print(f"plot: {args.plot}")


def pin_clients(pin: bool) -> str:
    """With ``pin`` and two CPUs or more: this process (the clients, and redis-server started after)
    leaves the first CPU to the node, as if the node had its own machine ("<= 1 core" becomes a hard
    budget). Returns the node's CPU ("" when not pinned)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return ""
    os.sched_setaffinity(0, set(cpus[1:]))
    print(f"node pinned to CPU {cpus[0]}; clients and redis-server on CPU(s) {cpus[1:]}", flush=True)
    return str(cpus[0])


ROWS = [  # (label, result key, format); the quota row only in --cpu-quota runs
    ("node CPU (cores)", "cores", "{:.2f}"),
    ("  of which event-loop thread", "loop_cores", "{:.2f}"),
    ("  of which compose(+encode) thread", "compose_cores", "{:.2f}"),
    ("  of which video decoder threads", "vdec_cores", "{:.2f}"),
    ("  of which audio thread", "audio_cores", "{:.2f}"),
    ("  of which other threads (per-receiver: its encoders)", "other_cores", "{:.2f}"),
    ("node CPU-ms per frame delivered", "cpu_ms_per_frame", "{:.1f}"),
    ("waiting for a CPU (thread-s/s)", "runq_wait", "{:.2f}"),
    ("held back by the CPU quota (s/s)", "throttled_per_s", "{:.2f}"),
    ("machine load average (1 min)", "loadavg", "{:.1f}"),
    ("inbound frames/s per sender (30 sent)", "inbound_fps", "{:.1f}"),
    ("composed frames/s", "composed_fps", "{:.1f}"),
    ("compositor ticks skipped for a backlog /s", "held_per_s", "{:.1f}"),
    ("frames/s sent per receiver (min)", "sent_fps_min", "{:.1f}"),
    ("frames/s received per client (min)", "recv_fps_min", "{:.1f}"),
    ("frames/s received per client (mean)", "recv_fps_mean", "{:.1f}"),
    ("audio receivers getting audio", "audio_receivers", "{}"),
    ("Opus encodes per 20 ms", "opus_per_tick", "{:.1f}"),
    ("added latency p50 (ms)", "p50_ms", "{:.1f}"),
    ("added latency p95 (ms)", "p95_ms", "{:.1f}"),
    ("added latency p99 (ms)", "p99_ms", "{:.1f}"),
    ("compose CPU per frame (ms)", "compose_cpu_ms", "{:.1f}"),
    ("shared encode CPU per frame (ms)", "encode_cpu_ms", "{:.1f}"),
    ("compose+encode p50 (ms)", "compose_p50_ms", "{:.1f}"),
    ("compose+encode p95 (ms)", "compose_p95_ms", "{:.1f}"),
    ("event-loop lag p50 (ms)", "lag_p50_ms", "{:.1f}"),
    ("event-loop lag p95 (ms)", "lag_p95_ms", "{:.1f}"),
    ("node peak RSS (MiB)", "peak_mb", "{:.0f}"),
    ("max video height received", "max_height", "{}"),
]


def print_report(
    results: list[dict[str, Any]], args: argparse.Namespace, reference_end_ms: float, client_cpu_s: float
) -> None:
    """The table of every run side by side, and the per-receiver/shared ratio for a plain two-mode run."""
    print()
    print(
        f"full outage on one node: 10 video senders 640x480@30 (pre-encoded VP8) + 8 audio, "
        f"{args.talkers} talking at once; "
        f"composed {args.fps:g} fps, {args.seconds:g} s measured after {args.warmup:g} s warm-up; "
        f"{os.cpu_count()} CPUs on the machine; "
        + (f"node pinned to CPU {args.node_cpus}" if args.node_cpus else "node not pinned")
        + f"; VP8 640x480 decode here: {args.reference_ms:.2f} ms before, {reference_end_ms:.2f} ms after"
    )
    print(f"{'':<34}" + "".join(f"{run_label(r):>16}" for r in results))
    for label, key, fmt in ROWS:
        if key != "throttled_per_s" or args.cpu_quota:
            print(f"{label:<34}" + "".join(f"{fmt.format(r[key]):>16}" for r in results))
    if not args.cpu_quota and len(results) == 2 and results[0]["cores"] > 0 and results[0]["cpu_ms_per_frame"] > 0:
        print(
            f"per_receiver / shared: CPU {results[1]['cores'] / results[0]['cores']:.2f}x, "
            f"CPU per frame delivered {results[1]['cpu_ms_per_frame'] / results[0]['cpu_ms_per_frame']:.2f}x"
        )
    for r in results:
        if "turn_cores" in r:
            print(f"coturn relaying all 18 participants over TURN/{r['turn'].upper()} ({run_label(r)}): "
                  f"{r['turn_cores']:.2f} cores")
    print(f"client process CPU over the whole run: {client_cpu_s:.1f} s")


def run_label(result: dict[str, Any]) -> str:
    """A run's column heading: its mode, and its CPU cap if it had one (``shared@0.8``)."""
    return result["mode"] + (f"@{result['quota']:g}" if result["quota"] else "")


def plot(results: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    """Where each mode's CPU goes (stacked by thread group), with what it delivered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("event loop (RTP/SRTP)", "loop_cores", "#4c72b0"),
        ("video decoders", "vdec_cores", "#dd8452"),
        ("audio (decode, mix, encode)", "audio_cores", "#55a868"),
        ("compose + shared encode", "compose_cores", "#c44e52"),
        ("per-receiver encoders", "other_cores", "#8172b3"),
    ]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    names = [r["mode"].replace("_", "-") for r in results]
    bottom = np.zeros(len(results))
    for label, key, colour in groups:
        values = np.array([r.get(key, 0.0) for r in results])
        if values.any():
            ax.bar(names, values, bottom=bottom, label=label, color=colour, width=0.5)
            bottom += values
    ax.axhline(TARGET_CORES, color="black", linestyle="--", linewidth=1)
    ax.text(-0.45, TARGET_CORES + 0.02, f"target: {TARGET_CORES:g} core", ha="left", va="bottom", fontsize=8)
    for i, r in enumerate(results):
        ax.text(
            i,
            bottom[i] + 0.03,
            f"{r['recv_fps_min']:.1f} fps, p95 {r['p95_ms']:.0f} ms\n{r['cpu_ms_per_frame']:.0f} CPU-ms/frame",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, max(1.3, float(bottom.max()) + 0.3))
    ax.set_ylabel("node CPU (cores)")
    where = f"node pinned to CPU {args.node_cpus}" if args.node_cpus else "node not pinned"
    ax.set_title(
        f"One full outage: 10 video 640x480@30 + 8 audio, {args.talkers} talking; {where}\n"
        f"machine reference: one 640x480 VP8 decode in {args.reference_ms:.2f} ms",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_headroom(results: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    """Frame rate and latency against the node's CPU cap, one line per mode, with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (fps_ax, lat_ax) = plt.subplots(1, 2, figsize=(9, 4.2))
    for mode in dict.fromkeys(r["mode"] for r in results):
        runs = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["quota"])
        caps = [r["quota"] for r in runs]
        label = mode.replace("_", "-")
        fps_ax.plot(caps, [r["recv_fps_min"] for r in runs], marker="o", label=label)
        lat_ax.plot(caps, [r["p95_ms"] for r in runs], marker="o", label=f"{label} p95")
        lat_ax.plot(caps, [r["p50_ms"] for r in runs], marker=".", linestyle=":", label=f"{label} p50")
    fps_ax.axhline(TARGET_FPS, color="black", linestyle="--", linewidth=1)
    fps_ax.set_ylabel("frames/s delivered per receiver (min)")
    fps_ax.set_ylim(0, 30)
    lat_ax.axhline(TARGET_P95_MS, color="black", linestyle="--", linewidth=1)
    lat_ax.set_ylabel("server-added latency (ms)")
    lat_ax.set_yscale("log")  # an overloaded node's latency is ten times a healthy one's
    ticks = [t for t in (10, 20, 40, 60, 100, 200, 400, 1000, 2000) if t <= 2 * max(r["p95_ms"] for r in results)]
    lat_ax.set_yticks(ticks, [str(t) for t in ticks])
    lat_ax.minorticks_off()
    for ax, target in ((fps_ax, f"target >= {TARGET_FPS} fps"), (lat_ax, f"target p95 <= {TARGET_P95_MS} ms")):
        ax.set_xlabel("node's CPU cap (cores)")
        ax.invert_xaxis()
        ax.legend(fontsize=7, title=target, title_fontsize=7, loc="lower left" if ax is fps_ax else "upper left")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"One full outage, {args.talkers} talking; node pinned to one CPU and capped by a CFS quota\n"
        f"machine reference {args.reference_ms:.2f} ms per 640x480 VP8 decode",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--fps", type=float, default=25)
    p.add_argument("--modes", default="shared,per_receiver")
    p.add_argument(
        "--switch-interval",
        type=float,
        default=1.0,
        help="node's sys.setswitchinterval in ms, as `backupplus media` sets it (0: Python's 5 ms)",
    )
    p.add_argument("--profile", default="", help="cProfile the node's event-loop thread into FILE.<mode>")
    p.add_argument("--loop", choices=eventloop.CHOICES, default=eventloop.DEFAULT, help="the node's event loop")
    p.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="node alone on the first CPU, clients on the others (default; --no-pin: all share all CPUs)",
    )
    p.add_argument(
        "--talkers",
        type=int,
        default=18,
        help="how many of the 18 participants talk at once (default: all, the worst case)",
    )
    p.add_argument("--decode-threads", type=int, default=2, help="video decoder threads per conference")
    p.add_argument(
        "--srtp-gil",
        choices=("hold", "release"),
        default="hold",
        help="the node's SRTP calls keep the GIL (media.srtp, the default) or release it (pylibsrtp as is)",
    )
    p.add_argument(
        "--rtp-send",
        choices=("direct", "aiortc"),
        default="direct",
        help="the room sends each frame to every sender at once (media.outbound, the default) or "
        "through one aiortc task per sender",
    )
    p.add_argument(
        "--cpu-quota",
        default="",
        help="cap the node at these fractions of one core, one run each (e.g. 1,0.8,0.7,0.6): "
        "how a slower machine would do. --plot then draws frame rate and latency against the cap",
    )
    p.add_argument("--plot", default="", help="write a PNG of where each mode's CPU goes")
    p.add_argument("--turn", choices=("none", "udp", "tcp"), default="none",
                   help="every client relayed by a coturn started for the run, reached over UDP or TCP")
    p.add_argument("--node-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cpus", default="", help=argparse.SUPPRESS)
    p.add_argument("--cgroup", default="", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="shared", help=argparse.SUPPRESS)
    p.add_argument("--redis-url", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.node_child:
        from media_node_bench import node_child  # beside this file

        eventloop.run(node_child(args), args.loop)
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
