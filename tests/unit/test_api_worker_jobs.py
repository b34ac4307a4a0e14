"""The worker side of the API on a tiny engine and PostgreSQL: raw text tokenized as it is, the
tokenize job storing a snapshot, raw vectors and label scores through ApiJob rows, and the three
autointerp scores against values computed here from the engine's own parts."""

from __future__ import annotations

import pytest
import torch

from nlaweb.api.models import ApiJob
from nlaweb.chat.conversation import start_conversation
from nlaweb.chat.models import Message, Snapshot
from nlaweb.jobs.api_store import ApiStore
from tests.personas import make_persona
from tests.tiny_models import D_MODEL, build_tiny_source
from workers.nla.autointerp import cosine, last_paragraph
from workers.nla.embedder import embed
from workers.nla.engine import NlaEngine
from workers.raw_vectors import KIND_SCORE, run_vectors, score_label
from workers.tokenize import run_tokenize

pytestmark = pytest.mark.django_db(transaction=True)  # the store runs outside any test transaction


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> NlaEngine:
    return NlaEngine.load(build_tiny_source(tmp_path_factory.mktemp("api-jobs")), device="cpu")


def test_raw_text_is_tokenized_without_the_template_with_bos_in_a_span_of_its_own(engine):
    tokenized = engine.tokenize_text("My cat loves to sleep")
    tokenizer = engine.target.tokenizer
    assert tokenized.token_ids == tokenizer("My cat loves to sleep")["input_ids"]
    assert tokenized.token_texts[0] == "<bos>"
    assert "".join(tokenized.token_texts[1:]) == "My cat loves to sleep"
    (lead, body) = tokenized.spans
    assert (lead.role, lead.start, lead.end) == ("template", 0, 1)
    assert (body.message_index, body.start, body.end) == (0, 1, len(tokenized.token_ids))


def _job(kind: str, source_id: str, payload: dict) -> ApiJob:
    owner = make_persona(f"u-{ApiJob.objects.count()}").user
    return ApiJob.objects.create(owner=owner, kind=kind, source_id=source_id, payload=payload)


def test_the_tokenize_job_stores_a_raw_text_snapshot_and_finishes_its_row(engine):
    conversation = start_conversation(make_persona("tok").user)
    leaf = Message.objects.create(conversation=conversation, role="user", content="My cat")
    job = _job("tokenize", engine.source.id, {"leaf_id": str(leaf.pk), "raw_text": True})

    run_tokenize(ApiStore(), str(job.pk), engine_for=lambda _: engine)

    job.refresh_from_db()
    assert (job.status, job.result) == ("done", {"leaf_id": str(leaf.pk)})
    snapshot = Snapshot.objects.get(leaf=leaf)
    assert snapshot.token_ids == engine.tokenize_text("My cat").token_ids
    assert snapshot.spans[-1]["message_id"] == str(leaf.pk)
    run_tokenize(ApiStore(), str(job.pk), engine_for=lambda _: engine)  # a redelivery: no-op
    assert Snapshot.objects.count() == 1


def test_a_job_for_a_source_no_worker_serves_fails_with_its_sentence(engine):
    job = _job("explain_vectors", "gone", {"vectors": [[0.0] * D_MODEL]})

    def refuse(source_id: str) -> NlaEngine:
        from workers.nla.errors import SourceNotServed

        raise SourceNotServed(f"No worker serves the NLA source '{source_id}'.")

    run_vectors(ApiStore(), str(job.pk), engine_for=refuse)
    job.refresh_from_db()
    assert (job.status, job.error_code) == ("failed", "SourceNotServed")
    assert job.error == "No worker serves the NLA source 'gone'."


def test_explain_vectors_returns_the_av_text_and_ar_score_of_each_vector(engine):
    vectors = [[float(i % 5) for i in range(D_MODEL)], [1.0] * D_MODEL]
    job = _job("explain_vectors", engine.source.id, {"vectors": vectors, "settings": {}})
    run_vectors(ApiStore(), str(job.pk), engine_for=lambda _: engine)
    job.refresh_from_db()
    assert job.status == "done", job.error
    results = job.result["results"]
    assert len(results) == 2
    expected = engine.score([r["description"] for r in results], torch.tensor(vectors))
    assert [r["cosine_similarity"] for r in results] == pytest.approx([f.cosine for f in expected])
    assert results[1]["l2_norm"] == pytest.approx(D_MODEL**0.5)
    assert [r["confidence"] for r in results] == [f.confidence for f in expected]
    assert [r["specificity"] for r in results] == [f.specificity for f in expected]
    assert {r["calibration"] for r in results} == {None}  # the tiny source carries no calibration


def test_the_three_scores_equal_cosines_computed_from_the_engines_parts(engine):
    vector = [(-1.0) ** i * (1 + i % 3) for i in range(D_MODEL)]
    payload = {"vector": vector, "label": "a cat sleeping", "settings": {}}
    scores = score_label(engine, embed, payload)

    predicted = engine.reconstructor.predict(["a cat sleeping"])[0]
    assert scores["nla_reconstructor"] == pytest.approx(
        torch.nn.functional.cosine_similarity(predicted, torch.tensor(vector), dim=0).item(),
        abs=1e-5,
    )
    text = scores["explanation"]
    label_e, text_e, last_e = embed(["a cat sleeping", text, last_paragraph(text)])
    assert scores["nla_verbalizer"] == pytest.approx(cosine(text_e, label_e), abs=1e-5)
    assert scores["nla_verbalizer_last"] == pytest.approx(cosine(last_e, label_e), abs=1e-5)
    assert scores["last_paragraph"] == last_paragraph(text)

    job = _job(KIND_SCORE, engine.source.id, payload)
    run_vectors(ApiStore(), str(job.pk), engine_for=lambda _: engine)
    job.refresh_from_db()
    assert job.result["nla_reconstructor"] == pytest.approx(scores["nla_reconstructor"], abs=1e-5)


def _tokenize_job(engine, content: str, raw: bool, role: str = "user") -> ApiJob:
    conversation = start_conversation(make_persona(f"t-{ApiJob.objects.count()}").user)
    leaf = Message.objects.create(conversation=conversation, role=role, content=content)
    job = _job("tokenize", engine.source.id, {"leaf_id": str(leaf.pk), "raw_text": raw})
    run_tokenize(ApiStore(), str(job.pk), engine_for=lambda _: engine)
    job.refresh_from_db()
    return job


def test_an_input_longer_than_the_source_accepts_is_refused_before_a_snapshot_is_stored(engine):
    engine.max_sequence_tokens = 8
    try:
        job = _tokenize_job(engine, "My cat loves to sleep on the warm windowsill", raw=True)
    finally:
        engine.max_sequence_tokens = 2048
    assert (job.status, job.error_code) == ("failed", "InputTooLong")
    assert job.error.endswith("the source accepts at most 8. Send a shorter one.")
    assert not Snapshot.objects.exists()


def test_messages_the_chat_template_refuses_fail_with_the_templates_sentence(engine):
    template = engine.target.tokenizer.chat_template
    engine.target.tokenizer.chat_template = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Start with a user message.') }}"
        "{% endif %}" + template
    )
    try:
        job = _tokenize_job(engine, "Hi", raw=False, role="assistant")
    finally:
        engine.target.tokenizer.chat_template = template
    assert (job.status, job.error_code) == ("failed", "TemplateRefused")
    assert (
        job.error == "The target's chat template refuses these messages: Start with a user message."
    )
