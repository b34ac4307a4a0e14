"""The API's edges on PostgreSQL without a worker: authentication, limits, validation sentences,
sources read from files, the 16-new-positions rule, the keys page. Jobs are never sent: the test
transaction is rolled back, so its on-commit enqueues never run."""

from __future__ import annotations

import json
import logging
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from nlaweb.api.auth import BAD_KEY, NO_KEY
from nlaweb.api.catalog import public_checkpoint
from nlaweb.api.models import ApiKey, ApiLimits
from nlaweb.api.ratelimit import forget_windows
from nlaweb.chat.conversation import start_conversation
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import ExplainSettings
from tests.factories import snapshot_of
from tests.stack_fixtures import _use_tiny_source  # noqa: F401  (the tiny source's files)
from tests.tiny_models import D_MODEL, LAYER, VAR_BASELINE


@pytest.fixture(autouse=True)
def _fresh_windows() -> None:
    """Test databases reuse user ids from run to run; the Redis windows of an earlier run must not
    count against them."""
    forget_windows()


@pytest.fixture
def key(owner) -> str:
    return ApiKey.objects.issue(owner.user, "tests")[1]


def _post(path: str, body: object, key: str | None = None, **extra: str):
    headers = {"HTTP_X_API_KEY": key} if key else {}
    data = body if isinstance(body, str) else json.dumps(body)
    return Client().post(
        f"/api/v1{path}", data, content_type="application/json", **headers, **extra
    )


def _error(response, status: int) -> str:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error", "detail"}
    return str(body["detail"])


def test_anonymous_use_is_refused_with_a_sentence_saying_how_to_authenticate(db):
    assert _error(Client().get("/api/v1/sources"), 401) == NO_KEY
    assert _error(_post("/explain", {"text": "x", "positions": [0]}), 401) == NO_KEY


def test_a_wrong_or_revoked_key_is_refused(owner, key):
    assert _error(Client().get("/api/v1/sources", HTTP_X_API_KEY=key + "x"), 401) == BAD_KEY
    ApiKey.objects.get(user=owner.user).revoke()
    assert _error(Client().get("/api/v1/sources", HTTP_X_API_KEY=key), 401) == BAD_KEY


def test_sources_are_listed_from_the_checkpoint_files_with_either_header(key, tiny_sources_file):
    _, source_id = tiny_sources_file
    for headers in ({"HTTP_X_API_KEY": key}, {"HTTP_AUTHORIZATION": f"Bearer {key}"}):
        response = Client().get("/api/v1/sources", **headers)
        assert response.status_code == 200, response.content
        assert response["X-RateLimit-Limit"] == "120"
    (source,) = response.json()["sources"]
    assert (source["id"], source["layer"], source["d_model"]) == (source_id, LAYER, D_MODEL)
    assert source["var_baseline"] == VAR_BASELINE and source["default"] is True
    assert set(source["checkpoints"]) == {"target", "av", "ar"}
    root = str(tiny_sources_file[0].parent)
    assert root not in response.content.decode()  # no server path reaches an API user
    for role, checkpoint in source["checkpoints"].items():
        assert "/" not in checkpoint["ref"], role  # a local directory's name only
        assert re.fullmatch(r"sha256:[0-9a-f]{16}", checkpoint["revision"]), role


def test_a_hub_checkpoint_is_its_id_and_revision_and_a_local_one_its_name_and_fingerprint(tmp_path):
    (tmp_path / "my-av").mkdir()
    (tmp_path / "my-av" / "config.json").write_text("{}")
    local = public_checkpoint(str(tmp_path / "my-av"))
    assert local["ref"] == "my-av" and local["revision"].startswith("sha256:")
    assert public_checkpoint("org/model@abc123") == {"ref": "org/model", "revision": "abc123"}
    assert public_checkpoint("org/model") == {"ref": "org/model", "revision": "main"}
    gone = public_checkpoint(str(tmp_path / "gone"))
    assert gone == {"ref": "gone", "revision": "missing"}


def test_the_api_docs_page_loads_swagger_from_our_static_files(db):
    page = Client().get("/api/v1/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower() and "https://" not in page


def test_the_keyless_local_mode_serves_loopback_callers_only(db, settings):
    settings.API_LOCAL_NO_KEY, settings.EMBEDDED = True, True
    assert Client().get("/api/v1/sources").status_code == 200  # the test client is 127.0.0.1
    assert _error(Client(REMOTE_ADDR="10.1.2.3").get("/api/v1/sources"), 401) == NO_KEY
    settings.EMBEDDED = False  # production never serves keyless callers
    assert _error(Client().get("/api/v1/sources"), 401) == NO_KEY


@pytest.mark.parametrize(
    ("body", "sentence"),
    [
        (
            {"text": "hi", "messages": [{"role": "user", "content": "hi"}], "positions": [0]},
            "Give exactly one of text, messages or cacheId; this request gives text and messages.",
        ),
        ({"positions": [0]}, "Give exactly one of text, messages or cacheId."),
        ({"text": "hi"}, "positions is required."),
        (
            {"text": "hi", "positions": []},
            "positions: List should have at least 1 item after validation, not 0.",
        ),
        (
            {"text": "hi", "positions": [0], "temperature": 9},
            "temperature: Input should be less than or equal to 2.",
        ),
        (
            {"text": "hi", "positions": [0], "colour": "red"},
            "colour is not a field of this request.",
        ),
        ({"text": "hi", "positions": [0], "nlaSourceId": "nope"}, None),
    ],
)
def test_invalid_explain_requests_get_one_sentence(key, body, sentence, tiny_sources_file):
    detail = _error(_post("/explain", body, key), 400)
    if sentence is None:  # an unknown source names the known ones
        assert detail == f"There is no NLA source 'nope'; the sources are: {tiny_sources_file[1]}."
    else:
        assert detail == sentence


def test_invalid_json_and_nan_are_refused_with_a_sentence(key):
    assert _error(_post("/explain", "{not json", key), 400)
    vector = "[" + ", ".join(["0.5"] * (D_MODEL - 1) + ["NaN"]) + "]"
    detail = _error(_post("/explain-vector", '{"vectors": [' + vector + "]}", key), 400)
    assert (
        detail
        == f"vectors[0][{D_MODEL - 1}] is not a finite number (NaN and infinity are refused)."
    )
    detail = _error(_post("/score", '{"vector": [Infinity], "label": "cats"}', key), 400)
    assert detail == "vector[0] is not a finite number (NaN and infinity are refused)."


def test_a_vector_of_the_wrong_width_is_refused_naming_d_model(key, tiny_sources_file):
    detail = _error(_post("/explain-vector", {"vectors": [[0.1] * D_MODEL, [0.1] * 3]}, key), 400)
    assert detail == (
        f"Each vector needs d_model = {D_MODEL} numbers for the NLA source "
        f"'{tiny_sources_file[1]}'; vector 1 has 3."
    )
    detail = _error(_post("/explain-vector", {"vectors": [[0.1] * D_MODEL] * 17}, key), 400)
    assert detail == "vectors: List should have at most 16 items after validation, not 17."


def _stored_conversation(owner, tokens: int = 40):
    conversation = start_conversation(owner.user)
    return conversation, snapshot_of(conversation, [("user", "long", tokens)])


def test_at_most_16_new_positions_and_stored_ones_do_not_count(owner, key, settings):
    conversation, snapshot = _stored_conversation(owner)
    body = {"cacheId": str(conversation.id), "positions": list(range(17))}
    assert _error(_post("/explain", body, key), 400) == (
        "At most 16 new positions per request; 17 were asked."
    )
    assert not Explanation.objects.exists()
    Explanation.objects.create(
        snapshot=snapshot,
        position=0,
        source_id=snapshot.source_id,
        settings_key=ExplainSettings().key(),
        status="done",
        text="Cats.\n\nSleep.",
        mse=0.5,
        confidence="low",
        specificity=0.97,
        calibration="shuffled",
        confidence_note="More specific than 97% of the reference explanations, yet low: …",
    )
    settings.API_WAIT_SECONDS = 1  # no worker here: the answer shows the rows as they stand
    response = _post("/explain", body, key)
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["position"] for r in results] == list(range(17))
    assert results[0]["cached"] and results[0]["paragraphs"] == ["Cats.", "Sleep."]
    # The page's figures, in the API too (issue 14.4): specificity and the calibrated confidence.
    first = {k: results[0][k] for k in ("confidence", "specificity", "calibration")}
    assert first == {"confidence": "low", "specificity": 0.97, "calibration": "shuffled"}
    assert results[0]["confidence_note"].startswith("More specific than 97%")
    assert results[1]["specificity"] is None and results[1]["calibration"] is None
    assert {r["status"] for r in results[1:]} == {"queued"} and not results[1]["cached"]
    assert response.json()["cacheId"] == str(conversation.id)


def test_negative_positions_count_from_the_end_and_outside_ones_are_named(owner, key, settings):
    conversation, _ = _stored_conversation(owner, tokens=20)
    settings.API_WAIT_SECONDS = 1
    response = _post("/explain", {"cacheId": str(conversation.id), "positions": [-1, 2]}, key)
    assert [r["position"] for r in response.json()["results"]] == [19, 2]
    body = {"cacheId": str(conversation.id), "positions": [3, -21]}
    assert _error(_post("/explain", body, key), 400) == (
        "Position -21 is outside this input, which has 20 tokens "
        "(positions 0 to 19, or -20 to -1 from the end)."
    )
    body = {"cacheId": str(conversation.id), "positions": [5, -15]}
    assert _error(_post("/explain", body, key), 400) == (
        "Ask for each token once; position 5 is asked more than once."
    )


def test_someone_elses_conversation_is_not_found(owner, stranger, key):
    conversation, _ = _stored_conversation(stranger)
    body = {"cacheId": str(conversation.id), "positions": [0]}
    assert _error(_post("/explain", body, key), 404) == (
        f"You have no conversation {conversation.id} (cacheId)."
    )


def test_the_hourly_limit_answers_429_saying_when_to_retry(owner, key):
    ApiLimits.objects.create(user=owner.user, explain_per_hour=2, completion_per_hour=1)
    body = {"vectors": [[0.0]]}
    first = _post("/explain-vector", body, key)
    assert (first["X-RateLimit-Limit"], first["X-RateLimit-Remaining"]) == ("2", "1")
    _post("/score", {"vector": [0.0], "label": "x"}, key)  # the same bucket
    refused = _post("/explain", {"text": "x", "positions": [0]}, key)
    detail = _error(refused, 429)
    assert detail.startswith(
        "You have made 2 explain requests in the last hour, your limit; retry in"
    )
    assert (
        refused["Retry-After"] == refused["X-RateLimit-Reset"] and int(refused["Retry-After"]) > 0
    )
    assert refused["X-RateLimit-Remaining"] == "0"
    other = _post("/completion", {"messages": [{"role": "assistant", "content": "x"}]}, key)
    assert _error(other, 400).startswith("The last message must be the user's")
    assert other["X-RateLimit-Limit"] == "1"  # completions have their own bucket


def test_keys_never_reach_the_logs(key, caplog):
    caplog.set_level(logging.DEBUG)
    Client().get("/api/v1/sources", HTTP_AUTHORIZATION=f"Token {key}")
    Client().get("/api/v1/sources", HTTP_X_API_KEY=key + "x")
    Client().get("/api/v1/sources", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert key not in caplog.text


def test_the_keys_page_shows_a_new_key_once_and_revokes_it(owner, stranger):
    page = owner.client.post("/account/api-keys", {"name": "notebook"})
    assert page.status_code == 200
    raw = page.context["new_key"]
    assert raw.startswith("nla_") and raw in page.content.decode()
    again = owner.client.get("/account/api-keys").content.decode()
    assert "notebook" in again and raw not in again and raw[:12] in again
    stored = ApiKey.objects.get(user=owner.user)
    assert stranger.client.post(f"/account/api-keys/{stored.pk}/revoke").status_code == 404
    assert ApiKey.objects.for_raw_key(raw) is not None
    owner.client.post(f"/account/api-keys/{stored.pk}/revoke")
    assert ApiKey.objects.for_raw_key(raw) is None


def test_a_key_needs_a_name(owner):
    page = owner.client.post("/account/api-keys", {"name": "  "})
    assert page.status_code == 400
    assert "Name the key" in page.content.decode()


def test_a_guest_gets_the_keys_page_and_a_visitor_without_an_account_is_sent_to_log_in(db):
    visitor = Client()
    response = visitor.get("/account/api-keys")
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")
    assert not User.objects.exists()  # a GET makes no guest account (issue 11)
    visitor.post("/c/new")  # the first POST does
    assert visitor.get("/account/api-keys").status_code == 200


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"repeated keys: {sorted(keys)}"
    return dict(pairs)


def test_the_openapi_document_and_docs_are_public(db):
    body = Client().get("/api/v1/openapi.json").content
    schema = json.loads(body, object_pairs_hook=_no_repeated_keys)  # Swagger UI refuses repeats
    ok = schema["paths"]["/api/v1/explain"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/json", "text/event-stream"}
    assert {"/api/v1/explain", "/api/v1/sources", "/api/v1/score"} <= set(schema["paths"])
    assert Client().get("/api/v1/docs").status_code == 200


def test_the_api_modules_import_neither_torch_nor_the_sentence_embedder():
    import subprocess
    import sys

    code = (
        "import django, sys; django.setup();"
        "import nlaweb.api.api, nlaweb.api.urls, nlaweb.api.pages, nlaweb.api.admin;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'transformers', 'sentence_transformers'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_body_over_the_upload_limit_is_refused_with_413(key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    detail = _error(_post("/explain-vector", {"vectors": [[0.5] * 500]}, key), 413)
    assert detail == "The request body is too large; send fewer vectors."


def test_a_failed_job_answers_400_when_the_input_caused_it_and_503_otherwise():
    from nlaweb.api.http_errors import BadRequest, Unavailable
    from nlaweb.api.inputs import job_failure
    from nlaweb.api.models import ApiJob

    too_long = job_failure(ApiJob(status="failed", error="Too long.", error_code="InputTooLong"))
    assert isinstance(too_long, BadRequest) and too_long.detail == "Too long."
    gone = job_failure(ApiJob(status="failed", error="No worker.", error_code="SourceNotServed"))
    assert isinstance(gone, Unavailable) and gone.status == 503
