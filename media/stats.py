"""What the benchmark measures inside a node: server-added video latency and the compositor's work.

Production nodes keep none (``None`` wherever a ``LatencyStats`` is accepted); the benchmark's node
hands one to its rooms (benchmarks/media_node_bench.py).
"""

from __future__ import annotations

from collections import deque


class LatencyStats:
    """Server-added video latency samples (s): source frame received -> composed frame handed out."""

    def __init__(self, maxlen: int = 200_000) -> None:
        self.samples: deque[float] = deque(maxlen=maxlen)
        self.composed = 0
        self.held = 0  # compositor ticks skipped because the previous frame was still waiting to be sent
        self.received = 0  # video frames decoded from the participants
        self.compose_cpu_s = 0.0  # CPU time of the compositor thread: composing ...
        self.encode_cpu_s = 0.0  # ... and the shared encode
        self.sent: dict[str, int] = {}
        self.compose_s: deque[float] = deque(maxlen=10_000)  # wall time of one compose+encode
        self.queue_s: deque[float] = deque(maxlen=10_000)  # how late a compose started after its tick
