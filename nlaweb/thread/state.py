"""What the conversation page's URL holds: the branch shown (`at`), the explanations open (`open`)
and whether template tokens show (`tpl`). The server reads it (the request's own query on a page
load, the page's URL that htmx sends as HX-Current-URL on a swap), changes it with what a request
did, and answers with the new URL (HX-Replace-Url), so a reload or a copied link shows the same page
and no script re-derives it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse, QueryDict
from django_htmx.http import replace_url

from workers.nla.types import MAX_POSITIONS_PER_REQUEST


@dataclass(frozen=True)
class PageState:
    at: str = ""  # the leaf of the branch shown ("": the conversation's head)
    open: tuple[str, ...] = ()  # explanation ids, in the order they were opened
    tpl: bool = False  # template tokens shown

    @classmethod
    def of(cls, request: HttpRequest) -> PageState:
        """The state the page showed when it sent `request`."""
        htmx = getattr(request, "htmx", None)
        current = htmx.current_url if htmx else None
        query = QueryDict(urlsplit(current).query) if current else request.GET
        return cls.from_query(query)

    @classmethod
    def from_query(cls, query: QueryDict) -> PageState:
        return cls(
            at=_id_or_blank(query.get("at", "")),
            open=parse_ids(query.get("open", "")),
            tpl=query.get("tpl") == "1",
        )

    def showing(self, leaf_id: object) -> PageState:
        return replace(self, at=str(leaf_id or ""))

    def opening(self, ids: Iterable[object]) -> PageState:
        """Exactly these rows open (a click replaces the panel)."""
        return replace(self, open=_unique(str(i) for i in ids))

    def adding(self, ids: Iterable[object]) -> PageState:
        return replace(self, open=_unique([*self.open, *(str(i) for i in ids)]))

    def closing(self, ids: Iterable[object]) -> PageState:
        gone = {str(i) for i in ids}
        return replace(self, open=tuple(i for i in self.open if i not in gone))

    def query(self) -> str:
        """`at=…&open=a,b&tpl=1`, written by hand so the ids' commas stay readable in the link."""
        parts = [f"at={self.at}"] if self.at else []
        if self.open:
            parts.append("open=" + ",".join(self.open))
        if self.tpl:
            parts.append("tpl=1")
        return "&".join(parts)

    def url(self, path: str) -> str:
        query = self.query()
        return f"{path}?{query}" if query else path


def parse_ids(raw: str) -> tuple[str, ...]:
    """The explanation ids of an `open` value, in order, each once; anything that is not an id is
    ignored (a hand-edited link still opens the page), at most one request's worth."""
    ids = (_id_or_blank(part) for part in raw.split(","))
    return _unique(i for i in ids if i)[:MAX_POSITIONS_PER_REQUEST]


def _id_or_blank(raw: str) -> str:
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        return ""


def _unique(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


def answer_with_url(
    request: HttpRequest, response: HttpResponse, state: PageState, path: str
) -> HttpResponse:
    """Set the page's URL to `state` (HX-Replace-Url) when htmx asked; a plain request has none."""
    return replace_url(response, state.url(path)) if getattr(request, "htmx", False) else response
