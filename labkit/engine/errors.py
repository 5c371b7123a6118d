"""The errors the engine answers with, as Docker's: an HTTP status and ``{"message": ...}``.

The docker CLI prints the message as it is, so each is one sentence that says what was wrong
and what to do. labkit's own errors map onto statuses by kind: a bad value is the client's
fault (400), a missing object is 404, a clash with what exists is 409.
"""

from __future__ import annotations

from ..errors import BadInput, LabkitError, NotRoot


class ApiError(LabkitError):
    """An answer other than success; ``status`` is the HTTP status it goes out with."""

    status = 500

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class TooLarge(ApiError):
    status = 413


class NotImplementedHere(ApiError):
    status = 501


def status_of(error: BaseException) -> int:
    """The HTTP status a labkit error goes out with."""
    if isinstance(error, ApiError):
        return error.status
    # The container manager's own kinds, by name, so this module imports nothing above it.
    kinds = {cls.__name__ for cls in type(error).__mro__}
    if kinds & {"NotFound", "NoSuchImage", "NoSuchContainer"}:
        return 404
    if kinds & {"Conflict", "NameInUse", "NotRunning", "IsRunning"}:
        return 409
    if isinstance(error, BadInput):
        return 400
    if isinstance(error, NotRoot):
        return 403
    return 500
