"""The researcher API in the quick start's mode: `manage.py serve` on SQLite with the in-process
broker, in-memory channel layer and worker thread, keyless from the loopback (API_LOCAL_NO_KEY=1),
limits counted in the database window."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.live import REPO, free_port, wait_until
from tests.tiny_models import D_MODEL

pytestmark = pytest.mark.django_db(transaction=True)  # only for the tiny-source fixture's settings


def test_the_embedded_default_serves_the_api_without_a_key_on_the_loopback(
    tmp_path: Path, tiny_sources_file
):
    sources_file, _ = tiny_sources_file
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env |= {
        "NLAWEB_DATA_DIR": str(tmp_path / "data"),
        "NLA_SOURCES_FILE": str(sources_file),
        "API_LOCAL_NO_KEY": "1",
        "API_EXPLAIN_PER_HOUR": "3",
        "DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=120)
    port, log_path = free_port(), tmp_path / "serve.log"
    server = subprocess.Popen(
        [*manage, "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_until(
            lambda: "Listening on TCP" in log_path.read_text() or server.poll() is not None,
            60,
            "manage.py serve",
        )
        assert server.poll() is None, log_path.read_text()
        assert requests.get(f"{api}/sources", timeout=10).json()["sources"][0]["d_model"] == D_MODEL

        body = {"messages": [{"role": "user", "content": "My cat"}], "positions": [-1, 1]}
        answer = requests.post(f"{api}/explain", json=body, timeout=120)
        assert answer.status_code == 200, log_path.read_text()[-3000:]
        assert [r["status"] for r in answer.json()["results"]] == ["done", "done"]
        assert answer.headers["X-RateLimit-Remaining"] == "2"

        body = {"cacheId": answer.json()["cacheId"], "positions": [2], "stream": True}
        with requests.post(f"{api}/explain", json=body, timeout=120, stream=True) as streamed:
            lines = [line for line in streamed.iter_lines(decode_unicode=True) if line]
        events = [line.removeprefix("data: ") for line in lines]
        assert json.loads(events[0])["type"] == "metadata" and events[-1] == "[DONE]"
        assert [json.loads(e)["position"] for e in events if '"result"' in e] == [2]

        vectors = {"vectors": [[0.25] * D_MODEL]}
        explained = requests.post(f"{api}/explain-vector", json=vectors, timeout=120)
        assert explained.status_code == 200, log_path.read_text()[-3000:]
        refused = requests.post(f"{api}/explain-vector", json=vectors, timeout=120)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    finally:
        server.terminate()
        server.wait(timeout=15)
