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


def mismatch(where: str, field: str, expected: object, found: object) -> CheckpointIncompatible:
    """A CheckpointIncompatible naming the field, the expected and the found value."""
    error = CheckpointIncompatible(
        f"{where}: '{field}' does not match: expected {expected!r}, found {found!r}."
    )
    error.field, error.expected, error.found = field, expected, found  # type: ignore[attr-defined]
    return error
