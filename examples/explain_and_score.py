"""Explain tokens of a conversation, a raw vector and score a label with the nlaweb researcher API.

    NLAWEB_URL=http://127.0.0.1:8000 NLAWEB_API_KEY=nla_… python examples/explain_and_score.py

Only `requests` is needed. Each step prints what it got; the script exits non-zero on any error."""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

import requests

BASE = os.environ.get("NLAWEB_URL", "http://127.0.0.1:8000").rstrip("/") + "/api/v1"
KEY = os.environ.get("NLAWEB_API_KEY", "")
HEADERS = {"X-API-Key": KEY} if KEY else {}  # no key: the embedded default with API_LOCAL_NO_KEY=1


def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = requests.request(method, BASE + path, json=body, headers=HEADERS, timeout=600)
    if response.status_code != 200:
        error = response.json()
        sys.exit(f"{method} {path}: {response.status_code} {error['error']}: {error['detail']}")
    answer: dict[str, Any] = response.json()
    return answer


def stream(path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The server-sent events of a streamed call, printed as they arrive."""
    events = []
    with requests.post(BASE + path, json=body, headers=HEADERS, stream=True, timeout=600) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                break
            event = json.loads(data)
            events.append(event)
            if event.get("type") == "result":
                print(f"  #{event['position']} {event['token']!r}: {event['description']!r}")
    return events


def main() -> None:
    source = next(s for s in call("GET", "/sources")["sources"] if s["default"])
    print(f"source {source['id']}: layer {source['layer']}, d_model {source['d_model']}")

    chat = [{"role": "user", "content": "My cat loves to sleep"}]
    explained = call("POST", "/explain", {"messages": chat, "positions": [-1, -2]})
    for result in explained["results"]:
        print(f"  #{result['position']} {result['token']!r} (fve {result['fve']}):")
        print(f"    {result['description']!r}")
    print(f"open it in the app: /c/{explained['cacheId']}/")

    print("streamed, the same conversation by its cacheId:")
    stream("/explain", {"cacheId": explained["cacheId"], "positions": [-3], "stream": True})

    rng = random.Random(0)  # noqa: S311 (a reproducible example vector)
    vector = [rng.gauss(0.0, 1.0) for _ in range(source["d_model"])]
    (raw,) = call("POST", "/explain-vector", {"vectors": [vector]})["results"]
    print(f"raw vector: {raw['description']!r} (cosine {raw['cosine_similarity']:.3f})")

    scored = call("POST", "/score", {"vector": vector, "label": "cats and sleep"})
    print("label 'cats and sleep':", json.dumps(scored["scores"]))


if __name__ == "__main__":
    main()
