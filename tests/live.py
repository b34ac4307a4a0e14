"""A real stack for integration and browser tests: a Celery worker process consuming the gpu queue
on Redis and a daphne ASGI server, both on the test database and a tiny NLA source; optionally the
sweeper (Celery beat), and a redis-server and PostgreSQL cluster of the test's own that it may stop
and start again (`gated_stack` starts all of it with a gated worker, as the fault tests want)."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.gates import ENV as GATES_ENV
from tests.gates import Gates

REPO = Path(__file__).resolve().parent.parent
#: Bounds on waiting, far above what a loaded 2-core machine needs: they end a hung run, they do not
#: time a healthy one. A process to be ready (it imports Django, Celery, daphne):
START_S = 120
#: A worker's first job, which imports torch and transformers and loads the models, to be heard of.
FIRST_JOB_S = 240


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` (every 50 ms) until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        pause.wait(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A redis-server of this test's own on a free loopback port (no persistence); yields its URL.
    A broker no other test run shares: its worker is the only one that can take the test's jobs."""
    import redis

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = (directory / "redis.log").open("wb")
    args = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    server = subprocess.Popen(
        [*args, "--appendonly", "no", "--dir", str(directory)], stdout=log, stderr=log
    )

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.RedisError:
            return server.poll() is not None

    try:
        wait_until(answers, 30, "redis-server to answer")
        assert server.poll() is None, (directory / "redis.log").read_text(errors="replace")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)


def write_sources_file(path: Path, sources: list[object]) -> Path:
    lines = []
    for s in sources:
        lines.append("[[source]]")
        for key in ("id", "label", "target", "av", "ar"):
            lines.append(f'{key} = "{getattr(s, key)}"')
        if getattr(s, "var_baseline", None) is not None:
            lines.append(f"var_baseline = {s.var_baseline}")
        if getattr(s, "sae", ""):
            lines.append(f'sae = "{s.sae}"')
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class Stack:
    base_url: str
    ws_url: str
    worker_log: Path
    server_log: Path
    worker_pid: int
    sweeper_log: Path | None = None
    _restart_worker: Callable[[], int] | None = field(default=None, repr=False)

    @contextmanager
    def worker_paused(self) -> Iterator[None]:
        """Freeze the worker process (SIGSTOP) so jobs wait in the queue; resume it on exit.
        Lets a test look at the page before any frame of a job arrives."""
        os.kill(self.worker_pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.worker_pid, signal.SIGCONT)

    def kill_worker_and_start_another(self) -> None:
        """SIGKILL the worker's main process and its children (a machine lost), then start a new
        worker and wait until it consumes."""
        assert self._restart_worker is not None
        self.worker_pid = self._restart_worker()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in (self.worker_log, self.server_log, self.sweeper_log)
            if p is not None and p.exists()
        )


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


def children(pid: int) -> list[int]:
    """Pids of the direct children of `pid` (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


#: The one script that starts the production processes (the docker images run it too).
STACK = str(REPO / "scripts" / "stack")
#: Celery options of the tests' processes beside the script's own: a name of the test's, and no
#: broadcasts to (or from) the other test runs' workers on a shared Redis.
_QUIET = ["--without-mingle", "--without-gossip", "-l", "INFO"]


def _worker_args(name: str) -> list[str]:
    return [STACK, "worker", "-n", name, *_QUIET]


def _sweeper_args(name: str) -> list[str]:
    return [STACK, "sweeper", "-n", name, *_QUIET]


def _wait_ready(process: subprocess.Popen[bytes], log: Path, what: str, start: int = 0) -> None:
    """Wait for Celery's " ready." in `log` after byte `start` (or for the process to end)."""

    def ready() -> bool:
        text = log.read_bytes()[start:].decode(errors="replace") if log.exists() else ""
        return " ready." in text or process.poll() is not None

    wait_until(ready, START_S, what)


@contextmanager
def running_stack(
    env: dict[str, str],
    log_dir: Path,
    *,
    worker_command: list[str] | None = None,
    sweeper: bool = False,
    workers: int = 1,
) -> Iterator[Stack]:
    """The worker (its Celery command `worker_command`, default `python -m celery`; `workers` of them,
    the others logging to worker-<n>.log) and the web process (migrate, then daphne), plus the
    sweeper when asked, each started by `scripts/stack` as the docker images start them; stopped on
    exit."""
    port = free_port()
    env = {**os.environ, **env, "PYTHONUNBUFFERED": "1", "PYTHON": sys.executable}
    env |= {"HOST": "127.0.0.1", "PORT": str(port)}
    if worker_command is not None:
        env["CELERY"] = shlex.join(worker_command)
    worker_log, server_log = log_dir / "worker.log", log_dir / "server.log"
    sweeper_log = log_dir / "sweeper.log" if sweeper else None
    processes: dict[str, subprocess.Popen[bytes]] = {}
    processes["worker"] = _spawn(_worker_args(f"test-{port}@%h"), env, worker_log)
    processes["server"] = _spawn([STACK, "web"], env, server_log)
    if sweeper_log is not None:
        processes["sweeper"] = _spawn(_sweeper_args(f"sweeper-{port}@%h"), env, sweeper_log)
    for n in range(2, workers + 1):
        args = _worker_args(f"test-w{n}-{port}@%h")
        processes[f"worker-{n}"] = _spawn(args, env, log_dir / f"worker-{n}.log")

    def restart_worker() -> int:
        old = processes["worker"]
        for pid in [*children(old.pid), old.pid]:
            os.kill(pid, signal.SIGKILL)
        old.wait(timeout=30)
        start = worker_log.stat().st_size
        processes["worker"] = _spawn(_worker_args(f"test2-{port}@%h"), env, worker_log)
        _wait_ready(processes["worker"], worker_log, "the new Celery worker to be ready", start)
        return processes["worker"].pid

    stack = Stack(
        f"http://127.0.0.1:{port}",
        f"ws://127.0.0.1:{port}",
        worker_log,
        server_log,
        processes["worker"].pid,
        sweeper_log,
        restart_worker,
    )
    try:
        _wait_ready(processes["worker"], worker_log, "the Celery worker to be ready")
        assert processes["worker"].poll() is None, stack.logs()
        for n in range(2, workers + 1):
            log = log_dir / f"worker-{n}.log"
            _wait_ready(processes[f"worker-{n}"], log, f"Celery worker {n} to be ready")
        if sweeper_log is not None:
            _wait_ready(processes["sweeper"], sweeper_log, "the sweeper to be ready")
            assert processes["sweeper"].poll() is None, stack.logs()
        server = processes["server"]
        wait_until(lambda: _healthy(stack.base_url) or server.poll() is not None, START_S, "daphne")
        assert server.poll() is None, stack.logs()
        yield stack
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _healthy(base_url: str) -> bool:
    try:
        return requests.get(base_url + "/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


# -- services of a test's own, to stop and start --------------------------------------------------


class OwnRedis:
    """A redis-server on a free loopback port, without persistence: a restart loses its data (the
    worst case for queued jobs)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.root)]
        self.process = _spawn(args, dict(os.environ), self.root / "redis.log")
        wait_until(self.answers, 30, "redis-server to answer")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise RuntimeError("PostgreSQL's server binaries are not installed (/usr/lib/postgresql).")
    return versions[-1]


class OwnPostgres:
    """A PostgreSQL cluster in a temporary directory on a free loopback port (trust auth, user
    postgres, database nlaweb). As root, its binaries run as the `postgres` user (initdb refuses
    root)."""

    def __init__(self) -> None:
        self.port, self.bin = free_port(), _postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="nlaweb-pg-"))
        self.user = "postgres" if os.getuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/nlaweb"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            user=self.user,
            cwd=self.root,
            timeout=120,
        )

    def init(self) -> None:
        data = str(self.root / "data")
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "nlaweb")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "postgres.log")
        self._run("pg_ctl", "-D", str(self.root / "data"), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: connected clients are cut off, as in a restart."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
            return list(connection.execute(sql, params).fetchall())

    def cleanup(self) -> None:
        with_data = (self.root / "data" / "postmaster.pid").exists()
        if with_data:
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def own_redis(root: Path) -> Iterator[OwnRedis]:
    redis = OwnRedis(root)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    postgres = OwnPostgres()
    try:
        postgres.init()
        yield postgres
    finally:
        postgres.cleanup()


class Timeline:
    """Seconds since the start of a test, by event; printed at the end (pytest -s shows it)."""

    def __init__(self, title: str) -> None:
        self.title, self.start = title, time.monotonic()
        self.events: list[tuple[float, str]] = []

    def mark(self, event: str) -> float:
        at = time.monotonic() - self.start
        self.events.append((at, event))
        return at

    def since(self, event: str) -> float:
        """Seconds from `event` to the last event."""
        at = next(t for t, e in self.events if e == event)
        return self.events[-1][0] - at

    def __str__(self) -> str:
        lines = [f"timeline: {self.title}"]
        lines += [f"  {at:7.2f} s  {event}" for at, event in self.events]
        return "\n".join(lines)


@dataclass
class GatedStack:
    """A stack on services of the test's own, whose worker processes stop at tests.gates' points."""

    stack: Stack
    pg: OwnPostgres
    redis: OwnRedis
    gates: Gates


@contextmanager
def gated_stack(
    sources_file: tuple[Path, str], root: Path, env: dict[str, str], workers: int = 1
) -> Iterator[GatedStack]:
    """A PostgreSQL cluster and a redis-server of this test's own (migrated), `workers` gated Celery
    workers, daphne and the sweeper, on the tiny source of `sources_file` (path, source id) with
    `env` on top (intervals, limits); every gate opened on the way in and out."""
    path, source_id = sources_file
    with own_postgres() as pg, own_redis(root / "redis") as redis:
        env = {
            "DATABASE_URL": pg.url,
            "REDIS_URL": redis.url,
            "NLA_SOURCES_FILE": str(path),
            "NLA_DEFAULT_SOURCE": source_id,
            "REPLY_MAX_NEW_TOKENS": "6",
            "DEBUG": "1",
            GATES_ENV: str(root / "gates"),
            **env,
        }
        migrate = [sys.executable, "manage.py", "migrate", "-v0"]
        subprocess.run(migrate, cwd=REPO, env={**os.environ, **env}, check=True, timeout=300)
        worker = [sys.executable, "-m", "tests.gated_worker"]
        with running_stack(
            env, root, worker_command=worker, sweeper=True, workers=workers
        ) as stack:
            gates = Gates(root / "gates")
            gates.forget()
            try:
                yield GatedStack(stack, pg, redis, gates)
            finally:
                gates.forget()
