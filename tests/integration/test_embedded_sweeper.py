"""The embedded mode sweeps too: `manage.py serve` (SQLite, in-process broker and worker) runs the
sweeper in a thread, so an explanation and a reply whose worker went silent (as after a server killed
mid-job) are done again with nobody clicking."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from django.urls import reverse

from tests.live import REPO, Timeline, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)  # only for the tiny-source fixture's settings

LEFT_BY_A_DEAD_WORKER = (
    "UPDATE {table} SET {status}, job_id = 'dead-job', attempts = 1, "
    "heartbeat_at = '2000-01-01 00:00:00' WHERE id = ?"
)


def _one(db: Path, sql: str, *params: str) -> tuple:
    with sqlite3.connect(db, timeout=30) as connection:
        return connection.execute(sql, params).fetchone()


def _write(db: Path, sql: str, *params: str) -> None:
    with sqlite3.connect(db, timeout=30) as connection:
        connection.execute(sql, params)


def test_the_embedded_sweeper_redoes_what_a_dead_worker_left(tmp_path: Path, tiny_sources_file):
    t = Timeline("embedded mode: rows left running by a dead worker")
    sources_file, _ = tiny_sources_file
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env |= {
        "NLAWEB_DATA_DIR": str(tmp_path / "data"),
        "NLA_SOURCES_FILE": str(sources_file),
        "REPLY_MAX_NEW_TOKENS": "6",
        "SWEEP_INTERVAL_S": "1",
        "HEARTBEAT_INTERVAL_S": "1",
        "HEARTBEAT_TIMEOUT_S": "2",
        "DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True, timeout=120)
    db = tmp_path / "data" / "nlaweb.sqlite3"
    port, log = free_port(), tmp_path / "serve.log"
    server = subprocess.Popen(
        [*manage, "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: "Listening on TCP" in log.read_text() or server.poll() is not None,
            60,
            "manage.py serve",
        )
        http = requests.Session()
        http.get(base + "/", timeout=30)
        headers = {"X-CSRFToken": http.cookies["csrftoken"], "Origin": base}
        page = http.post(base + reverse("new_conversation"), headers=headers, timeout=30)
        conversation_id = re.search(r"/c/([0-9a-f-]{36})/", page.url).group(1)
        # That POST made the guest account, and logging it in rotated the CSRF token.
        headers["X-CSRFToken"] = http.cookies["csrftoken"]
        send = reverse("send", args=[conversation_id])
        http.post(base + send, data={"content": "My cat"}, headers=headers, timeout=30)
        reply_done = "SELECT status FROM chat_message WHERE role = 'assistant'"
        wait_until(lambda: _one(db, reply_done) == ("done",), 90, "the reply")
        (reply_id,) = _one(db, "SELECT id FROM chat_message WHERE role = 'assistant'")
        (snapshot_id,) = _one(db, "SELECT id FROM chat_snapshot WHERE leaf_id = ?", reply_id)
        explain = reverse("explain", args=[conversation_id, uuid.UUID(snapshot_id)])
        response = http.post(base + explain, data={"position": 2}, headers=headers, timeout=30)
        assert response.status_code == 200
        explained = "SELECT status FROM explanations_explanation"
        wait_until(lambda: _one(db, explained) == ("done",), 90, "the explanation")
        (explanation_id,) = _one(db, "SELECT id FROM explanations_explanation")

        status = "status = 'running', stage = 'verbalizing'"
        _write(
            db,
            LEFT_BY_A_DEAD_WORKER.format(table="explanations_explanation", status=status),
            explanation_id,
        )
        _write(
            db,
            LEFT_BY_A_DEAD_WORKER.format(table="chat_message", status="status = 'generating'"),
            reply_id,
        )
        t.mark("a row and a reply left running by a dead worker")
        wait_until(
            lambda: (
                _one(db, "SELECT status, attempts FROM explanations_explanation") == ("done", 2)
                and _one(db, "SELECT status, attempts FROM chat_message WHERE id = ?", reply_id)
                == ("done", 2)
            ),
            60,
            "the embedded sweeper to have them done again\n" + log.read_text()[-3000:],
        )
        t.mark("both done again, no click")
        print(t)
    finally:
        server.terminate()
        server.wait(timeout=15)
