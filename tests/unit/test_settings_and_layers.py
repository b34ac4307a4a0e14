"""Environment parsing and the embedded channel layer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured

from nlaweb.env import env_bool, env_int, env_list
from nlaweb.layers import ThreadSafeInMemoryChannelLayer


def test_a_bad_boolean_names_the_variable_and_the_value(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG must be one of .* found 'maybe'"):
        env_bool("DEBUG", default=False)


def test_integers_are_checked_against_their_minimum(monkeypatch):
    monkeypatch.setenv("MAX_MESSAGE_CHARS", "0")
    with pytest.raises(ImproperlyConfigured, match="MAX_MESSAGE_CHARS must be at least 1, found 0"):
        env_int("MAX_MESSAGE_CHARS", 4000, minimum=1)
    monkeypatch.setenv("MAX_MESSAGE_CHARS", "ten")
    with pytest.raises(ImproperlyConfigured, match="must be an integer, found 'ten'"):
        env_int("MAX_MESSAGE_CHARS", 4000, minimum=1)


def test_lists_split_on_commas_and_drop_blanks(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", " a.org, ,b.org ")
    assert env_list("ALLOWED_HOSTS", []) == ["a.org", "b.org"]


def _settings_in_subprocess(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    env = {"DJANGO_SETTINGS_MODULE": "nlaweb.settings", "PATH": "/usr/bin:/bin", **env}
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_a_secret_key_when_debug_is_off(tmp_path):
    env = {"REDIS_URL": "redis://127.0.0.1:6379/15", "NLAWEB_DATA_DIR": str(tmp_path)}
    result = _settings_in_subprocess(env, "")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off." in result.stderr


def test_debug_is_off_unless_asked_for_and_the_embedded_mode_keeps_its_own_secret_key(tmp_path):
    code = "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY)"
    first = _settings_in_subprocess({"NLAWEB_DATA_DIR": str(tmp_path)}, code)
    assert first.returncode == 0, first.stderr
    debug, key = first.stdout.split()
    assert debug == "False"
    assert len(key) >= 50 and (tmp_path / "secret_key").read_text().strip() == key
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"
    again = _settings_in_subprocess({"NLAWEB_DATA_DIR": str(tmp_path)}, code)
    assert again.stdout.split()[1] == key  # sessions survive a restart
    on = _settings_in_subprocess({"NLAWEB_DATA_DIR": str(tmp_path), "DEBUG": "1"}, code)
    assert on.stdout.split()[0] == "True"


#: The only other wake-up of the loop in the next test: a layer that does not wake the loop is never
#: woken before this timer fires, so the timer is a gate (fires: the layer failed), not a speed bound.
WAKE_TIMER_S = 60


def test_a_frame_sent_from_the_worker_thread_reaches_a_consumer_waiting_on_the_server_loop():
    layer = ThreadSafeInMemoryChannelLayer()

    async def server_side() -> dict:
        channel = await layer.new_channel()
        await layer.group_add("conversation.x", channel)
        worker = threading.Thread(
            target=lambda: async_to_sync(layer.group_send)(
                "conversation.x", {"type": "chat.done", "message_id": "m"}
            )
        )
        receive = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0)  # let receive() register its waiter before the worker sends
        loop = asyncio.get_running_loop()
        fired: list[bool] = []
        timer = loop.call_later(WAKE_TIMER_S, fired.append, True)
        woken_first: list[bool] = []  # whether the receive ended before the timer fired
        receive.add_done_callback(lambda _: woken_first.append(not fired))
        worker.start()
        # With Channels' plain in-memory layer the waiter is not woken from the other thread and
        # only notices the message when the loop next wakes: here only the timer would wake it, so
        # such a layer's receive ends after the timer fired, however fast or slow the machine is.
        message = await receive
        timer.cancel()
        await loop.run_in_executor(None, worker.join)
        return message, woken_first == [True]

    message, before_timer = asyncio.run(server_side())
    assert message == {"type": "chat.done", "message_id": "m"}
    assert before_timer, "the consumer was woken only by the loop's next timer"


def test_the_documented_sources_example_parses():
    from pathlib import Path

    from workers.source_config import parse_sources

    example = Path(__file__).resolve().parents[2] / "docker" / "sources.example.toml"
    sources = parse_sources(example.read_text(encoding="utf-8"), origin=str(example))
    assert [s.id for s in sources] == ["qwen2.5-7b-l20", "kitft-l41"]
    assert sources[1].av == "kitft/nla-gemma3-27b-L41-av" and sources[1].var_baseline == 0.0579


def test_the_redis_layer_waits_for_replies_longer_than_its_blocking_receive_lasts():
    # Else an idle websocket's receive times out in redis-py and the consumer closes with 1011.
    from channels_redis.core import RedisChannelLayer

    from nlaweb.layers import redis_channel_layer

    entry = redis_channel_layer("redis://127.0.0.1:6379/15")
    layer = RedisChannelLayer(**entry["CONFIG"])
    connection = layer.create_pool(0).make_connection()  # not connected: no Redis needed
    assert connection.socket_timeout > layer.brpop_timeout


def test_a_worker_serves_only_the_sources_named_for_it():
    from workers.source_config import SourceConfig, served_sources

    a, b = (SourceConfig(id=i, label=i, target="t", av="av", ar="ar") for i in ("a", "b"))
    assert served_sources([a, b], []) == [a, b]
    assert served_sources([a, b], ["b"]) == [b]


def test_a_worker_asked_for_an_unknown_source_says_which_exist():
    from workers.nla.errors import CheckpointIncompatible
    from workers.source_config import SourceConfig, served_sources

    a = SourceConfig(id="a", label="a", target="t", av="av", ar="ar")
    with pytest.raises(CheckpointIncompatible, match="names kitft-l41, which no configured source"):
        served_sources([a], ["kitft-l41"])
