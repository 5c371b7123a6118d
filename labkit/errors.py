"""The errors labkit raises.

Every error a student can cause carries one sentence that says what was wrong and what would be
right. Errors that come from the kernel stay ``OSError`` (with their errno) and name the call.
"""


class LabkitError(Exception):
    """Something labkit was asked to do cannot be done; the message says why and what to do."""


class BadInput(LabkitError, ValueError):
    """A value given to labkit is malformed or impossible (a size, a kind, a path, a command)."""


class NotRoot(LabkitError, PermissionError):
    """The operation needs root (or a capability root has) and the caller does not have it."""


class MissingFeature(LabkitError):
    """The kernel or the host lacks something the operation needs (run `labkit doctor`)."""


def require_root(what: str) -> None:
    """Refuse early, with a fix, when *what* needs root and we are not root."""
    import os

    if os.geteuid() != 0:
        raise NotRoot(f"{what} needs root: run it with sudo (or as root inside the lab VM).")


def show(name: str, limit: int = 100, quote: bool = True) -> str:
    """A name from outside (an archive's member, a request's field), for a message: control
    characters escaped (a newline or an ANSI escape in a name must not forge a line of labkit's
    output), long names shortened."""
    text = repr(str(name)) if quote else repr(str(name))[1:-1]
    if len(text) > limit:
        text = f"{text[: limit - 28]}...{text[-24:]}"
    return text
