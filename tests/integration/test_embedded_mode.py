"""The quick start's mode, for real: `manage.py serve` with no DATABASE_URL and no REDIS_URL runs on
SQLite, the in-process broker and channel layer, and a worker thread; a message gets a streamed reply
and a clicked token an explanation, over HTTP and the websocket."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect

from tests.live import FIRST_JOB_S, REPO, START_S, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)  # only for the tiny-source fixture's settings


def _frames_until(ws, final: set[str]) -> list[dict]:
    frames = []
    while True:
        frames.append(json.loads(ws.recv(timeout=FIRST_JOB_S)))
        if frames[-1]["type"] in final:
            return frames


def test_the_embedded_default_chats_and_explains_without_postgres_or_redis(
    tmp_path: Path, tiny_sources_file
):
    sources_file, _ = tiny_sources_file
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env |= {
        "NLAWEB_DATA_DIR": str(tmp_path / "data"),  # absent, as in a fresh checkout
        "NLA_SOURCES_FILE": str(sources_file),
        "REPLY_MAX_NEW_TOKENS": "6",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DEBUG", None)  # the quick start's mode: DEBUG off, its own secret key
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=120)
    subprocess.run(  # as scripts/run does: DEBUG off serves the hashed, collected static files
        [*manage, "collectstatic", "--no-input", "-v0"], cwd=REPO, env=env, check=True, timeout=120
    )
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [*manage, "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: (
                "Listening on TCP" in (tmp_path / "serve.log").read_text()
                or server.poll() is not None
            ),
            START_S,
            "manage.py serve",
        )
        assert server.poll() is None, (tmp_path / "serve.log").read_text()
        assert (tmp_path / "data" / "nlaweb.sqlite3").exists()
        http = requests.Session()
        http.get(base + "/")
        headers = {"X-CSRFToken": http.cookies["csrftoken"], "Origin": base}
        page = http.post(base + "/c/new", headers=headers)
        conversation_id = re.search(r"/c/([0-9a-f-]{36})/", page.url).group(1)
        # That POST made the guest account, and logging it in rotated the CSRF token.
        headers["X-CSRFToken"] = http.cookies["csrftoken"]
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        ws_url = f"ws://127.0.0.1:{port}/ws/conversations/{conversation_id}/"
        with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": base}) as ws:
            http.post(
                f"{base}/c/{conversation_id}/send", data={"content": "My cat"}, headers=headers
            )
            frames = _frames_until(ws, {"chat.done", "chat.failed"})
            assert frames[-1]["type"] == "chat.done", (tmp_path / "serve.log").read_text()[-3000:]
            thread = http.get(f"{base}/c/{conversation_id}/").text
            explain_url = re.search(r'hx-post="(/c/[^"]+/explain)"', thread).group(1)
            panel = http.post(base + explain_url, data={"position": 5}, headers=headers).text
            assert 'data-status="queued"' in panel or 'data-status="running"' in panel
            frames = _frames_until(ws, {"explanation.done", "explanation.failed"})
        assert frames[-1]["type"] == "explanation.done", (tmp_path / "serve.log").read_text()[
            -3000:
        ]
        assert "explanation.progress" in {f["type"] for f in frames}
        # A stranger (another browser) gets the app's own 404, never Django's debug page.
        stranger = requests.get(f"{base}/c/{conversation_id}/")
        assert stranger.status_code == 404
        assert "conversations are private to their owner" in stranger.text
        assert "URLconf" not in stranger.text and "Traceback" not in stranger.text
        assert requests.get(base + "/favicon.ico", allow_redirects=True).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=15)
