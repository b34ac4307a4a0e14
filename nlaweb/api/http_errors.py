"""The API's errors: each is an HTTP status, a short code and one sentence for a person, answered as
JSON `{error, detail}`. Everything else that can go wrong is translated here, once."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class NotFound(ApiError):
    status, code = 404, "not_found"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class Unavailable(ApiError):
    """The workers could not do it (no worker serves the source, out of memory, a crash)."""

    status, code = 503, "unavailable"


class TimedOut(ApiError):
    """The job did not finish within API_WAIT_SECONDS; it goes on, and asking again finds it."""

    status, code = 504, "timeout"


def _where(loc: tuple[Any, ...]) -> str:
    """`vectors[0][3]` from pydantic's ("body", "payload", "vectors", 0, 3)."""
    parts = [p for p in loc if p not in ("body", "payload", "query", "path")]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the request body"


def validation_sentence(errors: list[dict[str, Any]]) -> str:
    """One sentence for the first of pydantic's errors (the others follow once it is fixed)."""
    if not errors:
        return "The request is not valid."
    first = errors[0]
    where, kind, msg = (
        _where(tuple(first.get("loc", ()))),
        first.get("type", ""),
        first.get("msg", ""),
    )
    if kind == "finite_number":
        return f"{where} is not a finite number (NaN and infinity are refused)."
    if kind == "missing":
        return f"{where} is required."
    if kind == "json_invalid":
        return "The request body is not valid JSON."
    if kind == "value_error":
        return str(msg).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return f"{where} is not a field of this request."
    return f"{where}: {msg}."
