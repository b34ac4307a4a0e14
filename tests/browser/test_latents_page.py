"""The latents page in Debian's Chromium against the live stack (real worker, tiny source with a
TopK SAE trained on its layer): a batch run fills its table, sorts, cancels; a latent shows its top
contexts and explanation; a label gets the three scores side by side; search and export. Every state
is saved as a screenshot under var/test-artifacts/screens/."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from nlaweb.latents.models import LatentExplanation
from tests.browser.pages import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _latents(page: Page, stack, source_id: str) -> None:
    page.goto(f"{stack.base_url}/sources/{source_id}/latents/")
    expect(page.locator('[data-role="sae-facts"]')).to_contain_text("32 latents")


def test_a_batch_run_fills_a_sortable_table_and_a_latent_gets_scored_labels(
    page: Page, stack, tiny_sources_file
):
    source_id = tiny_sources_file[1]
    _latents(page, stack, source_id)
    expect(page.locator('[data-role="scale-note"]')).to_contain_text("injection scale 6")
    screenshot(page, "latents-index-empty")

    page.get_by_label("Latents to explain").fill("0-5")
    page.get_by_role("button", name="Explain", exact=True).click()
    expect(page.locator('[data-role="run-progress"]')).to_contain_text("6 of 6 explained")
    expect(page.locator('[data-role="run"]')).to_have_attribute("data-finished", "true")
    screenshot(page, "latents-run-finished")

    page.locator('[data-sort="relative_mse"]').click()
    shown = [
        int(i) for i in page.locator("tbody tr").evaluate_all("rs => rs.map(r => r.dataset.latent)")
    ]
    scores = dict(
        LatentExplanation.objects.filter(source_id=source_id).values_list("index", "relative_mse")
    )
    assert sorted(shown) == list(range(6))
    assert [scores[i] for i in shown] == sorted(scores[i] for i in shown)

    page.goto(f"{stack.base_url}/sources/{source_id}/latents/2")
    expect(page.locator('[data-role="explanation"]')).to_have_attribute("data-status", "done")
    expect(page.locator('[data-role="contexts"] li mark').first).to_be_visible()
    expect(page.locator('[data-role="caveat-nla_reconstructor"]')).to_contain_text("works poorly")
    page.get_by_label("Label").fill("animals and cats")
    page.get_by_role("button", name="Score").click()
    row = page.locator('[data-role="label-row"]').first
    expect(row).to_have_attribute("data-status", "done")
    for key in ("nla_reconstructor", "nla_verbalizer", "nla_verbalizer_last"):
        value = float(row.locator(f'[data-scorer="{key}"]').inner_text())
        assert -1.0 <= value <= 1.0
    screenshot(page, "latents-latent-scored")

    text = LatentExplanation.objects.get(source_id=source_id, index=2).description
    word = next(w for w in text.split() if len(w) > 2)
    _latents(page, stack, source_id)
    page.get_by_label("Search labels").fill(word)
    page.get_by_role("button", name="Search").click()
    expect(page.locator('[data-role="search-results"]')).to_contain_text("#2")

    exported = page.request.get(f"{stack.base_url}/sources/{source_id}/latents/export.json")
    rows = json.loads(exported.body())["rows"]
    assert {"latent": 2, "kind": "label", "text": "animals and cats"}.items() <= next(
        r for r in rows if r["kind"] == "label"
    ).items()


def test_a_run_cancelled_while_the_worker_is_busy_stops_where_it_is(
    page: Page, stack, tiny_sources_file
):
    source_id = tiny_sources_file[1]
    _latents(page, stack, source_id)
    with stack.worker_paused():
        page.get_by_label("Latents to explain").fill("10-25")
        page.get_by_role("button", name="Explain", exact=True).click()
        expect(page.locator('[data-role="run-progress"]')).to_contain_text("0 of 16 explained")
        page.locator('[data-role="cancel-run"]').click()
        expect(page.locator('[data-role="run-progress"]')).to_contain_text("cancelled")
    screenshot(page, "latents-run-cancelled")
    statuses = set(
        LatentExplanation.objects.filter(source_id=source_id, index__gte=10).values_list(
            "status", flat=True
        )
    )
    # the worker was frozen before it claimed anything, so every latent was still queued
    assert statuses == {"cancelled"}
