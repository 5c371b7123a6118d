"""A container's /etc/hosts, /etc/hostname and /etc/resolv.conf, written as Docker writes them.

An image's /etc cannot know the name the container will get, its address, or the name servers
it can reach. So the engine (not runc: the OCI spec has no such files) writes three small files
per container into the container's own record directory, never into the image's layers, and
has the runtime bind-mount each over the root's file (read-only with a read-only root, as
Docker does). They are removed with the record, and ``/proc/self/mountinfo`` inside shows
where each comes from, as Docker's do.

- ``hosts``: the loopback names, and the container's hostname with its address on the lab
  bridge when it has one (with ``--network none``, as Docker 20.10 writes it: localhost only);
- ``hostname``: the hostname, one line;
- ``resolv.conf``: the host's, without the name servers a container cannot reach.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from .spec import Mount

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
# systemd-resolved's stub (127.0.0.53) is the host's own: the servers it asks are listed here.
RESOLVED_RESOLV_CONF = Path("/run/systemd/resolve/resolv.conf")
FILES = ("resolv.conf", "hostname", "hosts")  # Docker's order of the three bind mounts

_LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def hosts(hostname: str, address: str | None = None) -> str:
    """/etc/hosts: the loopback names, then *hostname* at *address* when it has one."""
    return _LOCALHOST + (f"{address}\t{hostname}\n" if address else "")


def _nameserver(line: str) -> str | None:
    """The address of a "nameserver ADDRESS" line, or None for any other line."""
    fields = line.split()
    return fields[1] if len(fields) >= 2 and fields[0] == "nameserver" else None


def _reachable(address: str) -> bool:
    """Can a container on the lab's (IPv4-only) bridge reach this name server at all?

    A loopback address (127.0.0.0/8, ::1) is the container's own loopback in its network
    namespace, not the host's: nothing answers there. labkit's bridge has no IPv6, so an IPv6
    server cannot be reached either (Docker drops them too when a network has no IPv6).
    """
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False  # not an address: the resolver would ignore the line anyway
    return ip.version == 4 and not ip.is_loopback


def resolv_conf(host_text: str) -> str:
    """The host's resolv.conf without unreachable name servers; search and options kept.

    When none is left, Docker writes Google's public servers (8.8.8.8, 8.8.4.4). labkit adds
    none: such a default would send the container's queries off this machine without anyone
    asking for it, and the kit never sends traffic off the machine by itself. A container then
    has no name server (the resolver tries its own loopback and fails at once, locally);
    give it one explicitly if it needs names.
    """
    lines = host_text.splitlines()
    kept = [line for line in lines if (ns := _nameserver(line)) is None or _reachable(ns)]
    if any(map(_nameserver, lines)) and not any(map(_nameserver, kept)):
        kept.append(
            "# labkit: the host's name servers cannot be reached from a container (loopback "
            "or IPv6) and no public one is added instead."
        )
    return "\n".join(kept) + "\n" if kept else ""


def host_resolv_conf() -> str:
    """The host's resolv.conf as Docker reads it: resolved's upstream list behind its stub."""
    try:
        text = HOST_RESOLV_CONF.read_text(errors="replace")
    except OSError:
        return ""  # no resolver configured: the container gets none either
    servers = [s for s in map(_nameserver, text.splitlines()) if s]
    if servers == ["127.0.0.53"] and RESOLVED_RESOLV_CONF.is_file():
        try:
            return RESOLVED_RESOLV_CONF.read_text(errors="replace")
        except OSError:
            pass
    return text


def write(directory: Path, hostname: str, address: str | None, readonly: bool) -> list[Mount]:
    """Write the three files into *directory*; the bind mounts that put them over the root's."""
    contents = {
        "resolv.conf": resolv_conf(host_resolv_conf()),
        "hostname": hostname + "\n",
        "hosts": hosts(hostname, address),
    }
    mounts = []
    for name in FILES:
        path = directory / name
        tmp = path.with_name(name + ".tmp")
        tmp.write_text(contents[name])
        os.chmod(tmp, 0o644)  # a non-root user in the container reads them too
        os.replace(tmp, path)
        options = ["rbind", "rprivate"] + (["ro"] if readonly else [])
        mounts.append(Mount(f"/etc/{name}", "bind", str(path), options))
    return mounts
