"""media.video: the compositor thread holds its ticks while a receiver's sender is behind."""

from __future__ import annotations

import asyncio

import pytest

from media.members import Member
from media.stats import LatencyStats
from media.tracks import VideoOutTrack
from media.video import MAX_HELD_TICKS, VideoPipeline

pytestmark = pytest.mark.media


async def test_the_compositor_skips_ticks_while_a_sender_is_behind() -> None:
    """A composed frame still waiting for one receiver's sender holds the next ticks (at most
    MAX_HELD_TICKS in a row), so frames do not queue up behind a lagging loop; once the sender takes
    its frames again, every tick composes."""
    stats = LatencyStats()
    members: dict[str, Member] = {}
    video = VideoPipeline(members, stats=stats)

    async def take_all(track: VideoOutTrack) -> None:
        while True:
            await track.recv()

    readers: list[asyncio.Task[None]] = []
    try:
        a, b = (Member(pid=pid, display_name=pid, kind="video") for pid in ("a", "b"))
        for member in (a, b):
            member.video_out = VideoOutTrack(video)
            members[member.pid] = member
        video.start()
        assert a.video_out is not None and b.video_out is not None
        readers.append(asyncio.ensure_future(take_all(a.video_out)))
        await asyncio.wait_for(b.video_out.recv(), 2)  # b's sender starts, takes one frame, then stalls
        await asyncio.sleep(0.8)  # 20 ticks at 25 fps
        assert stats.held >= 6
        assert stats.composed <= 12
        assert 1 <= b.video_out.waiting() <= 20 // (MAX_HELD_TICKS + 1) + 1
        held_stalled = stats.held

        readers.append(asyncio.ensure_future(take_all(b.video_out)))  # b catches up
        await asyncio.sleep(0.2)
        held, composed = stats.held, stats.composed
        await asyncio.sleep(0.8)
        assert stats.composed - composed >= 10
        assert stats.held - held <= 3
        assert held_stalled <= held
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        thread = video.stop()
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
        video.release()
