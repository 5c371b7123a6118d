"""``labkit-runtime``: runc's command line over labkit's container life cycle.

OCI tooling drives a runtime as ``RUNTIME [--root DIR] [--log FILE] [--log-format json]
create --bundle DIR [--pid-file F] ID``, then ``start ID``, ``state ID`` (JSON on stdout),
``kill ID [SIGNAL]``, ``delete [--force] ID``; ``run`` does create, start, wait and delete in
one, ``list`` shows the containers. Like runc, an error is one line on stderr (or in the log
file) and exit status 1; an unknown command is status 3; ``run`` exits as the container did.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import sys

from .. import forkserver
from .. import sys as ksys
from ..errors import LabkitError
from . import lifecycle

UNKNOWN_COMMAND = 3  # what runc (urfave/cli) exits with for a command it does not have


class _Usage(Exception):
    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is runc's: status 1 (3 for an unknown command), one line."""

    def error(self, message: str):
        raise _Usage(message, UNKNOWN_COMMAND if "invalid choice" in message else 1)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="labkit-runtime", description="An OCI runtime with runc's command line.")
    p.add_argument(
        "--root",
        help="where containers' state is kept (default: "
        "$LABKIT_STATE_DIR/containers, where `labkit cleanup` finds it)",
    )
    p.add_argument("--log", help="write errors to this file instead of stderr")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--debug", action="store_true", help="accepted for runc compatibility")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_id(name: str, help: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help)
        cmd.add_argument("id")
        return cmd

    for name, help in (
        ("create", "set a container up; it waits for start"),
        ("run", "create and start a container, wait for it, delete it"),
    ):
        cmd = with_id(name, help)
        cmd.add_argument("--bundle", "-b", default=".")
        cmd.add_argument("--pid-file")
        cmd.add_argument("--console-socket")
        if name == "run":
            cmd.add_argument("--detach", "-d", action="store_true")
    with_id("start", "let a created container exec its process")
    with_id("state", "print a container's OCI state as JSON")
    kill = with_id("kill", "send a signal (default TERM) to a container's PID 1")
    kill.add_argument("signal", nargs="?", default="TERM")
    kill.add_argument("--all", "-a", action="store_true")
    delete = with_id("delete", "remove a stopped container (--force: any)")
    delete.add_argument("--force", "-f", action="store_true")
    ls = sub.add_parser("list", help="list containers")
    ls.add_argument("--format", "-f", choices=("table", "json"), default="table")
    ls.add_argument("--quiet", "-q", action="store_true")
    return p


def _create(args) -> lifecycle.Container:
    return lifecycle.create(
        args.id,
        args.bundle,
        root=args.root,
        pid_file=args.pid_file,
        console_socket=args.console_socket,
    )


def _run(args) -> int:
    if args.detach:
        _create(args)
        lifecycle.start(args.id, args.root)
        return 0
    # As a subreaper we become the parent of the container's PID 1 once the init's forking half
    # exits, so we can wait for it and exit as it did.
    ksys.prctl(ksys.PR_SET_CHILD_SUBREAPER, 1)
    c = _create(args)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: lifecycle.kill(args.id, s, args.root))
    try:
        lifecycle.start(args.id, args.root)
        return lifecycle.wait(c)
    finally:
        lifecycle.delete(args.id, force=True, root=args.root)


def _list(args) -> int:
    found = lifecycle.list_containers(args.root)
    if args.quiet:
        print("\n".join(c.id for c in found))
    elif args.format == "json":
        print(json.dumps([c.state() for c in found] or None))  # runc prints null for none
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        for c in found:
            s = c.state()
            rows.append((c.id, str(s["pid"]), s["status"], s["bundle"], s["created"], "root"))
        widths = [max(12, max(len(r[i]) for r in rows) + 2) for i in range(len(rows[0]))]
        for row in rows:
            print("".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def dispatch(args) -> int:
    if args.command == "create":
        _create(args)
    elif args.command == "run":
        return _run(args)
    elif args.command == "start":
        lifecycle.start(args.id, args.root)
    elif args.command == "state":
        # runc prints the state without a final newline; tools parse it either way.
        sys.stdout.write(json.dumps(lifecycle.get(args.id, args.root).state(), indent=2))
    elif args.command == "kill":
        lifecycle.kill(args.id, args.signal, args.root, all_processes=args.all)
    elif args.command == "delete":
        lifecycle.delete(args.id, args.force, args.root)
    elif args.command == "list":
        return _list(args)
    return 0


def log_error(args, message: str) -> None:
    """One error line, as runc writes it: logfmt text, or a JSON object per line."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if getattr(args, "log_format", "text") == "json":
        line = json.dumps({"level": "error", "msg": message, "time": now})
    else:
        line = f'time="{now}" level=error msg={json.dumps(message)}'
    if getattr(args, "log", None):
        with open(args.log, "a") as f:
            f.write(line + "\n")
    else:
        print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = argparse.Namespace()
    try:
        args = parser().parse_args(argv)
        return dispatch(args)
    except _Usage as e:
        log_error(args, str(e))
        return e.status
    except (LabkitError, OSError) as e:
        log_error(args, str(e))
        return 1


def entry() -> None:
    forkserver.fork_in_this_process()  # one container, one thread: no fork server needed
    sys.exit(main())


if __name__ == "__main__":
    entry()
