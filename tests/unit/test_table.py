"""A message's explanations as a table (issue 14 item 5): the rows the heatmap tints, in position
order, the stored scores as they are; CSV with formula-looking cells quoted, JSON; owner only (the
stranger's knocks are in tests/unit/test_doors.py)."""

from __future__ import annotations

import csv
import io

import pytest
from django.test import Client
from django.urls import reverse

from nlaweb.explanations.models import Explanation
from nlaweb.explanations.table import COLUMNS, message_table, table_csv
from nlaweb.share.sharing import create_share
from tests.sharing import explained_conversation, finished

pytestmark = pytest.mark.django_db


def _urls(found, message_id):
    args = [found.conversation.id, found.snapshot.id, message_id]
    return {
        n: reverse(n, args=args)
        for n in ("message_table", "message_table_csv", "message_table_json")
    }


def test_the_table_lists_the_messages_finished_explanations_by_position(owner):
    found = explained_conversation(owner.user, positions=(2, 10, 8))
    finished(found.snapshot, 9, status=Explanation.Status.FAILED)  # failed: no row
    finished(found.snapshot, 11, status=Explanation.Status.QUEUED)  # not finished: no row yet
    Explanation.objects.filter(pk=found.explanations[10].pk).update(
        relative_mse=1.31, fve=-0.31, cosine=0.41, specificity=None, confidence="low"
    )
    reply = found.snapshot.leaf
    rows = message_table(found.snapshot, reply)
    assert [r.position for r in rows] == [8, 10]  # the user's token #2 is another message's
    assert (
        rows[1].token == "t110"
        and rows[1].explanation == "A cat, the pet. Sleep and warmth nearby."
    )
    assert (rows[1].relative_mse, rows[1].fve, rows[1].cosine) == (1.31, -0.31, 0.41)
    assert (rows[1].specificity, rows[1].confidence) == (None, "low")
    assert (rows[0].specificity, rows[0].confidence) == (0.91, "high")


def test_the_table_page_and_downloads_carry_the_same_rows(owner):
    found = explained_conversation(owner.user, positions=(8, 10))
    urls = _urls(found, found.snapshot.leaf.id)
    page = owner.client.get(urls["message_table"]).content.decode()
    assert page.count("<tr data-position=") == 2 and 'data-position="10"' in page
    assert urls["message_table_csv"] in page and urls["message_table_json"] in page
    got = owner.client.get(urls["message_table_csv"])
    assert got["Content-Type"].startswith("text/csv") and "attachment" in got["Content-Disposition"]
    table = list(csv.reader(io.StringIO(got.content.decode())))
    assert table[0] == list(COLUMNS)
    assert [row[:2] for row in table[1:]] == [["8", "t108"], ["10", "t110"]]
    assert table[1][3:8] == ["0.22", "0.78", "0.93", "0.91", "high"]
    document = owner.client.get(urls["message_table_json"]).json()
    assert document["message"] == str(found.snapshot.leaf.id) and document["columns"] == list(
        COLUMNS
    )
    assert [r["position"] for r in document["rows"]] == [8, 10]
    assert (
        document["rows"][0]["relative_mse"] == 0.22 and document["rows"][0]["specificity"] == 0.91
    )


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted_and_numbers_stay_numbers(owner):
    found = explained_conversation(owner.user, positions=(8,))
    snapshot = found.snapshot
    snapshot.token_texts[8] = "=1+1"
    snapshot.save()
    Explanation.objects.filter(pk=found.explanations[8].pk).update(
        text='=HYPERLINK("http://evil","x")', fve=-0.5
    )
    (row,) = list(csv.reader(io.StringIO(table_csv(message_table(snapshot, snapshot.leaf)))))[1:]
    assert row[1] == "'=1+1" and row[2] == '\'=HYPERLINK("http://evil","x")'
    assert row[4] == "-0.5"  # a negative FVE is a number, not a formula
    for start in ("+", "-", "@"):
        Explanation.objects.filter(pk=found.explanations[8].pk).update(text=f"{start}cmd")
        (row,) = list(csv.reader(io.StringIO(table_csv(message_table(snapshot, snapshot.leaf)))))[
            1:
        ]
        assert row[2] == f"'{start}cmd"


def test_every_message_with_words_has_a_table_button_beside_explain_all(owner):
    found = explained_conversation(owner.user, positions=(8,))
    page = owner.client.get(reverse("conversation", args=[found.conversation.id])).content.decode()
    for message in (found.snapshot.leaf, found.snapshot.leaf.parent):
        assert f'data-role="show-table" data-message-id="{message.id}"' in page
        assert _urls(found, message.id)["message_table"] in page
    share = create_share(found.conversation, None, "")
    reader = Client().get(reverse("share_view", args=[share.id])).content.decode()
    assert "data-table-slot" not in reader and 'data-role="show-table"' not in reader  # owner's


def test_a_message_with_nothing_explained_has_an_empty_table_with_a_sentence(owner):
    found = explained_conversation(owner.user, positions=(8,))
    user = found.snapshot.leaf.parent
    page = owner.client.get(_urls(found, user.id)["message_table"]).content.decode()
    assert "No token of this message is explained yet" in page
    assert owner.client.get(_urls(found, user.id)["message_table_csv"]).content.decode() == (
        ",".join(COLUMNS) + "\r\n"
    )
