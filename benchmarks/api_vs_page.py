"""One 16-position explain through the API vs the same 16 positions clicked on the page, against a
running server (`scripts/run`, or production): wall time from the request to the 16th stored result.

    .venv/bin/python benchmarks/api_vs_page.py http://127.0.0.1:8000

Run it with the server's environment (it reads the rows' timestamps through the ORM, to tell the
worker's time from the time around it: "overhead" = wall time − (last row finished − first created)).

Each round writes three fresh conversations with /completion (so no activation is cached), then
explains the last 16 tokens of one by the page's path (htmx POST of 16 positions, then the websocket's
16 `explanation.done` frames), of one by POST /api/v1/explain (JSON), and of one by the same with
`stream: true` (first partial text, 16th result, `[DONE]`). The order of the paths rotates by round."""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import requests
from websockets.sync.client import connect

POSITIONS = 16
NOUNS = [
    "tea",
    "jam",
    "bread",
    "salt",
    "rice",
    "milk",
    "soap",
    "wine",
    "silk",
    "glass",
    "wool",
    "honey",
    "paper",
    "coffee",
    "sugar",
    "ink",
]
#: One fresh conversation per measured explain: equal prefixes would be served from the worker's
#: activation cache.
MESSAGES = [f"Tell me about the history of {noun} in two sentences." for noun in NOUNS]


class Client:
    """A guest of the page (session, CSRF) with an API key made on its keys page."""

    def __init__(self, base: str) -> None:
        self.base, self.http = base.rstrip("/"), requests.Session()
        self.http.get(self.base + "/")
        self.csrf = self.http.cookies["csrftoken"]
        page = self.http.post(
            self.base + "/account/api-keys", {"name": "benchmark"}, headers=self._csrf()
        ).text
        self.key = re.search(r"nla_[0-9a-f]{8}_[A-Za-z0-9_-]{32}", page).group(0)  # type: ignore[union-attr]

    def _csrf(self) -> dict[str, str]:
        return {"X-CSRFToken": self.csrf, "Referer": self.base + "/"}

    def api(self, path: str, body: dict[str, Any], **kwargs: Any) -> requests.Response:
        return requests.post(
            f"{self.base}/api/v1{path}",
            json=body,
            headers={"X-API-Key": self.key},
            timeout=900,
            **kwargs,
        )

    def conversation(self, text: str) -> tuple[str, list[int]]:
        """A fresh conversation (the reply written by the target) and its last 16 positions."""
        answer = self.api("/completion", {"messages": [{"role": "user", "content": text}]}).json()
        length = answer["prompt_length"]
        return answer["cacheId"], list(range(length - POSITIONS, length))

    def page_click(self, cache_id: str, positions: list[int]) -> dict[str, float]:
        html = self.http.get(f"{self.base}/c/{cache_id}/").text
        url = re.search(rf"/c/{cache_id}/s/[0-9a-f-]+/explain", html).group(0)  # type: ignore[union-attr]
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        ws_url = self.base.replace("http", "ws", 1) + f"/ws/conversations/{cache_id}/"
        with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": self.base}) as ws:
            start = time.perf_counter()
            self.http.post(self.base + url, {"position": positions}, headers=self._csrf())
            done, first_text = 0, None
            while done < len(positions):
                frame = json.loads(ws.recv(timeout=900))
                if frame["type"] == "explanation.text" and first_text is None:
                    first_text = time.perf_counter() - start
                done += frame["type"] in ("explanation.done", "explanation.failed")
            return {"first text": first_text or 0.0, "16th result": time.perf_counter() - start}

    def api_json(self, cache_id: str, positions: list[int]) -> dict[str, float]:
        start = time.perf_counter()
        results = self.api("/explain", {"cacheId": cache_id, "positions": positions}).json()
        assert all(r["status"] == "done" for r in results["results"]), results
        return {"16th result": time.perf_counter() - start}

    def api_stream(self, cache_id: str, positions: list[int]) -> dict[str, float]:
        start, marks, results = time.perf_counter(), {}, 0
        body = {"cacheId": cache_id, "positions": positions, "stream": True}
        with self.api("/explain", body, stream=True) as reply:
            for line in reply.iter_lines(decode_unicode=True):
                data = line.removeprefix("data: ") if line else ""
                if data == "[DONE]":
                    marks["[DONE]"] = time.perf_counter() - start
                    break
                event = json.loads(data) if data else {}
                if event.get("type") == "partial":
                    marks.setdefault("first text", time.perf_counter() - start)
                results += event.get("type") == "result"
                if results == len(positions):
                    marks.setdefault("16th result", time.perf_counter() - start)
        return marks


def worker_seconds(cache_id: str) -> float:
    """Last row finished − first row created, over the conversation's explanations."""
    from django.db.models import Max, Min

    from nlaweb.explanations.models import Explanation

    span = Explanation.objects.filter(snapshot__conversation_id=cache_id).aggregate(
        first=Min("created_at"), last=Max("finished_at")
    )
    return float((span["last"] - span["first"]).total_seconds())


def main(base: str, rounds: int = 3) -> None:
    client = Client(base)
    paths: dict[str, Callable[[str, list[int]], dict[str, float]]] = {
        "page click (htmx + websocket)": client.page_click,
        "API, JSON": client.api_json,
        "API, stream": client.api_stream,
    }
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    texts = iter(MESSAGES)
    for round_ in range(rounds):
        names = list(paths)[round_ % 3 :] + list(paths)[: round_ % 3]
        for name in names:
            cache_id, positions = client.conversation(next(texts))
            marks = paths[name](cache_id, positions)
            job = worker_seconds(cache_id)
            marks["overhead"] = marks["16th result"] - job
            figures[name].append({**marks, "rows created → last finished": job})
            shown = ", ".join(f"{k} {v:.2f}" for k, v in figures[name][-1].items())
            print(f"round {round_ + 1}, {name}: {shown}", flush=True)
    print(f"{POSITIONS} positions, {rounds} rounds, median (min–max) seconds")
    for name, runs in figures.items():
        cells = []
        for mark in runs[0]:
            values = [run[mark] for run in runs]
            cells.append(
                f"{mark} {statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"
            )
        print(f"  {name}: " + "; ".join(cells))


if __name__ == "__main__":
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nlaweb.settings")
    django.setup()
    main(
        sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000",
        int(sys.argv[2]) if len(sys.argv) > 2 else 3,
    )
