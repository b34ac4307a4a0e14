"""Outage edges. A websocket opened while PostgreSQL or Redis is down is closed with 4503 and a
sentence (no 500, no traceback) and opens once the service is back. A PostgreSQL outage longer than
HEARTBEAT_TIMEOUT_S does not make the sweeper take live jobs for
dead: with two workers each holding a job (a reply half-written, an explanation mid-verbalizing),
their heartbeats held back until after the sweeper passed with the database up again, nothing is
queued again, each job stores its own result once, and neither worker runs the other's.

Own PostgreSQL cluster and redis-server (so the test may stop them), a gated Celery worker pair
(tests/gates.py) and the sweeper (Celery beat). Every wait is on an event: the sweeper's own log
counts its failed and succeeded passes, the gates say where each worker stands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from nlaweb.middleware.socket_outage import CLOSE_UNAVAILABLE
from tests.integration.test_faults import VERBALIZING, Visitor, _last_reply, _replied, _rows
from tests.live import GatedStack, Timeline, gated_stack, wait_until

HEARTBEAT_TIMEOUT_S = 8
INTERVALS = {
    "HEARTBEAT_INTERVAL_S": "1",
    "HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
    "SWEEP_INTERVAL_S": "1",
    "SWEEP_RESEND_AFTER_S": "5",
    "STORE_RETRY_FOR_S": "300",
}
#: Failed sweeper passes, one a second, that make the outage outlast the heartbeat timeout.
FAILED_PASSES = HEARTBEAT_TIMEOUT_S + 2
PASS_FAILED = "Task nlaweb.sweep["  # with "raised unexpected" on the same line
PASS_OK = "succeeded in"


class Outage(GatedStack):
    @property
    def sweeper_log(self) -> Path:
        assert self.stack.sweeper_log is not None
        return self.stack.sweeper_log

    def sweeper_passes(self, start: int) -> tuple[int, int]:
        """(failed, succeeded) sweeper passes logged after byte `start` of its log."""
        lines = self.sweeper_log.read_bytes()[start:].decode(errors="replace").splitlines()
        passes = [line for line in lines if PASS_FAILED in line]
        failed = sum("raised unexpected" in line for line in passes)
        return failed, sum(PASS_OK in line for line in passes)


@pytest.fixture(scope="module")
def outage(tiny_sources_file, tmp_path_factory) -> Iterator[Outage]:
    root = tmp_path_factory.mktemp("outage")
    with gated_stack(tiny_sources_file, root, INTERVALS, workers=2) as services:
        yield Outage(**vars(services))


def _heartbeats(outage: Outage, reply_id: str, snapshot_id: str) -> list[object]:
    [(reply_beat,)] = outage.pg.query(
        "SELECT heartbeat_at FROM chat_message WHERE id = %s", reply_id
    )
    rows = outage.pg.query(
        "SELECT heartbeat_at FROM explanations_explanation WHERE snapshot_id = %s "
        "ORDER BY position",
        snapshot_id,
    )
    return [reply_beat, *(beat for (beat,) in rows)]


def test_a_database_outage_longer_than_the_heartbeat_timeout_takes_no_live_job_for_dead(outage):
    t = Timeline("PostgreSQL down longer than the heartbeat timeout, two workers mid-job")
    visitor = Visitor(outage.stack.base_url)
    conversation_id, snapshot_id, _ = _replied(outage, visitor)
    outage.gates.close("reply-text")
    outage.gates.close(VERBALIZING)
    assert visitor.send(conversation_id, "And then?").status_code == 200
    wait_until(lambda: outage.gates.reached("reply-text"), 60, "a worker to write the reply")
    assert visitor.explain(conversation_id, snapshot_id, [1, 2]).status_code == 200
    wait_until(lambda: outage.gates.reached(VERBALIZING), 60, "a worker to verbalize")
    [writer], [verbalizer] = outage.gates.reached("reply-text"), outage.gates.reached(VERBALIZING)
    assert writer != verbalizer
    t.mark("one worker holds a half-written reply, the other two rows mid-verbalizing")
    reply_id, _, _, _ = _last_reply(outage.pg, conversation_id)
    before = {r[0]: (r[1], r[3], r[6]) for r in _rows(outage.pg, snapshot_id, [1, 2])}
    [(reply_job,)] = outage.pg.query("SELECT job_id FROM chat_message WHERE id = %s", reply_id)
    assert {v[:2] for v in before.values()} == {("running", 1)}

    outage.gates.close("heartbeat")
    wait_until(lambda: len(set(outage.gates.reached("heartbeat"))) == 2, 30, "both beats held")
    start = outage.sweeper_log.stat().st_size
    outage.pg.stop()
    t.mark("PostgreSQL stopped; heartbeats held from here on")
    wait_until(
        lambda: outage.sweeper_passes(start)[0] >= FAILED_PASSES,
        120,
        f"{FAILED_PASSES} failed sweeper passes\n" + outage.stack.logs(),
    )
    t.mark(
        f"{FAILED_PASSES} sweeper passes failed (longer than the {HEARTBEAT_TIMEOUT_S} s timeout)"
    )
    back = outage.sweeper_log.stat().st_size
    outage.pg.start()
    wait_until(lambda: outage.sweeper_passes(back)[1] >= 2, 60, "two sweeper passes after it")
    t.mark("PostgreSQL back; the sweeper passed twice over heartbeats older than the timeout")
    after = {r[0]: (r[1], r[3], r[6]) for r in _rows(outage.pg, snapshot_id, [1, 2])}
    assert after == before
    assert _last_reply(outage.pg, conversation_id)[1:] == ("generating", "", 1)

    stale = _heartbeats(outage, reply_id, snapshot_id)
    outage.gates.open("heartbeat")
    wait_until(
        lambda: all(
            a != b for a, b in zip(_heartbeats(outage, reply_id, snapshot_id), stale, strict=True)
        ),
        60,
        "both workers to beat again",
    )
    t.mark("both workers beat again")
    outage.gates.open("reply-text")
    outage.gates.open(VERBALIZING)
    wait_until(
        lambda: (
            _last_reply(outage.pg, conversation_id)[1] == "done"
            and all(r[1] == "done" for r in _rows(outage.pg, snapshot_id, [1, 2]))
        ),
        120,
        "the reply and both rows to be done\n" + outage.stack.logs(),
    )
    t.mark("reply and rows done")
    print(t)
    # Each job ran once, on its own worker, and stored its result once.
    assert outage.gates.reached("reply-text") == [writer]
    assert outage.gates.reached(VERBALIZING) == [verbalizer]
    [(content, job_id, attempts)] = outage.pg.query(
        "SELECT content, job_id, attempts FROM chat_message WHERE id = %s", reply_id
    )
    assert content and (job_id, attempts) == (reply_job, 1)
    done = {r[0]: (r[3], r[6], r[4]) for r in _rows(outage.pg, snapshot_id, [1, 2])}
    assert done == {pk: (1, job, "") for pk, (_, _, job) in before.items()}
    assert "requeued" not in outage.sweeper_log.read_text(errors="replace")
    [(snapshots,)] = outage.pg.query(
        "SELECT count(*) FROM chat_snapshot WHERE leaf_id = %s", reply_id
    )
    assert snapshots == 1


def _socket(outage: Outage, visitor: Visitor, conversation_id: str) -> Any:
    cookie = f"sessionid={visitor.http.cookies['sessionid']}"
    return connect(
        f"{outage.stack.ws_url}/ws/conversations/{conversation_id}/",
        additional_headers={"Cookie": cookie, "Origin": outage.stack.base_url},
        open_timeout=30,
    )


@pytest.mark.parametrize("service", ["postgres", "redis"])
def test_a_socket_opened_during_an_outage_is_closed_with_4503_and_opens_once_it_is_over(
    outage, service
):
    """Channels reads the session from PostgreSQL and the consumer joins its group on Redis before
    the socket is accepted: either one down used to end the handshake in a 500 with a traceback."""
    visitor = Visitor(outage.stack.base_url)
    conversation_id = visitor.new_conversation()
    down = outage.pg if service == "postgres" else outage.redis
    logged = outage.stack.server_log.stat().st_size
    down.stop()
    try:
        with (
            _socket(outage, visitor, conversation_id) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=60)
    finally:
        down.start()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CLOSE_UNAVAILABLE  # daphne 4.2 drops the close reason
    server_log = outage.stack.server_log.read_bytes()[logged:].decode(errors="replace")
    assert "Traceback" not in server_log and "Exception inside application" not in server_log
    assert "websocket" in server_log and "refused: outage" in server_log

    def opens() -> bool:
        try:
            with _socket(outage, visitor, conversation_id) as ws:
                ws.recv(timeout=0.5)
        except TimeoutError:
            return True  # open and quiet: what a healthy socket of an idle conversation does
        except (ConnectionClosed, OSError):
            return False
        return True

    wait_until(opens, 60, f"a socket to open once {service} is back\n" + outage.stack.logs())
