"""serve's private redis-server (infra.redisproc.PrivateRedis) on real processes: files and password
at rest, the state directory's lock, a stale server of the directory, restarts on the AOF, and the
child dying with its parent."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from infra.redisconn import connect
from infra.redisproc import LOCK_FILE, PASSWORD_FILE, PID_FILE, PrivateRedis, RedisServer, StateDirLocked


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_files_and_password_at_rest(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "redis").mkdir(parents=True)
    old = state / "redis" / "left-by-an-older-version.aof"
    old.write_text("x")
    old.chmod(0o644)
    private = PrivateRedis(state, fsync_always=True).start()
    try:
        assert private.server is not None
        anonymous = redis.Redis(port=private.server.port, socket_timeout=2)
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("bp:secret")
        anonymous.close()
        client = redis.Redis.from_url(private.url, socket_timeout=2)
        client.set("bp:secret", "s3cret")  # fsync always: in the AOF now
        client.close()
        password = (state / PASSWORD_FILE).read_text().strip()
        assert len(password) >= 32 and password in private.url and password not in private.display_url
        assert _mode(state) == 0o700 and _mode(state / "redis") == 0o700
        files = [p for p in state.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {PASSWORD_FILE, LOCK_FILE, PID_FILE, "redis.conf", "redis.log",
                                           old.name, "appendonly.aof.manifest"}
        assert any(p.suffix == ".aof" and "incr" in p.name for p in files)
        assert {str(p.relative_to(state)): oct(_mode(p)) for p in files if _mode(p) != 0o600} == {}
        assert all(_mode(d) == 0o700 for d in state.rglob("*") if d.is_dir())
        # the password is not on the command line, which any local user can read
        cmdline = Path(f"/proc/{private.server.pid}/cmdline").read_bytes().decode()
        assert password not in cmdline
    finally:
        private.stop()
    again = PrivateRedis(state).start()  # the same password, the data back from the AOF
    try:
        client = redis.Redis.from_url(again.url, socket_timeout=2)
        assert client.get("bp:secret") == b"s3cret"
        client.close()
    finally:
        again.stop()


def test_a_second_owner_of_the_state_dir_is_refused(tmp_path: Path) -> None:
    first = PrivateRedis(tmp_path).start()
    try:
        with pytest.raises(StateDirLocked, match=rf"in use by another `backupplus serve` \(pid {os.getpid()}\)"):
            PrivateRedis(tmp_path).start()
        assert first.server is not None and first.server.ping()  # untouched
    finally:
        first.stop()
    PrivateRedis(tmp_path).start().stop()  # released by stop


def test_a_stale_server_of_the_directory_is_stopped_and_its_data_kept(tmp_path: Path) -> None:
    """A redis-server still running on the directory (a killed serve of an older version): the
    pidfile proves it ours (command line, port, working directory), so it is stopped before a new
    server opens the same AOF."""
    state = tmp_path / "state"
    stale = RedisServer(state / "redis", persistent=True, fsync_always=True).start()
    try:
        redis.Redis(port=stale.port).set("k", "kept")
        assert stale.pid is not None
        (state / PID_FILE).write_text(json.dumps({"pid": stale.pid, "port": stale.port,
                                                  "data_dir": str(state / "redis")}))
        private = PrivateRedis(state).start()
        try:
            assert stale.process is not None and stale.process.wait(5) == 0  # SIGTERM: a clean exit
            assert private.server is not None and private.server.pid != stale.pid
            assert redis.Redis.from_url(private.url).get("k") == b"kept"
        finally:
            private.stop()
    finally:
        stale.stop()


def test_a_pidfile_naming_another_process_leaves_it_alone(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        tmp_path.joinpath(PID_FILE).write_text(json.dumps({"pid": other.pid, "port": 6379,
                                                           "data_dir": str(tmp_path / "redis")}))
        private = PrivateRedis(tmp_path).start()
        private.stop()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


async def test_a_killed_server_is_restarted_on_its_aof(tmp_path: Path) -> None:
    private = PrivateRedis(tmp_path, fsync_always=True, poll_s=0.5).start()
    gave_up: list[str] = []
    supervisor = asyncio.create_task(private.supervise(gave_up.append))
    client = connect(private.url)  # retries: its pooled connection dies with the server
    try:
        await client.set("outage", "active")
        assert private.health() is None and private.server is not None and private.server.process is not None
        first_pid = private.server.pid
        private.server.process.kill()
        private.server.process.wait()
        reason = private.health()
        assert reason is not None and "SIGKILL" in reason  # /healthz fails at once
        deadline = time.monotonic() + 10
        while private.health() is not None:
            assert time.monotonic() < deadline, private.health()
            await asyncio.sleep(0.05)
        assert private.server.pid != first_pid and private.restarted == 1
        assert await client.get("outage") == b"active"
        assert json.loads((tmp_path / PID_FILE).read_text())["pid"] == private.server.pid
        assert gave_up == []
    finally:
        supervisor.cancel()
        await client.aclose(close_connection_pool=True)
        private.stop()


async def test_a_server_that_keeps_dying_makes_the_supervisor_give_up(tmp_path: Path) -> None:
    private = PrivateRedis(tmp_path, restarts=1, restart_window_s=60, poll_s=0.1).start()
    gave_up: list[str] = []
    supervisor = asyncio.create_task(private.supervise(gave_up.append))
    try:
        for _ in range(2):
            assert private.server is not None and private.server.process is not None
            pid = private.server.pid
            private.server.process.kill()
            deadline = time.monotonic() + 10
            while not gave_up and (private.server.pid == pid or private.health() is not None):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        await asyncio.wait_for(supervisor, 5)
        assert len(gave_up) == 1 and "died 2 times within 60 s (last: killed by SIGKILL)" in gave_up[0]
        assert private.health() == "the private redis-server keeps dying"
    finally:
        supervisor.cancel()
        private.stop()


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a process that started a redis-server is killed with -9; the server goes too."""
    code = (
        "import sys, time\n"
        "from infra.redisproc import RedisServer\n"
        f"s = RedisServer({str(tmp_path / 'r')!r}, persistent=True).start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _pid_alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while _pid_alive(child):
            assert time.monotonic() < deadline, "redis-server outlived its parent"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
