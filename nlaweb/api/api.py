"""/api/v1: the researcher API (django-ninja; the OpenAPI document and /api/v1/docs are generated
from the schemas). Operations parse, call one domain function and answer; every error is JSON
`{error, detail}` with one sentence, and every answer to a known caller carries X-RateLimit-*."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from nlaweb.api import completion, explain, stream, vectors
from nlaweb.api.auth import AUTH, NO_KEY, Caller
from nlaweb.api.catalog import all_sources, public_checkpoint
from nlaweb.api.http_errors import ApiError, PayloadTooLarge, Unauthorized, validation_sentence
from nlaweb.api.schemas import (
    CompletionRequest,
    CompletionResponse,
    ErrorOut,
    ExplainRequest,
    ExplainResponse,
    ExplainVectorRequest,
    ExplainVectorResponse,
    ScoreRequest,
    ScoreResponse,
    SourcesResponse,
)
from nlaweb.sources.configured import default_source

log = logging.getLogger(__name__)


def rate_headers(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    state = getattr(request, "rate_state", None)
    if state is not None:
        for name, value in state.headers().items():
            response[name] = value
    return response


class Api(NinjaAPI):
    def create_response(
        self,
        request: HttpRequest,
        data: Any,
        *,
        status: int | None = None,
        temporal_response: HttpResponse | None = None,
    ) -> HttpResponse:
        response = super().create_response(
            request, data, status=status, temporal_response=temporal_response
        )
        rate_headers(request, response)
        return response


api = Api(
    title="nlaweb researcher API",
    version="1",
    description="Explain tokens, raw vectors and labels with Natural Language Autoencoders. "
    "Authenticate with `X-API-Key: <key>` or `Authorization: Bearer <key>` "
    "(create keys at /account/api-keys).",
    urls_namespace="api-v1",
    auth=AUTH,
)

#: With `stream: true` the answer is server-sent events instead of the JSON document.
SSE_OR_JSON = {
    "description": "The explanations, or with `stream: true` server-sent events: metadata, "
    "partial text per position, one result per position, {cacheId}, [DONE].",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ExplainResponse"}},
        "text/event-stream": {
            "schema": {
                "type": "object",
                "description": "One server-sent event; `data` is a JSON document or [DONE].",
                "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
                "required": ["data"],
            }
        },
    },
}
ERRORS: dict[int, Any] = {code: ErrorOut for code in (400, 401, 404, 413, 429, 503, 504)}


def _error(request: HttpRequest, status: int, code: str, detail: str) -> HttpResponse:
    return api.create_response(request, {"error": code, "detail": detail}, status=status)


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    response = _error(request, exc.status, exc.code, exc.detail)
    for name, value in exc.headers.items():
        response[name] = value
    return response


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return _error(request, 400, "bad_request", validation_sentence(list(exc.errors)))


@api.exception_handler(AuthenticationError)
def _anonymous(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(request, 401, Unauthorized.code, NO_KEY)


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _error(
        request, 413, PayloadTooLarge.code, "The request body is too large; send fewer vectors."
    )


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return _error(request, 404, "not_found", "There is no such API endpoint.")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error(request, exc.status_code, "bad_request", f"{exc}.")


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("API request %s %s failed", request.method, request.path)
    return _error(request, 500, "internal", "The server failed; the details are in its log.")


def _caller(request: HttpRequest) -> Caller:
    caller: Caller = request.auth  # type: ignore[attr-defined]
    return caller


@api.get("/sources", response={200: SourcesResponse, **ERRORS}, summary="The NLA sources")
def sources(request: HttpRequest) -> dict[str, Any]:
    default = default_source().id
    return {
        "sources": [
            {
                **{k: getattr(s, k) for k in ("id", "label", "layer", "d_model", "demo")},
                **{k: getattr(s, k) for k in ("var_baseline", "uncalibrated", "notes")},
                "modelId": s.model_id,
                "checkpoints": {
                    r: public_checkpoint(getattr(s, r).ref) for r in ("target", "av", "ar")
                },
                "default": s.id == default,
            }
            for s in all_sources()
        ]
    }


@api.post(
    "/explain",
    response={200: ExplainResponse, **ERRORS},
    summary="Explain tokens of a text, a chat or a stored conversation",
    # An int key, as ninja's own: a "200" string beside it made the document carry two "200"
    # keys, which Swagger UI refuses ("duplicated mapping key") and so drew no operation at all.
    openapi_extra={"responses": {200: SSE_OR_JSON}},
)
async def explain_tokens(request: HttpRequest, payload: ExplainRequest) -> Any:
    asked = await explain.ask(_caller(request).user, payload)
    if payload.stream:
        response = StreamingHttpResponse(
            stream.explain_events(asked), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return rate_headers(request, response)
    return explain.answer(await explain.finished(asked))


@api.post("/completion", response={200: CompletionResponse, **ERRORS}, summary="A reply")
async def complete(request: HttpRequest, payload: CompletionRequest) -> Any:
    return await completion.complete(_caller(request).user, payload)


@api.post("/explain-vector", response={200: ExplainVectorResponse, **ERRORS}, summary="Raw vectors")
async def explain_vector(request: HttpRequest, payload: ExplainVectorRequest) -> Any:
    return await vectors.explain_vectors(_caller(request).user, payload)


@api.post("/score", response={200: ScoreResponse, **ERRORS}, summary="Autointerp scores")
async def score(request: HttpRequest, payload: ScoreRequest) -> Any:
    return await vectors.score(_caller(request).user, payload)
