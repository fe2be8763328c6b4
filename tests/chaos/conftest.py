"""The chaos suite: every test is marked ``chaos`` (its short form runs in the default ``make test``);
tests marked ``chaos_long`` run only with ``CHAOS_LONG=1`` (see docs/RELIABILITY.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.redisproc import RedisServer


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    long_form = os.environ.get("CHAOS_LONG") == "1"
    here = Path(__file__).parent
    for item in items:
        if here not in Path(str(item.fspath)).parents:
            continue
        item.add_marker(pytest.mark.chaos)
        if item.get_closest_marker("chaos_long") and not long_form:
            item.add_marker(pytest.mark.skip(reason="long chaos form: run with CHAOS_LONG=1"))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test alone (the test kills, pauses and restarts it), AOF fsynced each write so
    a restart keeps every acknowledged write."""
    server = RedisServer(tmp_path / "redis", persistent=True, fsync_always=True).start()
    try:
        yield server
    finally:
        server.stop()
