"""Domain errors of the NLA engine. Each message is one sentence for a person: the numbers and the fix."""

from __future__ import annotations


class NlaError(Exception):
    """Base class; `str(error)` is safe to show to a user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CheckpointIncompatible(NlaError):
    """A checkpoint or its `nla_meta.yaml` breaks the contract (names the field, expected, found)."""


class InputTooLong(NlaError):
    """The token sequence exceeds what the source accepts."""


class PositionOutOfRange(NlaError):
    """A requested token position is outside the sequence."""


class WorkerOutOfMemory(NlaError):
    """The device ran out of memory for this job."""


class SourceNotServed(NlaError):
    """No worker serves the requested NLA source."""


class ModelLoadError(NlaError):
    """Weights could not be found or loaded."""


#: What Celery's pool raises in a job past its soft limit (billiard's SoftTimeLimitExceeded) and
#: reports for one killed at its hard limit. Matched by name: the engine stays Celery-free.
TIME_LIMIT_ERRORS = frozenset({"SoftTimeLimitExceeded", "TimeLimitExceeded"})


def is_time_limit(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from or while handling, is a job's time limit:
    code that wraps whatever it catches (a loader, a download) must not hide that the time ran out."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if type(error).__name__ in TIME_LIMIT_ERRORS:
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def mismatch(where: str, field: str, expected: object, found: object) -> CheckpointIncompatible:
    """A CheckpointIncompatible naming the field, the expected and the found value."""
    error = CheckpointIncompatible(
        f"{where}: '{field}' does not match: expected {expected!r}, found {found!r}."
    )
    error.field, error.expected, error.found = field, expected, found  # type: ignore[attr-defined]
    return error
