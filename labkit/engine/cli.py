"""``labkit engine``: serve the Docker Engine API in the foreground.

sudo labkit engine                       # unix:///run/labkit/engine.sock, root only
DOCKER_HOST=unix:///run/labkit/engine.sock docker run --rm busybox echo hi
"""

from __future__ import annotations

import argparse

from ..errors import require_root


def add_parser(sub) -> None:
    p = sub.add_parser(
        "engine",
        help="serve the Docker Engine API on a unix socket (docker and docker-py drive it)",
    )
    p.add_argument(
        "--socket", help="the socket's path (default: /run/labkit/engine.sock, below the state dir)"
    )
    p.add_argument(
        "--group",
        help="let this group use the socket too (mode 0660); "
        "its members are then root on this machine",
    )
    p.add_argument(
        "--tcp",
        metavar="127.0.0.1:PORT",
        help="listen on TCP as well, on 127.0.0.1 only (anyone local is then root)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_root("labkit engine")
    from . import server

    server.serve(args.socket, args.group, args.tcp)
    return 0
