"""``redis-server`` child processes: a plain one for tests and load tests, and ``PrivateRedis``, the
supervised one that ``serve`` owns when it is given no Redis URL.

Every child dies with the thread that started it (``PR_SET_PDEATHSIG``: SIGTERM, so it still
writes its AOF) and creates its files with umask 077. ``PrivateRedis`` adds what a long-lived
store needs: the state directory locked against a second ``serve`` (0700, files 0600), a
generated ``requirepass`` kept in a 0600 file, a pidfile through which a redis-server left over by
a killed ``serve`` is found and stopped, and a supervisor that restarts a dead redis-server on its
AOF, or gives up after too many deaths in a window.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

log = logging.getLogger("backupplus.redisproc")

_PR_SET_PDEATHSIG = 1
PASSWORD_FILE = "redis.pass"
LOCK_FILE = "serve.lock"
PID_FILE = "redis.pid"


class RedisServerError(RuntimeError):
    """redis-server is missing or did not come up."""


class StateDirLocked(RuntimeError):
    """Another ``backupplus serve`` holds this state directory (and its private Redis)."""


class PrivateRedisFailed(RuntimeError):
    """The private redis-server died more often than the supervisor restarts it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_setup(parent_pid: int) -> Callable[[], None]:
    """The ``preexec_fn`` of a redis-server: umask 077, and SIGTERM when its parent dies. libc is
    loaded here, in the parent: between fork and exec the child only calls into it."""
    prctl: Callable[..., int] | None = None
    if sys.platform.startswith("linux"):
        prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        os.umask(0o077)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)

    return setup


def stop_child(process: subprocess.Popen[bytes] | None, grace_s: float = 5.0) -> None:
    """SIGTERM to a child server (it writes what it must), SIGKILL after ``grace_s``; reaped either way."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace_s)


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer:
    """Starts ``redis-server`` bound to loopback on a free port and stops it.

    ``persistent`` turns AOF on in ``data_dir`` (``fsync_always``: fsync each write instead of each
    second); tests run without persistence in a temporary directory. With a ``password`` the
    server gets ``requirepass`` from a 0600 config file (never on its command line, which any local
    user can read) and ``url`` carries it. Start it from a thread that lives as long as it should:
    it gets SIGTERM when that thread ends.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        persistent: bool = False,
        port: int | None = None,
        password: str | None = None,
        fsync_always: bool = False,
        extra_args: Sequence[str] = (),
    ):
        self.persistent = persistent
        self.password = password
        self.fsync_always = fsync_always
        self.extra_args = list(extra_args)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="backupplus-redis-")
            data_dir = Path(self._tmp.name)
        self.data_dir = Path(data_dir).resolve()  # redis-server chdirs into --dir before opening its log
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def display_url(self) -> str:
        """``url`` without the password, for logs."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _args(self, binary: str) -> list[str]:
        args = [binary]
        if self.password:
            conf = self.data_dir / "redis.conf"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"# written by backupplus at each start\nrequirepass {self.password}\n")
            os.chmod(conf, 0o600)
            args.append(str(conf))
        args += [
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "always" if self.fsync_always else "everysec",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]
        return args

    def spawn(self) -> subprocess.Popen[bytes]:
        """Starts the process and returns at once (``wait_ready`` / ``ping`` tell when it serves)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError(
                "redis-server is not installed: run `make setup` (installs the Debian package redis-server)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self._args(binary), stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_child_setup(os.getpid()),  # noqa: PLW1509 - no threads touch it; see _child_setup
        )
        return self.process

    def ping(self, timeout: float = 0.2) -> bool:
        """True when the server answers PING (after AUTH); False while it starts, loads or is gone."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                request = (_resp("AUTH", self.password) if self.password else b"") + _resp("PING")
                s.sendall(request)
                want = (b"+OK\r\n" if self.password else b"") + b"+PONG"
                got = b""
                while len(got) < len(want):
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    got += chunk
                return got.startswith(want)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 10.0) -> Self:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise RedisServerError(f"redis-server exited with {code}; see {self.data_dir / 'redis.log'}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port} within {timeout:.0f} s")

    def start(self, timeout: float = 10.0) -> Self:
        self.spawn()
        return self.wait_ready(timeout)

    def stop(self) -> None:
        stop_child(self.process)
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL, for failure tests; ``start`` again brings it back on the same port."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the supervised private Redis of `serve` --------------------------------------------------------


@dataclass(frozen=True)
class PidRecord:
    """What ``redis.pid`` holds: enough to tell our redis-server from any process that got its pid."""

    pid: int
    port: int
    data_dir: str


def _process_is_redis_of(record: PidRecord) -> bool:
    """Whether ``record.pid`` is a redis-server listening on ``record.port`` in ``record.data_dir``:
    its command line (redis-server rewrites it to ``redis-server 127.0.0.1:PORT``) and its working
    directory (redis-server chdirs into ``--dir``)."""
    proc = Path("/proc") / str(record.pid)
    try:
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        cwd = os.readlink(proc / "cwd")
    except OSError:
        return False
    if not cmdline or not Path(cmdline[0]).name.startswith("redis-server"):
        return False
    port_seen = any(arg.endswith(f":{record.port}") or arg == str(record.port) for arg in cmdline)
    return port_seen and Path(cwd) == Path(record.data_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().split(")", 1)[1].split()[0] != "Z"
    return True


def _write_private(path: Path, text: str) -> None:
    """Writes a 0600 file (replacing it)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class PrivateRedis:
    """``serve``'s own redis-server with its data under ``state_dir/redis`` (see the module doc).

    ``start`` (from the main thread) locks the directory, stops a stale redis-server of it and
    starts one; ``supervise`` (a task) restarts it when it dies; ``health`` says why it is not
    serving (None when it is); ``stop`` ends it and releases the directory.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        fsync_always: bool = False,
        restarts: int = 5,
        restart_window_s: float = 60.0,
        poll_s: float = 0.2,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.data_dir = self.state_dir / "redis"
        self.fsync_always = fsync_always
        self.restarts = restarts
        self.restart_window_s = restart_window_s
        self.poll_s = poll_s
        self.server: RedisServer | None = None
        self._lock: IO[str] | None = None
        self._down: str | None = "not started"
        self._deaths: collections.deque[float] = collections.deque()
        self.restarted = 0

    @property
    def url(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.url

    @property
    def display_url(self) -> str:
        assert self.server is not None, "start() first"
        return self.server.display_url

    def health(self) -> str | None:
        """None while the redis-server serves; otherwise why not (for /healthz). A death shows at
        once, before the supervisor's next poll."""
        server = self.server
        if self._down is None and server is not None and server.process is not None:
            code = server.process.poll()
            if code is not None:
                return f"the private redis-server exited ({_exit_text(code)})"
        return self._down

    # --- start / stop -----------------------------------------------------------------------------
    def start(self) -> Self:
        self._secure_dirs()
        self._acquire_lock()
        try:
            self._stop_stale()
            self.server = RedisServer(
                self.data_dir, persistent=True, password=self._password(), fsync_always=self.fsync_always
            )
            self.server.start()
            self._write_pidfile()
            self._down = None
        except BaseException:
            self._release_lock()
            raise
        return self

    def stop(self) -> None:
        self._down = "stopped"
        if self.server is not None:
            self.server.stop()
            self.server = None
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / PID_FILE).unlink()
        self._release_lock()

    def _secure_dirs(self) -> None:
        """The state directory and the Redis directory 0700; every file already in them 0600 (an
        AOF written by an older version was 0644)."""
        for d in (self.state_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(d, 0o700)
        for root, dirs, files in os.walk(self.state_dir):
            for name in dirs:
                os.chmod(Path(root) / name, 0o700)
            for name in files:
                path = Path(root) / name
                if not path.is_symlink():
                    os.chmod(path, 0o600)

    def _acquire_lock(self) -> None:
        path = self.state_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        lock = os.fdopen(fd, "r+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read().strip() or "?"
            lock.close()
            raise StateDirLocked(
                f"the state directory {self.state_dir} is in use by another `backupplus serve` (pid {holder}) "
                "and its private redis-server: give each serve its own --state-dir, or start them all "
                "with one --redis-url"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _password(self) -> str:
        path = self.state_dir / PASSWORD_FILE
        if path.exists():
            password = path.read_text().strip()
            if password:
                return password
        password = secrets.token_urlsafe(32)
        _write_private(path, password + "\n")
        return password

    def _write_pidfile(self) -> None:
        assert self.server is not None and self.server.pid is not None
        record = PidRecord(self.server.pid, self.server.port, str(self.data_dir))
        _write_private(self.state_dir / PID_FILE, json.dumps(record.__dict__) + "\n")

    def _stop_stale(self) -> PidRecord | None:
        """A redis-server left by a ``serve`` that died (its pidfile proves it ours) is stopped
        (SIGTERM: it writes its AOF; SIGKILL after 10 s) before a new one opens the same AOF. A pid
        that now belongs to another process is left alone. Returns the previous record."""
        path = self.state_dir / PID_FILE
        try:
            raw = json.loads(path.read_text())
            record = PidRecord(int(raw["pid"]), int(raw["port"]), str(raw["data_dir"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if _alive(record.pid) and _process_is_redis_of(record):
            print(
                f"redis: stopping the redis-server (pid {record.pid}) that a previous serve left running "
                f"on {self.data_dir}", flush=True,
            )
            os.kill(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(record.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(record.pid):
                os.kill(record.pid, signal.SIGKILL)
                while _alive(record.pid):
                    time.sleep(0.05)
        path.unlink(missing_ok=True)
        return record

    # --- supervision ------------------------------------------------------------------------------
    async def supervise(self, give_up: Callable[[str], None]) -> None:
        """Watches the child; a dead one is restarted on its AOF (same port and password: the
        clients' URL stays valid) unless it died more than ``restarts`` times within
        ``restart_window_s``: then ``give_up(reason)`` and return. Cancel to stop watching."""
        while True:
            await asyncio.sleep(self.poll_s)
            server = self.server
            if server is None or server.process is None:
                return
            code = server.process.poll()
            if code is None:
                continue
            self._down = f"the private redis-server exited ({_exit_text(code)}); restarting it"
            log.error("private redis-server (pid %s) exited: %s", server.pid, _exit_text(code))
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and self._deaths[0] < now - self.restart_window_s:
                self._deaths.popleft()
            if len(self._deaths) > self.restarts:
                self._down = "the private redis-server keeps dying"
                give_up(
                    f"the private redis-server died {len(self._deaths)} times within "
                    f"{self.restart_window_s:.0f} s (last: {_exit_text(code)}); giving up, see "
                    f"{self.data_dir / 'redis.log'}"
                )
                return
            try:
                await self._restart(server)
            except RedisServerError as exc:
                log.error("private redis-server did not come back: %s", exc)
                continue  # the dead child is counted at the next poll
            self.restarted += 1
            self._down = None
            log.warning("private redis-server restarted on its AOF (pid %s, restart %d)", server.pid, self.restarted)

    async def _restart(self, server: RedisServer, timeout: float = 30.0) -> None:
        server.spawn()  # from the loop's thread: the main thread of serve, which outlives the child
        self._write_pidfile()
        deadline = time.monotonic() + timeout
        while not server.ping():
            assert server.process is not None
            if server.process.poll() is not None:
                raise RedisServerError(f"exited again ({_exit_text(server.process.returncode)})")
            if time.monotonic() > deadline:
                server.process.kill()  # hung: the next poll counts it as a death
                raise RedisServerError(f"not serving {timeout:.0f} s after its restart")
            await asyncio.sleep(0.05)


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"status {code}"
