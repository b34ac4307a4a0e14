"""A message's explanations as a table beside its heatmap, and the same rows as CSV and JSON
downloads. The owner's only: anyone else gets 404."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from nlaweb.chat.models import Message, Snapshot
from nlaweb.explanations.owned import owned_message
from nlaweb.explanations.request import ExplainRejected
from nlaweb.explanations.table import TableRow, message_table, table_csv, table_json


def _owned(
    request: HttpRequest, conversation_id: str, snapshot_id: str, message_id: str
) -> tuple[Snapshot, Message, list[TableRow]]:
    snapshot, message = owned_message(request, conversation_id, snapshot_id, message_id)
    try:
        rows = message_table(snapshot, message)
    except ExplainRejected:  # the message has no tokens in this snapshot: nothing explained
        rows = []
    return snapshot, message, rows


@require_GET
def table(
    request: HttpRequest, conversation_id: str, snapshot_id: str, message_id: str
) -> HttpResponse:
    snapshot, message, rows = _owned(request, conversation_id, snapshot_id, message_id)
    context = {"snapshot": snapshot, "message": message, "rows": rows}
    return render(request, "explanations/table.html", context)


@require_GET
def table_csv_download(
    request: HttpRequest, conversation_id: str, snapshot_id: str, message_id: str
) -> HttpResponse:
    _, message, rows = _owned(request, conversation_id, snapshot_id, message_id)
    response = HttpResponse(table_csv(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="explanations-{message.id}.csv"'
    return response


@require_GET
def table_json_download(
    request: HttpRequest, conversation_id: str, snapshot_id: str, message_id: str
) -> HttpResponse:
    snapshot, message, rows = _owned(request, conversation_id, snapshot_id, message_id)
    response = JsonResponse(table_json(snapshot, message, rows), json_dumps_params={"indent": 1})
    response["Content-Disposition"] = f'attachment; filename="explanations-{message.id}.json"'
    return response
