"""A real stack for integration and browser tests: a Celery worker process consuming the gpu queue
on Redis and a daphne ASGI server, both on the test database and a tiny NLA source."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

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

    @contextmanager
    def worker_paused(self) -> Iterator[None]:
        """Freeze the worker process (SIGSTOP) so jobs wait in the queue; resume it on exit.
        Lets a test look at the page before any frame of a job arrives."""
        os.kill(self.worker_pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.worker_pid, signal.SIGCONT)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in (self.worker_log, self.server_log)
            if p.exists()
        )


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


@contextmanager
def running_stack(env: dict[str, str], log_dir: Path) -> Iterator[Stack]:
    port = free_port()
    env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    worker_log, server_log = log_dir / "worker.log", log_dir / "server.log"
    worker = _spawn(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "nlaweb",
            "worker",
            "-Q",
            "gpu",
            "-P",
            "prefork",
            "-c",
            "1",
            "-n",
            f"test-{port}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "INFO",
        ],
        env,
        worker_log,
    )
    server = _spawn(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "nlaweb.asgi:application",
        ],
        env,
        server_log,
    )
    stack = Stack(
        f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", worker_log, server_log, worker.pid
    )
    try:
        wait_until(
            lambda: (
                " ready." in worker_log.read_text(errors="replace") or worker.poll() is not None
            ),
            START_S,
            "the Celery worker to be ready",
        )
        assert worker.poll() is None, stack.logs()
        wait_until(lambda: _healthy(stack.base_url) or server.poll() is not None, START_S, "daphne")
        assert server.poll() is None, stack.logs()
        yield stack
    finally:
        for process in (server, worker):
            process.terminate()
        for process in (server, worker):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _healthy(base_url: str) -> bool:
    try:
        return requests.get(base_url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
