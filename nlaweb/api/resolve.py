"""Which source a request means: its `nlaSourceId` (or the default source), checked against an
optional `modelId`."""

from __future__ import annotations

from nlaweb.api.catalog import SourceInfo, source_info
from nlaweb.api.http_errors import BadRequest
from nlaweb.sources.configured import configured_sources, default_source


def resolve_source(source_id: str | None, model: str | None = None) -> SourceInfo:
    """The SourceInfo of `source_id` (None: the default source); BadRequest naming the known ids,
    or the source's model when `model` names another."""
    wanted = source_id or default_source().id
    info = source_info(wanted)
    if info is None:
        known = ", ".join(s.id for s in configured_sources())
        raise BadRequest(f"There is no NLA source '{wanted}'; the sources are: {known}.")
    if model and model.lower() not in {info.model_id.lower(), info.target.ref.lower()}:
        raise BadRequest(
            f"The NLA source '{info.id}' explains the model '{info.model_id}', not '{model}'."
        )
    return info
