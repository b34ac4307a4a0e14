"""Load on the compose-equivalent stack, loopback only: 20 simulated people, 200 explain clicks and 50
open websockets against the web (daphne, migrated on start), one GPU-queue worker (prefork, one
process) and the sweeper, each started by scripts/stack as the images start them, on a redis-server
and a PostgreSQL database of this run's own (created on the local cluster, dropped at the end).

    .venv/bin/python benchmarks/load.py [--users 20] [--clicks 200] [--sockets 50] [--max-seconds 900]

Model: the tiny test NLA (tests/tiny_models.py: a 4-layer, 32-wide Llama target and its AV/AR, built
in a temporary folder), so the figures show the web's and the queue's share, not a model's speed.

Each person: a guest (GET /, POST /c/new), their share of the websockets to their conversation,
one message sent and its reply awaited (chat.done), then their share of the clicks, one token each,
all people at once. Printed: every click answered with 200 and either its result or its place in
line; 5xx count (must be 0); p50/p95 of the web's answer time per request kind (the web overhead: a
click is answered before any model work) and of time-to-result (click to `explanation.done` on the
person's websocket); frames received; the queue's rows at the end. Bounded by the counts and by
--max-seconds (what is not done by then is reported as not done); it stops its processes itself."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from websockets.sync.client import ClientConnection, connect

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.live import redis_server, running_stack, write_sources_file  # noqa: E402

LOOPBACK = "127.0.0.1"
POSTGRES = f"postgres://postgres@{LOOPBACK}:5432"
#: Each person's message starts differently: equal token prefixes would share their rows.
MESSAGE = "{n} said: my cat loves to sleep on the warm windowsill in the afternoon."


@dataclass
class Figures:
    """What every request and frame of the run measured (seconds), filled from many threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[int] = field(default_factory=Counter)
    clicks: list[dict[str, Any]] = field(default_factory=list)
    done_at: dict[str, float] = field(default_factory=dict)
    frames: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # a failed frame's sentence
    raced: int = 0  # answered "queued" without a place, the worker having started it meanwhile

    def answered(self, kind: str, seconds: float, status: int) -> None:
        with self.lock:
            self.answers[kind].append(seconds)
            self.statuses[status] += 1


class Person:
    """One simulated researcher: a guest session, a conversation, websockets to it."""

    def __init__(self, n: int, base: str, figures: Figures, deadline: float) -> None:
        self.n, self.base, self.figures, self.deadline = n, base, figures, deadline
        self.http = requests.Session()
        self.sockets: list[ClientConnection] = []
        self._exits = ExitStack()
        self.replied = threading.Event()
        self.conversation = ""
        self.explain_url = ""
        self.positions: list[int] = []

    def request(self, kind: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-CSRFToken": self.http.cookies.get("csrftoken", ""), "Referer": self.base}
        start = time.perf_counter()
        response = self.http.request(
            method, self.base + path, headers=headers, timeout=120, **kwargs
        )
        self.figures.answered(kind, time.perf_counter() - start, response.status_code)
        return response

    def start(self) -> None:
        self.request("page", "GET", "/")
        started = self.request("new conversation", "POST", "/c/new")
        self.conversation = re.search(r"/c/([0-9a-f-]{36})/", started.url)[1]  # type: ignore[index]

    def open_sockets(self, count: int) -> None:
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        url = self.base.replace("http", "ws", 1) + f"/ws/conversations/{self.conversation}/"
        for i in range(count):
            headers = {"Cookie": cookie, "Origin": self.base}
            ws = self._exits.enter_context(connect(url, additional_headers=headers))
            self.sockets.append(ws)
            threading.Thread(target=self._read, args=(ws, i == 0), daemon=True).start()

    def _read(self, ws: ClientConnection, records: bool) -> None:
        while time.monotonic() < self.deadline:
            try:
                frame = json.loads(ws.recv(timeout=1))
            except TimeoutError:
                continue
            except Exception:  # closed at the end of the run
                return
            with self.figures.lock:
                self.figures.frames[frame["type"]] += 1
                if records and frame["type"].endswith(".failed"):
                    self.figures.failures[f"{frame['type']}: {frame['error']}"] += 1
                if records and frame["type"] in ("explanation.done", "explanation.failed"):
                    self.figures.done_at.setdefault(frame["explanation_id"], time.perf_counter())
            if records and frame["type"] in ("chat.done", "chat.failed"):
                self.replied.set()

    def send_and_wait(self) -> None:
        self.request(
            "send",
            "POST",
            f"/c/{self.conversation}/send",
            data={"content": MESSAGE.format(n=self.n)},
        )
        if not self.replied.wait(max(0.0, self.deadline - time.monotonic())):
            raise TimeoutError("the reply did not finish before --max-seconds")
        page = self.request("page", "GET", f"/c/{self.conversation}/").text
        self.explain_url = re.search(rf"/c/{self.conversation}/s/[0-9a-f-]+/explain", page)[0]  # type: ignore[index]
        found = [int(p) for p in re.findall(r'class="tok[^"]*" data-position="(\d+)"', page)]
        self.positions = sorted(set(found))

    def click(self, position: int) -> None:
        path = self.explain_url.removeprefix(self.base)
        start = time.perf_counter()
        response = self.request("explain click", "POST", path, data={"position": position})
        answered_at = time.time()
        section = re.search(
            r'data-explanation-id="([0-9a-f-]+)" data-status="(\w+)"', response.text
        )
        found = (section[1], section[2]) if section else ("", "")
        place = re.search(r'data-role="place">([^<]*)<', response.text)
        with self.figures.lock:
            self.figures.clicks.append(
                {
                    "id": found[0],
                    "status": found[1],
                    "place": place[1].strip() if place else "",
                    "http": response.status_code,
                    "at": start,
                    "answered_at": answered_at,
                }
            )

    def close(self) -> None:
        self._exits.close()


def in_threads(targets: list[Any]) -> None:
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def share(total: int, parts: int) -> list[int]:
    """`total` split over `parts` as evenly as counts go (the first ones get the remainder)."""
    return [total // parts + (i < total % parts) for i in range(parts)]


@contextmanager
def own_database() -> Any:
    import psycopg

    name = f"nlaweb_load_{os.getpid()}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stack_env(root: Path, database: str, redis: str) -> dict[str, str]:
    from tests.tiny_models import build_tiny_source

    source = build_tiny_source(root / "tiny", family="llama")
    sources = write_sources_file(root / "sources.toml", [source])
    env = {
        "DATABASE_URL": database,
        "REDIS_URL": redis,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "ALLOWED_HOSTS": LOOPBACK,
        "NLAWEB_DATA_DIR": str(root / "data"),
        "STATIC_ROOT": str(root / "static"),
        "NLA_SOURCES_FILE": str(sources),
        "NLA_DEFAULT_SOURCE": source.id,
        "REPLY_MAX_NEW_TOKENS": "6",
    }
    collect = [sys.executable, "manage.py", "collectstatic", "--no-input", "-v0"]
    subprocess.run(collect, cwd=REPO, env={**os.environ, **env}, check=True, timeout=300)
    return env


def started_meanwhile(database: str, clicks: list[dict[str, Any]]) -> int:
    """Clicks answered "queued" with no place whose row the worker had started before the answer
    left the web (the panel read the row, then the queue without it)."""
    import psycopg

    placeless = [c for c in clicks if c["status"] == "queued" and not c["place"]]
    with psycopg.connect(database) as connection:
        raced = 0
        for click in placeless:
            row = connection.execute(
                "SELECT extract(epoch FROM started_at) FROM explanations_explanation WHERE id = %s",
                (click["id"],),
            ).fetchone()
            raced += bool(row and row[0] is not None and float(row[0]) <= click["answered_at"])
    return raced


def keep_logs(logs: list[Path | None]) -> None:
    """The stack's logs, copied out of the run's temporary folder to var/load-logs/."""
    import shutil

    folder = REPO / "var" / "load-logs"
    folder.mkdir(parents=True, exist_ok=True)
    for log in logs:
        if log is not None and log.exists():
            shutil.copy(log, folder / log.name)
    print(f"the stack's logs: {folder}")


def percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms (n={len(ordered)})"


def run(users: int, clicks: int, sockets: int, max_seconds: float) -> int:
    deadline = time.monotonic() + max_seconds
    figures = Figures()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nlaweb-load-")))
        (root / "redis").mkdir()
        redis = stack.enter_context(redis_server(root / "redis"))
        database = stack.enter_context(own_database())
        env = stack_env(root, database, redis)
        print("==> starting the stack (scripts/stack web, worker, sweeper)", flush=True)
        live = stack.enter_context(running_stack(env, root, sweeper=True))
        assert live.base_url.startswith(f"http://{LOOPBACK}:"), live.base_url
        people = [Person(n, live.base_url, figures, deadline) for n in range(users)]
        for person in people:
            stack.callback(person.close)
        started = time.perf_counter()
        in_threads([p.start for p in people])
        for person, count in zip(people, share(sockets, users), strict=True):
            person.open_sockets(count)
        print(f"==> {users} people, {sockets} websockets open; sending", flush=True)
        in_threads([p.send_and_wait for p in people])
        replied = time.perf_counter()
        print(f"==> replies done in {replied - started:.1f} s; {clicks} clicks", flush=True)
        plans = []
        for person, count in zip(people, share(clicks, users), strict=True):
            positions = (person.positions * (count // max(1, len(person.positions)) + 1))[:count]
            plans.append(lambda p=person, ps=positions: [p.click(x) for x in ps])
        in_threads(plans)
        answered = time.perf_counter()
        wanted = {c["id"] for c in figures.clicks if c["id"]}
        while time.monotonic() < deadline and not wanted <= set(figures.done_at):
            time.sleep(0.2)
        finished = time.perf_counter()
        figures.raced = started_meanwhile(database, figures.clicks)
        keep_logs([live.worker_log, live.server_log, live.sweeper_log])
        open_at_end = sum(ws.close_code is None for p in people for ws in p.sockets)
    return report(figures, users, clicks, sockets, open_at_end, started, answered, finished)


def report(
    figures: Figures,
    users: int,
    clicks: int,
    sockets: int,
    open_at_end: int,
    started: float,
    answered: float,
    finished: float,
) -> int:
    server_errors = sum(n for status, n in figures.statuses.items() if status >= 500)
    told = [
        c
        for c in figures.clicks
        if c["status"] == "done"
        or (c["status"] in ("queued", "running") and (c["place"] or c["status"] == "running"))
    ]
    unanswered = [c for c in figures.clicks if c not in told]
    first_click = {c["id"]: c["at"] for c in sorted(figures.clicks, key=lambda c: c["at"])}
    to_result = [figures.done_at[i] - at for i, at in first_click.items() if i in figures.done_at]
    not_done = [i for i in first_click if i not in figures.done_at]
    print(
        f"\n{users} people, {clicks} explain clicks, {sockets} websockets (open at the end: {open_at_end})"
    )
    print(f"model: the tiny test NLA; one worker (prefork, 1 process); {os.cpu_count()} cores")
    print(f"HTTP answers by status: {dict(sorted(figures.statuses.items()))}; 5xx: {server_errors}")
    status_counts = Counter(c["status"] for c in figures.clicks)
    print(f"clicks answered: {len(figures.clicks)}; by status at answer: {dict(status_counts)}")
    print(f"clicks told their result or place in line: {len(told)}; not told: {len(unanswered)}")
    if unanswered:
        print(
            f"  of those, answered 'queued' while the worker had already started it: {figures.raced}"
        )
    places = [c["place"] for c in figures.clicks if c["place"]]
    if places:
        deepest = max(int(re.match(r"\d+", p)[0]) for p in places)  # type: ignore[index]
        print(f"places in line told: e.g. {places[0]!r}; deepest {deepest}")
    print("web answer time (overhead) by kind:")
    for kind, values in figures.answers.items():
        print(f"  {kind}: {percentiles(values)}")
    print(f"time to result (click to explanation.done), distinct rows: {percentiles(to_result)}")
    print(f"rows not done by the end: {len(not_done)}")
    print(
        f"clicks sent and answered in {answered - started:.1f} s after the start; last result at {finished - started:.1f} s"
    )
    print(f"frames received (all sockets): {dict(figures.frames)}")
    for failure, count in figures.failures.most_common(5):
        print(f"  failed frames ({count}× on the first socket of a person): {failure}")
    ok = server_errors == 0 and not unanswered and not not_done and open_at_end == sockets
    ok = ok and not figures.failures
    print("RESULT:", "ok" if ok else "NOT OK")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--clicks", type=int, default=200)
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    return run(args.users, args.clicks, args.sockets, args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
