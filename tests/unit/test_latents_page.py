"""The latents page's domain and views on a tiny source with a hand-made SAE: which vectors the jobs
carry (the unit decoder row at the source's norm), how a finished job settles its latents, cancel,
search, sort and the exports. No worker here: a job's end is written the way the worker's ApiStore
writes it (the browser tests run the real worker)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from nlaweb.api.models import ApiJob
from nlaweb.latents import attached as catalog
from nlaweb.latents import batches as explain
from nlaweb.latents import labels
from nlaweb.latents.models import LatentExplanation, LatentLabel, LatentRun
from nlaweb.sources import configured as web_sources
from tests.live import write_sources_file
from tests.tiny_models import D_MODEL, INJECTION_SCALE, LAYER, build_tiny_source
from tests.unit.test_sae_loader import write_sae

D_SAE = 20


@pytest.fixture(scope="module")
def tiny_with_sae(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, np.ndarray]:
    root = tmp_path_factory.mktemp("latents")
    source = build_tiny_source(root / "tiny")
    rng = np.random.default_rng(0)
    decoder = rng.normal(size=(D_SAE, D_MODEL)).astype(np.float32)
    cfg = {
        "d_in": D_MODEL,
        "d_sae": D_SAE,
        "metadata": {"hook_name": f"blocks.{LAYER}.hook_resid_post"},
    }
    sae_dir = write_sae(root / "sae", cfg, w_dec=decoder)
    (sae_dir / "top_contexts.json").write_text(
        json.dumps(
            {
                "latents": {
                    "3": {
                        "density": 0.25,
                        "contexts": [
                            {
                                "before": "My cat loves",
                                "token": " <sleep>",
                                "after": " on",
                                "activation": 2.5,
                            }
                        ],
                    }
                }
            }
        ),
        "utf-8",
    )
    path = write_sources_file(root / "sources.toml", [source])
    path.write_text(path.read_text() + f'sae = "{sae_dir}"\n', "utf-8")
    return path, source.id, decoder


@pytest.fixture(autouse=True)
def _source(settings, tiny_with_sae):
    settings.NLA_SOURCES_FILE, settings.NLA_DEFAULT_SOURCE = tiny_with_sae[0], tiny_with_sae[1]
    web_sources.configured_sources.cache_clear()
    catalog.forget()
    yield
    web_sources.configured_sources.cache_clear()
    catalog.forget()


@pytest.fixture
def source(tiny_with_sae) -> catalog.SourceSae:
    found = catalog.source_sae(tiny_with_sae[1])
    assert found is not None and found.sae is not None, found
    return found


def finish(job: ApiJob, texts: list[str]) -> None:
    """What the worker's ApiStore writes when an explain-vectors job ends."""
    results = [
        {
            "description": t,
            "truncated": False,
            "relative_mse": 0.1 * i,
            "fve": 1 - 0.1 * i,
            "cosine_similarity": 0.9,
            "confidence": "high",
            "mse": 0.2,
            "l2_norm": 6.0,
            "raw_text": t,
        }
        for i, t in enumerate(texts)
    ]
    ApiJob.objects.filter(pk=job.pk).update(
        status=ApiJob.Status.DONE, result={"results": results}, finished_at=timezone.now()
    )


def test_the_decoder_row_goes_at_the_avs_injection_scale(source, tiny_with_sae):
    decoder = tiny_with_sae[2]
    assert source.scale == INJECTION_SCALE
    assert "injection scale 6" in source.scale_reason
    sent = np.array(explain.vector(source, 4))
    assert np.linalg.norm(sent) == pytest.approx(INJECTION_SCALE, rel=1e-5)
    assert np.allclose(sent / INJECTION_SCALE, decoder[4] / np.linalg.norm(decoder[4]), atol=1e-6)


def test_a_raw_injection_source_sends_the_row_at_the_median_activation_norm(source):
    scale, reason = catalog.direction_scale(
        "/nowhere", None, source.source, {"activation_norm_median": 87.5}
    )
    assert scale == 87.5 and "median norm of block-2 activations" in reason
    scale, _ = catalog.direction_scale("/nowhere", None, source.source, {})
    assert scale == pytest.approx(math.sqrt(D_MODEL))


def test_indices_parse_from_ranges_and_words():
    assert explain.parse_indices("3, 7, 10-12, 7", 20) == [3, 7, 10, 11, 12]
    assert explain.parse_indices("first 4", 20) == [0, 1, 2, 3]
    assert len(explain.parse_indices("random 5", 20)) == 5
    with pytest.raises(explain.LatentsRejected, match="latents 0 to 19; '18-25' is outside"):
        explain.parse_indices("18-25", 20)
    with pytest.raises(explain.LatentsRejected, match="'cat' is not a latent index or range"):
        explain.parse_indices("cat", 20)
    with pytest.raises(explain.LatentsRejected, match="1 to 64 latents; 65 were asked for"):
        explain.parse_indices("random 65", 2000)


@pytest.mark.django_db
def test_a_run_queues_jobs_of_eight_latents_and_settles_from_their_rows(
    owner, source, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as sent:
        run = explain.start_run(owner.user, source, list(range(10)))
    jobs = list(ApiJob.objects.order_by("created_at"))
    assert [j.payload["latents"] for j in jobs] == [list(range(8)), [8, 9]]
    assert len(sent) == 2 and all(j.payload["run"] == str(run.pk) for j in jobs)
    assert jobs[1].payload["vectors"][1] == pytest.approx(explain.vector(source, 9))
    finish(jobs[1], ["about cats", "about dogs"])
    rows = explain.rows_of(source.source.id, run.indices)
    progress = explain.progress(run, rows)
    assert (progress.done, progress.total, progress.finished) == (2, 10, False)
    nine = LatentExplanation.objects.get(index=9)
    assert (nine.status, nine.description, nine.relative_mse) == ("done", "about dogs", 0.1)


@pytest.mark.django_db
def test_an_explained_latent_is_not_queued_again(owner, source, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        explain.explain_latents(owner.user, source, [1])
    finish(ApiJob.objects.get(), ["one"])
    explain.rows_of(source.source.id, [1])
    with django_capture_on_commit_callbacks(execute=True) as sent:
        rows = explain.explain_latents(owner.user, source, [1, 2])
    assert [r.status for r in rows] == ["done", "queued"] and len(sent) == 1


@pytest.mark.django_db
def test_cancel_fails_the_queued_jobs_and_keeps_what_finished(
    owner, source, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run = explain.start_run(owner.user, source, list(range(12)))
    first, second = ApiJob.objects.order_by("created_at")
    finish(first, [f"text {i}" for i in range(8)])
    explain.cancel_run(run)
    second.refresh_from_db()
    assert (second.status, second.error) == ("failed", explain.CANCELLED_JOB)
    rows = explain.rows_of(source.source.id, run.indices)
    assert [r.status for r in rows] == ["done"] * 8 + ["cancelled"] * 4
    run.refresh_from_db()
    assert explain.progress(run, rows).finished


@pytest.mark.django_db
def test_rows_sort_by_score_with_unscored_ones_last(
    owner, source, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        explain.start_run(owner.user, source, [0, 1, 2])
    finish(ApiJob.objects.get(), ["b", "a", "c"])
    LatentExplanation.objects.filter(index=2).update(relative_mse=None, status="failed")
    rows = explain.rows_of(source.source.id, [0, 1, 2])
    assert [r.index for r in explain.sorted_rows(rows, "relative_mse", False)] == [0, 1, 2]
    assert [r.index for r in explain.sorted_rows(rows, "relative_mse", True)] == [2, 1, 0]
    assert [r.index for r in explain.sorted_rows(rows, "explanation", False)] == [1, 0, 2]


@pytest.mark.django_db
def test_a_label_goes_to_the_apis_score_job_with_the_scaled_row(
    owner, source, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as sent:
        row = labels.score_label(owner.user, source, 5, "  pets   and cats ")
    job = row.job
    assert row.label == "pets and cats" and len(sent) == 1
    assert (job.kind, job.payload["label"]) == ("score", "pets and cats")
    assert job.payload["vector"] == pytest.approx(explain.vector(source, 5))
    with pytest.raises(explain.LatentsRejected, match="Write a label to score"):
        labels.score_label(owner.user, source, 5, "   ")
    with pytest.raises(explain.LatentsRejected, match="at most 500 characters; this one has 501"):
        labels.score_label(owner.user, source, 5, "x" * 501)


@pytest.mark.django_db
def test_search_finds_explanations_and_only_the_persons_own_labels(
    owner, stranger, source, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        explain.explain_latents(owner.user, source, [2])
        LatentLabel.objects.create(
            owner=stranger.user, source_id=source.source.id, index=9, label="Cats"
        )
        labels.score_label(owner.user, source, 4, "kittens and cats")
    finish(ApiJob.objects.get(kind="explain_vectors"), ["A cat on a mat"])
    explain.rows_of(source.source.id, [2])
    assert labels.search(owner.user, source.source.id, "CAT") == [
        (2, "A cat on a mat"),
        (4, "kittens and cats"),
    ]


@pytest.mark.django_db
def test_the_exports_carry_explanations_and_the_three_scores(
    owner, source, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        explain.explain_latents(owner.user, source, [2])
        scored = labels.score_label(owner.user, source, 2, "cats")
    finish(ApiJob.objects.get(kind="explain_vectors"), ["A cat"])
    result = {
        "nla_reconstructor": 0.1,
        "nla_verbalizer": 0.5,
        "nla_verbalizer_last": 0.4,
        "explanation": "A cat",
        "last_paragraph": "A cat",
    }
    ApiJob.objects.filter(pk=scored.job_id).update(status="done", result=result)
    response = owner.client.get(f"/sources/{source.source.id}/latents/export.json")
    body = json.loads(response.content)
    assert body["sae"]["d_sae"] == D_SAE and body["sae"]["direction_norm"] == INJECTION_SCALE
    assert body["rows"] == [
        {
            "latent": 2,
            "kind": "explanation",
            "text": "A cat",
            "status": "done",
            "relative_mse": 0.0,
            "fve": 1.0,
            "nla_reconstructor": None,
            "nla_verbalizer": None,
            "nla_verbalizer_last": None,
        },
        {
            "latent": 2,
            "kind": "label",
            "text": "cats",
            "status": "done",
            "relative_mse": None,
            "fve": None,
            "nla_reconstructor": 0.1,
            "nla_verbalizer": 0.5,
            "nla_verbalizer_last": 0.4,
        },
    ]
    text = owner.client.get(f"/sources/{source.source.id}/latents/export.csv").content.decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[1]["text"] == "cats" and rows[1]["nla_verbalizer_last"] == "0.4"
    assert rows[0]["nla_reconstructor"] == ""


@pytest.mark.django_db
def test_the_latent_page_shows_contexts_scorers_and_caveats(owner, source):
    response = owner.client.get(f"/sources/{source.source.id}/latents/3")
    page = response.content.decode()
    assert response.status_code == 200
    assert "<mark> &lt;sleep&gt;</mark>" in page  # model text is escaped
    assert "works poorly" in page and "three-paragraph AV" in page
    assert "Fires on 25.0% of the SAE" in page


@pytest.mark.django_db
def test_the_index_page_redirects_to_an_index_and_refuses_one_out_of_range(owner, source):
    base = f"/sources/{source.source.id}/latents/"
    assert owner.client.get(base, {"index": "7"}).url == base + "7"
    assert "there is no latent 99" in owner.client.get(base, {"index": "99"}).content.decode()
    assert owner.client.get(base + "99").status_code == 404
    assert owner.client.get("/sources/nope/latents/").status_code == 404


@pytest.mark.django_db
def test_a_source_without_sae_says_so(owner, settings, tiny_with_sae, tmp_path):
    path = tmp_path / "sources.toml"
    path.write_text(tiny_with_sae[0].read_text().replace('sae = "', 'sae = "/missing'), "utf-8")
    settings.NLA_SOURCES_FILE = path
    web_sources.configured_sources.cache_clear()
    page = owner.client.get(f"/sources/{tiny_with_sae[1]}/latents/").content.decode()
    assert "of the source &#x27;tiny-llama&#x27; does not exist." in page


@pytest.mark.django_db
def test_a_bad_batch_is_answered_with_its_sentence(owner, source):
    response = owner.client.post(f"/sources/{source.source.id}/latents/runs", {"latents": "0-40"})
    assert "latents 0 to 19; &#x27;0-40&#x27; is outside" in response.content.decode()
    assert LatentRun.objects.count() == 0 and ApiJob.objects.count() == 0


def test_a_label_that_a_spreadsheet_would_run_is_quoted_in_the_csv_and_scores_stay_numbers():
    row = {column: None for column in labels.EXPORT_COLUMNS}
    row |= {"latent": 3, "kind": "label", "text": '=HYPERLINK("http://x","y")', "fve": -0.5}
    parsed = next(csv.DictReader(io.StringIO(labels.export_csv([row]))))
    assert parsed["text"] == '\'=HYPERLINK("http://x","y")'
    assert (parsed["fve"], parsed["latent"], parsed["relative_mse"]) == ("-0.5", "3", "")


def _page_token(page: HttpResponse) -> str:
    """The CSRF token htmx sends from this page (base.html's hx-headers)."""
    found = re.search(r'"X-CSRFToken": "([^"]+)"', page.content.decode())
    assert found is not None
    return found[1]


@pytest.mark.parametrize(
    ("view", "form"), [("latent_explain", {}), ("latent_score", {"label": "words about cats"})]
)
def test_a_guests_first_post_reloads_the_page_because_their_csrf_token_rotated(
    db, source, view, form
):
    browser = Client(enforce_csrf_checks=True)
    page_url = reverse("latent", args=[source.source.id, 3])
    url = reverse(view, args=[source.source.id, 3])
    token = _page_token(browser.get(page_url))

    first = browser.post(url, form, headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert first.status_code == 200 and first.headers["HX-Refresh"] == "true"
    stale = browser.post(url, form, headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert stale.status_code == 403  # what the page's next POST would meet without a reload

    token = _page_token(browser.get(page_url))
    again = browser.post(url, form, headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert again.status_code == 200 and "HX-Refresh" not in again.headers
