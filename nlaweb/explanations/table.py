"""A message's explanations as a table: one row per explained word token of the message (the
stored row of that token prefix, as the heatmap tints it), in position order, with the scores as
stored; and the same rows as CSV (cells that a spreadsheet would run as a formula are quoted) and
as a JSON document."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from typing import Any

from nlaweb.chat.models import Message, Snapshot
from nlaweb.explanations.models import Explanation
from nlaweb.explanations.request import explained_rows
from nlaweb.explanations.runs import message_positions

#: Columns of the CSV and keys of each JSON row, in order.
COLUMNS = (
    "position",
    "token",
    "explanation",
    "relative_mse",
    "fve",
    "cosine",
    "specificity",
    "confidence",
    "explanation_id",
)
#: A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class TableRow:
    position: int
    token: str
    explanation: str
    relative_mse: float | None
    fve: float | None
    cosine: float | None
    specificity: float | None
    confidence: str
    explanation_id: str


def message_table(snapshot: Snapshot, message: Message) -> list[TableRow]:
    """The finished explanations of the message's word tokens, by position."""
    explained = explained_rows(snapshot)
    rows = []
    for position in message_positions(snapshot, message):
        e = explained.get(position)
        if e is not None and e.status == Explanation.Status.DONE:
            rows.append(_row(e, snapshot.token_texts[position]))
    return rows


def _row(e: Explanation, token: str) -> TableRow:
    return TableRow(
        e.position,
        token,
        " ".join(e.text.split()),
        e.relative_mse,
        e.fve,
        e.cosine,
        e.specificity,
        e.confidence,
        str(e.id),
    )


def spreadsheet_cell(value: object) -> object:
    """A text cell that a spreadsheet would evaluate gets a leading apostrophe; numbers stay."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def table_csv(rows: list[TableRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([spreadsheet_cell(v) for v in asdict(row).values()])
    return out.getvalue()


def table_json(snapshot: Snapshot, message: Message, rows: list[TableRow]) -> dict[str, Any]:
    return {
        "conversation": str(snapshot.conversation_id),
        "snapshot": str(snapshot.id),
        "message": str(message.id),
        "role": message.role,
        "source": snapshot.source_id,
        "columns": list(COLUMNS),
        "rows": [asdict(row) for row in rows],
    }
