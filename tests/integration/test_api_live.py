"""The researcher API on the live stack (daphne, a Celery worker process, PostgreSQL, Redis, the tiny
source): an API explain and a click on the same token share one row, the SSE stream, completions,
raw vectors, scores, refusals, the example script, and schemathesis against the OpenAPI document."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from nlaweb.api.models import ApiKey, ApiLimits
from nlaweb.api.ratelimit import forget_windows
from nlaweb.chat.models import Snapshot
from nlaweb.explanations.models import Explanation
from tests.live import FIRST_JOB_S, REPO
from tests.personas import make_persona
from tests.tiny_models import D_MODEL

pytestmark = pytest.mark.django_db(transaction=True)
CHAT = [{"role": "user", "content": "My cat loves to sleep"}]


@pytest.fixture(autouse=True)
def _fresh_windows() -> None:
    forget_windows()


def _user_with_key(name: str, **limits: int) -> tuple[Any, str]:
    persona = make_persona(name)
    if limits:
        ApiLimits.objects.create(user=persona.user, **limits)
    return persona, ApiKey.objects.issue(persona.user, "tests")[1]


def _post(stack, path: str, body: dict[str, Any], key: str, **kwargs: Any) -> requests.Response:
    return requests.post(
        f"{stack.base_url}/api/v1{path}",
        json=body,
        headers={"X-API-Key": key},
        timeout=120,
        **kwargs,
    )


def test_an_api_explain_and_a_click_on_the_same_token_share_one_stored_row(stack):
    persona, key = _user_with_key("ada")
    response = _post(stack, "/explain", {"messages": CHAT, "positions": [-1, 3]}, key)
    assert response.status_code == 200, response.text + stack.logs()
    answer = response.json()
    assert [r["status"] for r in answer["results"]] == ["done", "done"], stack.logs()
    assert not any(r["cached"] for r in answer["results"])
    last = answer["results"][0]
    assert last["position"] == answer["prompt_length"] - 1 and last["description"] is not None
    assert answer["layer_index"] == 2 and response.headers["X-RateLimit-Remaining"] == "119"

    snapshot = Snapshot.objects.get(conversation_id=answer["cacheId"])
    assert snapshot.conversation.owner_id == persona.user.pk  # cacheId opens it on the page
    page = persona.client.get(f"/c/{answer['cacheId']}/")
    assert page.status_code == 200
    clicked = persona.client.post(
        f"/c/{answer['cacheId']}/s/{snapshot.id}/explain",
        {"position": last["position"]},
        HTTP_HX_REQUEST="true",
    )
    assert clicked.status_code == 200
    assert (
        clicked.context["sections"][0].e.pk
        == Explanation.objects.get(snapshot=snapshot, position=last["position"]).pk
    )
    assert str(clicked.context["sections"][0].e.pk) == last["explanationId"]
    assert Explanation.objects.filter(snapshot=snapshot).count() == 2

    again = _post(stack, "/explain", {"messages": CHAT, "positions": [3, -1]}, key).json()
    assert again["cacheId"] == answer["cacheId"]  # the same input reuses its conversation
    assert [r["cached"] for r in again["results"]] == [True, True]
    assert again["results"][1]["description"] == last["description"]


def test_raw_text_is_tokenized_as_it_is_without_the_chat_template(stack):
    _, key = _user_with_key("bea")
    text = _post(stack, "/explain", {"text": "My cat", "positions": [-1]}, key).json()
    chat = _post(stack, "/explain", {"messages": CHAT[:1], "positions": [-1]}, key).json()
    raw = Snapshot.objects.get(conversation_id=text["cacheId"])
    assert "<|im_start|>" not in "".join(raw.token_texts)
    assert raw.token_texts[0] == "<bos>" and "".join(raw.token_texts[1:]) == "My cat"
    assert chat["prompt_length"] > text["prompt_length"]
    assert text["results"][0]["status"] == "done", stack.logs()


def _events(response: requests.Response) -> list[Any]:
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_a_streamed_explain_sends_metadata_partials_one_result_per_position_then_done(stack):
    _, key = _user_with_key("cyd")
    body = {"messages": CHAT, "positions": [2, 4, -1], "stream": True}
    with _post(stack, "/explain", body, key, stream=True) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-RateLimit-Limit"] == "120"
        events = _events(response)
    metadata, *middle, cache, done = events
    assert metadata["type"] == "metadata" and metadata["layer_index"] == 2
    length = metadata["prompt_length"]
    assert metadata["positions"] == [2, 4, length - 1]
    results = [e for e in middle if e["type"] == "result"]
    assert sorted(r["position"] for r in results) == [2, 4, length - 1], stack.logs()
    assert all(r["status"] == "done" and r["description"] is not None for r in results)
    partials = [e for e in middle if e["type"] == "partial"]
    assert partials, "the AV's text arrives in pieces before the results"
    for result in results:  # a position's partial text comes before its result, never after
        index = middle.index(result)
        assert all(
            p["position"] != result["position"] for p in middle[index:] if p["type"] == "partial"
        )
    assert cache == {"cacheId": metadata["cacheId"]} and done == "[DONE]"


def test_a_completion_returns_the_templated_tokens_ready_for_explain(stack):
    _, key = _user_with_key("dot")
    response = _post(stack, "/completion", {"messages": CHAT}, key)
    assert response.status_code == 200, response.text + stack.logs()
    answer = response.json()
    assert response.headers["X-RateLimit-Limit"] == "240"
    tokens = answer["tokens"]
    assert [t["position"] for t in tokens] == list(range(answer["prompt_length"]))
    assert answer["text"] == "".join(t["token"] for t in tokens)
    assert {"user", "assistant"} <= {t["role"] for t in tokens}
    # Tokens are decoded one by one (a random tiny model's reply splits characters into bytes).
    assert answer["text"].startswith("<bos><|im_start|>user\nMy cat loves to sleep<|im_end|>")
    assert isinstance(answer["completion"], str)
    reply = [t["position"] for t in tokens if t["role"] == "assistant"]
    explained = _post(
        stack, "/explain", {"cacheId": answer["cacheId"], "positions": reply[:2]}, key
    )
    assert [r["status"] for r in explained.json()["results"]] == ["done", "done"]


def test_raw_vectors_are_explained_and_scored_by_the_ar(stack):
    _, key = _user_with_key("eve")
    vectors = [[0.1 * (i % 7) for i in range(D_MODEL)], [(-1.0) ** i for i in range(D_MODEL)]]
    response = _post(stack, "/explain-vector", {"vectors": vectors}, key)
    assert response.status_code == 200, response.text + stack.logs()
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1]
    assert all(
        isinstance(r["description"], str) and -1 <= r["cosine_similarity"] <= 1 for r in results
    )
    assert results[1]["l2_norm"] == pytest.approx(D_MODEL**0.5, rel=1e-5)


def test_a_label_is_scored_three_ways_against_a_vector(stack):
    _, key = _user_with_key("fay")
    vector = [(-1.0) ** i for i in range(D_MODEL)]
    response = _post(stack, "/score", {"vector": vector, "label": "cats sleeping"}, key)
    assert response.status_code == 200, response.text + stack.logs()
    answer = response.json()
    assert set(answer["scores"]) == {"nla_reconstructor", "nla_verbalizer", "nla_verbalizer_last"}
    assert all(-1.0 <= v <= 1.0 for v in answer["scores"].values())
    assert answer["last_paragraph"] in answer["explanation"]


def test_the_live_api_refuses_strangers_and_callers_past_their_limit(stack):
    refused = requests.get(f"{stack.base_url}/api/v1/sources", timeout=10)
    assert refused.status_code == 401 and set(refused.json()) == {"error", "detail"}
    _, key = _user_with_key("gus", explain_per_hour=1)
    vector = {"vectors": [[0.0] * 3]}
    assert _post(stack, "/explain-vector", vector, key).status_code == 400
    limited = _post(stack, "/explain-vector", vector, key)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert key not in stack.logs()


def test_the_example_script_runs_against_the_live_server(stack):
    _, key = _user_with_key("hal")
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "explain_and_score.py")],
        env={"NLAWEB_URL": stack.base_url, "NLAWEB_API_KEY": key, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr + stack.logs()
    assert "layer 2, d_model 32" in result.stdout
    assert "label 'cats and sleep':" in result.stdout and "nla_verbalizer_last" in result.stdout


#: Generated cases per operation: bounded, and derandomized so every run sends the same ones.
FUZZ_EXAMPLES = 15
FUZZ_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_no_input_makes_the_api_fail_with_a_server_error(stack):
    """schemathesis against the generated OpenAPI document (its pytest plugin does not run on pytest
    9, so each operation's strategy is driven by hypothesis here)."""
    _, key = _user_with_key("fuzz", explain_per_hour=100_000, completion_per_hour=100_000)
    api = schemathesis.openapi.from_url(f"{stack.base_url}/api/v1/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert (
        len(operations) == 6
    )  # + GET /sources/{id}/latents/{index} (nlaweb/latents/latent_api.py)

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            # The generated credentials would stop most cases at the door (401 is tested above).
            headers = {
                k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
            }
            case.headers = {**headers, "X-API-Key": key}
            case.call_and_validate(base_url=stack.base_url, checks=FUZZ_CHECKS, timeout=FIRST_JOB_S)

        fuzz()
