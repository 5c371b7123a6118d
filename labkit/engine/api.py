"""What an endpoint sees of HTTP: the route table, the request, and the ways to answer.

An endpoint is a function registered with ``@route("POST", "/containers/{id}/start")``. It
gets a ``Request`` (query arguments, a JSON body read within a bound) and returns a ``Reply``,
or answers itself: ``request.stream()`` for a body sent in chunks as it is made (``docker load``'s
progress, ``logs --follow``), ``request.hijack()`` for the raw byte stream of ``attach`` and
``exec``. Anything read from the client is checked here before an endpoint sees it.
"""

from __future__ import annotations

import json
import re
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .errors import BadRequest, TooLarge

JSON_LIMIT = 1 << 20  # a container's config is a few kB; a megabyte is not one
_LINE_LIMIT = 1024  # a chunk-size line

ROUTES: list[tuple[str, re.Pattern, Callable]] = []


def route(method: str, pattern: str):
    """Register an endpoint for *method* and a path like ``/containers/{id}/json``.

    ``{name}`` matches one path segment; ``{name*}`` matches the rest (image names have '/').
    """

    def regex(part: str) -> str:
        name = part[1:-1]
        if name.endswith("*"):
            return f"(?P<{name[:-1]}>.+)"
        return f"(?P<{name}>[^/]+)"

    parts = re.split(r"(\{[a-z_]+\*?\})", pattern)
    compiled = re.compile(
        "^" + "".join(regex(p) if p.startswith("{") else re.escape(p) for p in parts) + "$"
    )

    def register(func: Callable) -> Callable:
        ROUTES.append((method, compiled, func))
        return func

    return register


def find(method: str, path: str) -> tuple[Callable, dict] | tuple[None, bool]:
    """The endpoint for *method* and *path* with its path parameters; else (None, whether the
    path exists for another method)."""
    other = False
    for m, pattern, func in ROUTES:
        match = pattern.match(path)
        if match:
            if m == method or (method == "HEAD" and m == "GET"):
                return func, match.groupdict()
            other = True
    return None, other


class ClientGone(ConnectionError):
    """The client closed its connection while we were still answering."""


@dataclass
class Reply:
    """A whole answer: a status and a body (JSON-able, bytes, or nothing)."""

    status: int = 200
    body: Any = None
    content_type: str = "application/json"
    headers: dict | None = None


class Chunked:
    """A body sent as HTTP/1.1 chunks, each as soon as it is written (``Transfer-Encoding:
    chunked``): the client reads progress and logs while they are made."""

    def __init__(self, wfile) -> None:
        self._w = wfile

    def write(self, data: bytes) -> None:
        if data:
            self._send(b"%x\r\n%s\r\n" % (len(data), data))

    def json(self, obj) -> None:
        self.write(json.dumps(obj).encode() + b"\n")

    def close(self) -> None:
        self._send(b"0\r\n\r\n")

    def _send(self, data: bytes) -> None:
        try:
            self._w.write(data)
            self._w.flush()
        except OSError as e:
            raise ClientGone(str(e)) from None


class Hijacked:
    """The connection after ``101 UPGRADED``: a raw byte stream both ways, HTTP no more."""

    def __init__(self, handler) -> None:
        self._h = handler

    def recv(self, size: int = 65536) -> bytes:
        """What the client sent (bytes already buffered first); b'' once it shut its side."""
        try:
            return self._h.rfile.read1(size)
        except OSError:
            return b""

    def send(self, data: bytes) -> None:
        try:
            self._h.wfile.write(data)
            self._h.wfile.flush()
        except OSError as e:
            raise ClientGone(str(e)) from None

    def close_write(self) -> None:
        """Tell the client there is no more output (it may still be sending stdin)."""
        try:
            self._h.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _false(value: str) -> bool:
    return value.strip().lower() in ("", "0", "no", "false", "none")


class Request:
    """One request as an endpoint sees it; the handler (server.py) does the wire."""

    def __init__(self, handler, method: str, path: str, query: str, params: dict) -> None:
        self._h = handler
        self.method = method
        self.path = path
        self.params = params
        self.headers = handler.headers
        try:
            self.query = parse_qs(query, keep_blank_values=True, max_num_fields=100)
        except ValueError:
            raise BadRequest("the query string has more than 100 fields: send fewer.") from None
        self.body_read = False
        self.answered = False

    # --- the query ---------------------------------------------------------------------------

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def args(self, name: str) -> list[str]:
        return list(self.query.get(name, []))

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean argument as Docker reads one: absent is *default*; '', 0, no, false is no."""
        value = self.arg(name)
        return default if value is None else not _false(value)

    def int_arg(self, name: str, default: int | None = None, low: int = 0, high: int = 1 << 31):
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise BadRequest(
                f"the argument {name}={value[:40]!r} is not a whole number from {low} to {high}."
            )
        return number

    def filters(self) -> dict[str, list[str]]:
        """The ``filters`` argument: ``{"status": ["running"]}`` (or the older
        ``{"status": {"running": true}}``), checked."""
        raw = self.arg("filters")
        if not raw:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise BadRequest(
                'the filters argument is not a JSON object: send e.g. {"status": ["running"]}.'
            )
        out = {}
        for key, value in doc.items():
            if isinstance(value, dict):
                value = [k for k, on in value.items() if on]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BadRequest(f"the filter {key[:40]!r} must be a list of strings.")
            out[key] = value
        return out

    # --- the body ----------------------------------------------------------------------------

    def _chunks(self, limit: int):
        """The body's bytes as they arrive, chunked or by Content-Length, never past *limit*."""
        self.body_read = True
        rfile = self._h.rfile
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            while True:
                line = rfile.readline(_LINE_LIMIT)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._h.close_connection = True  # where the next request starts is lost
                    raise BadRequest("the request's chunked body is malformed.") from None
                if size == 0:
                    while rfile.readline(_LINE_LIMIT) not in (b"\r\n", b"\n", b""):
                        pass  # trailers: nothing we use
                    return
                total += size
                if total > limit:
                    self._h.close_connection = True
                    raise TooLarge(_too_large(limit))
                while size:
                    data = rfile.read(min(size, 1 << 20))
                    if not data:
                        self._h.close_connection = True
                        raise BadRequest(
                            "the client closed the connection in the middle of the body."
                        )
                    size -= len(data)
                    yield data
                rfile.readline(_LINE_LIMIT)  # the CRLF after each chunk
        length = self.headers.get("Content-Length")
        if length is None:
            return
        if not length.isdigit():
            self._h.close_connection = True
            raise BadRequest(f"Content-Length {length[:20]!r} is not a number of bytes.")
        left = int(length)
        if left > limit:
            self._h.close_connection = True
            raise TooLarge(_too_large(limit))
        while left:
            data = rfile.read(min(left, 1 << 20))
            if not data:
                self._h.close_connection = True
                raise BadRequest("the client closed the connection in the middle of the body.")
            left -= len(data)
            yield data

    def body(self, limit: int = JSON_LIMIT) -> bytes:
        return b"".join(self._chunks(limit))

    def body_to(self, out, limit: int) -> int:
        """Copy the body into the file *out*; the number of bytes."""
        n = 0
        for data in self._chunks(limit):
            out.write(data)
            n += len(data)
        return n

    def json(self, required: bool = False) -> dict:
        """The body as a JSON object ({} if empty and not *required*)."""
        data = self.body()
        if not data.strip():
            if required:
                raise BadRequest("the request needs a JSON body.")
            return {}
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise BadRequest(f"the request's body is not valid JSON ({str(e)[:80]}).") from None
        if not isinstance(doc, dict):
            raise BadRequest("the request's body must be a JSON object.")
        return doc

    def drain(self) -> None:
        """Read what an endpoint left of the body, so the connection can carry the next one."""
        if not self.body_read:
            try:
                for _ in self._chunks(JSON_LIMIT):
                    pass
            except (BadRequest, TooLarge):
                self._h.close_connection = True

    def client_gone(self) -> bool:
        """Whether the client closed its connection (a docker CLI interrupted in a wait)."""
        sock = self._h.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            gone = bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            gone = True
        if gone:
            self._h.close_connection = True
        return gone

    # --- answers an endpoint sends itself ----------------------------------------------------

    def stream(self, status: int = 200, content_type: str = "application/json") -> Chunked:
        """Send the head now; the body follows in chunks (close() ends it)."""
        self._h.send_head(status, content_type, chunked=True)
        self.answered = True
        return Chunked(self._h.wfile)

    def hijack(self, content_type: str) -> Hijacked:
        """Answer ``101 UPGRADED`` and hand over the raw connection (docker's attach and exec
        start): the client refuses a 200 here."""
        self._h.send_upgrade(content_type)
        self.answered = True
        return Hijacked(self._h)


def _too_large(limit: int) -> str:
    return (
        f"the request's body is over {limit >> 20} MiB, the engine's limit for this request: "
        "send less (for images, raise LABKIT_IMAGE_MAX_BYTES)."
    )
