"""Network namespaces, and the wires between them: how Docker's bridge network is built.

A network namespace holds a network stack of its own: interfaces, addresses, routes, firewall
rules, sockets. A new one holds only ``lo``, which is down. To let it talk, labkit does what
Docker's bridge driver does, one netlink request at a time (through pyroute2, as ``ip`` would):

1. ``netns_add``: a named namespace, a bind mount in ``/run/netns`` that keeps it alive with no
   process in it (what ``ip netns add`` does);
2. ``veth_add``: a veth pair, two interfaces joined back to back, with one end moved into it;
3. ``bridge_add``: a bridge, a switch in the kernel, with an address from a lab subnet that
   collides with none of the host's routes; ``connect`` plugs a namespace's veth into it, gives
   the namespace an address and a default route via the bridge;
4. ``nat_add`` and ``publish``: nftables rules (one table, ``ip labkit``) that let the namespaces
   reach out through the host's address (masquerade) and let the host's port N reach a
   namespace's port (DNAT).

Everything carries labkit's names: namespaces ``labkit-*``, interfaces ``lk*``, the nftables
table ``labkit``, so ``leftovers()`` finds them from the kernel's own tables after any crash.
Read ``man 7 network_namespaces``, ``man 4 veth``, ``man 8 ip-netns`` and ``man 8 nft``.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from .errors import BadInput, LabkitError, MissingFeature, require_root
from .state import state_dir

NETNS_DIR = Path("/run/netns")  # where `ip netns` and pyroute2 keep named namespaces
NETNS_PREFIX = "labkit-"
LINK_PREFIX = "lk"
IFF_UP = 0x1  # <linux/if.h>: the interface was set up
IFNAMSIZ = 16  # <linux/if.h>: an interface name is at most 15 characters and a NUL
NFT_TABLE = "labkit"  # the nftables table (family ip) that holds every labkit rule
LAB_POOL = ipaddress.ip_network("10.203.0.0/16")  # default subnets are /24s taken from here

_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --- names --------------------------------------------------------------------------------------


def check_ifname(name: str, *, labkit_owned: bool = True) -> str:
    """Refuse an interface name the kernel would refuse, or that labkit could not find again."""
    if not isinstance(name, str) or not _IFNAME.match(name):
        raise BadInput(
            f"interface name {name!r} is not usable: use letters, digits, '.', '_' or '-'."
        )
    if len(name) >= IFNAMSIZ:
        raise BadInput(
            f"interface name {name!r} has {len(name)} characters but Linux allows at most "
            f"{IFNAMSIZ - 1} (IFNAMSIZ): choose a shorter name."
        )
    if labkit_owned and not name.startswith(LINK_PREFIX):
        raise BadInput(
            f"interface name {name!r} must start with {LINK_PREFIX!r} so that labkit cleanup can "
            f"find it: use e.g. {LINK_PREFIX + name[: IFNAMSIZ - 1 - len(LINK_PREFIX)]!r}."
        )
    return name


def check_netns_name(name: str) -> str:
    """Refuse a namespace name that is not ``labkit-*`` or could not be a file in /run/netns."""
    if not isinstance(name, str) or not name.startswith(NETNS_PREFIX) or "/" in name:
        raise BadInput(
            f"network namespace name {name!r} must start with {NETNS_PREFIX!r} (and hold no '/') "
            f"so that labkit cleanup can find it: use e.g. 'labkit-a'."
        )
    if not _IFNAME.match(name) or len(name) > 63:
        raise BadInput(
            f"network namespace name {name!r} is not usable: use up to 63 letters, digits, "
            "'.', '_' or '-'."
        )
    return name


def netns_path(name: str) -> str:
    """The file that keeps namespace *name* alive (give it to setns, or to spawn's join=)."""
    return str(NETNS_DIR / check_netns_name(name))


def require_netns(name: str) -> str:
    """Refuse, with the fix, a labkit namespace that does not exist."""
    path = netns_path(name)
    if not os.path.exists(path):
        raise BadInput(
            f"network namespace {name!r} does not exist: create it first with "
            f"network.netns_add({name!r}) (or `labkit net add {name}`)."
        )
    return path


# --- talking to the kernel: rtnetlink through pyroute2 ------------------------------------------


@contextlib.contextmanager
def netlink_call(call: str) -> Iterator[None]:
    """Turn pyroute2's NetlinkError into an OSError that keeps the errno and names the request."""
    try:
        yield
    except NetlinkError as e:
        raise OSError(e.code, f"{call}: {os.strerror(e.code)}") from None


class _Rtnl:
    """An IPRoute whose every call runs in one worker thread of its own.

    pyroute2's synchronous API drives an asyncio event loop, which it cannot do in a thread
    that runs one already (a Jupyter kernel's main thread does); its worker thread has none.
    """

    def __init__(self, netns: str | None) -> None:
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labkit-rtnl")
        # flags=0: never create the namespace as a side effect (pyroute2's default would).
        make = (lambda: IPRoute(netns=netns, flags=0)) if netns else IPRoute
        self._ipr = self._worker.submit(make).result()

    def __getattr__(self, name: str):
        method = getattr(self._ipr, name)
        return lambda *args, **kwargs: self._worker.submit(method, *args, **kwargs).result()

    def close(self) -> None:
        self._worker.submit(self._ipr.close).result()
        self._worker.shutdown()


@contextlib.contextmanager
def rtnl(netns: str | None = None) -> Iterator[IPRoute]:
    """An rtnetlink socket in the host's network namespace, or in labkit namespace *netns*.

    pyroute2 opens the socket in a short-lived child that joined the namespace with setns(): a
    socket belongs to the namespace it was created in, whichever process uses it later.
    """
    if netns is not None:
        require_netns(netns)
    open_now = _sockets.__dict__.setdefault("open", {})
    if netns in open_now:  # an enclosing rtnl() block holds one open: use it
        yield open_now[netns]
        return
    ipr = open_now[netns] = _Rtnl(netns)
    try:
        yield ipr
    finally:
        del open_now[netns]
        ipr.close()


# The sockets that rtnl() blocks hold open, per thread: a block around several requests keeps
# one socket for all of them (opening one in a namespace costs a fork, about 25 ms).
_sockets = threading.local()


def ifindex(ipr: IPRoute, ifname: str, netns: str | None = None) -> int:
    """The kernel's index of interface *ifname* (RTM_GETLINK), or a BadInput naming the fix."""
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        where = f"network namespace {netns!r}" if netns else "the host"
        raise BadInput(
            f"there is no interface {ifname!r} in {where}: check the name (see links())."
        )
    return found[0]


# --- namespaces ---------------------------------------------------------------------------------


def netns_add(name: str) -> str:
    """Create network namespace *name*, kept alive by a bind mount in /run/netns; return its path.

    pyroute2 does what ``ip netns add`` does: in a child, unshare(CLONE_NEWNET), then bind-mount
    the child's /proc/self/ns/net onto /run/netns/NAME, so the namespace outlives the child.
    """
    require_root("creating a network namespace")
    path = netns_path(name)
    if os.path.exists(path):
        raise BadInput(
            f"network namespace {name!r} exists already: choose another name or delete it."
        )
    pyroute2_netns.create(name)
    return path


def netns_delete(name: str) -> None:
    """Unmount and remove namespace *name*; the kernel frees it once no process is left in it.

    Its interfaces are deleted first: a veth's peer on the host then goes now, rather than
    whenever the kernel gets round to freeing the namespace.
    """
    require_netns(name)
    with rtnl(name) as ipr:
        for link in ipr.get_links():
            if link.get("ifname") != "lo":
                with contextlib.suppress(NetlinkError):  # gone already with its peer
                    ipr.link("del", index=link["index"])
    pyroute2_netns.remove(name)


def netns_list() -> list[str]:
    """The labkit network namespaces that exist now."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(NETNS_PREFIX))


# --- links --------------------------------------------------------------------------------------


@dataclass
class Link:
    """One network interface as the kernel reports it (``ip -br addr`` in a dataclass)."""

    index: int
    ifname: str
    kind: str  # "veth", "bridge", ... or "" for a physical device or lo
    state: str  # "UP" when asked to be up (IFF_UP), else "DOWN"
    master: str | None = None  # the bridge this interface is plugged into
    addresses: list[str] = field(default_factory=list)  # IPv4, "10.203.0.2/24"

    def __str__(self) -> str:
        kind = f" ({self.kind})" if self.kind else ""
        master = f" master {self.master}" if self.master else ""
        addrs = f" {' '.join(self.addresses)}" if self.addresses else ""
        return f"{self.ifname}{kind} {self.state}{master}{addrs}"


def links(netns: str | None = None) -> list[Link]:
    """The interfaces of the host, or of labkit namespace *netns* (RTM_GETLINK, RTM_GETADDR)."""
    with rtnl(netns) as ipr:
        raw = ipr.get_links()
        names = {m["index"]: m.get("ifname") for m in raw}
        addrs: dict[int, list[str]] = {}
        for a in ipr.get_addr(family=2):
            addrs.setdefault(a["index"], []).append(f"{a.get('address')}/{a['prefixlen']}")
        found = []
        for m in raw:
            info = m.get_attr("IFLA_LINKINFO")
            kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or ""
            master = m.get("master")
            found.append(
                Link(
                    index=m["index"],
                    ifname=m.get("ifname"),
                    kind=kind,
                    # IFF_UP, not the operational state: that follows the carrier a moment later.
                    state="UP" if m["flags"] & IFF_UP else "DOWN",
                    master=names.get(master) if master else None,
                    addresses=addrs.get(m["index"], []),
                )
            )
    return found


def link_up(ifname: str, netns: str | None = None) -> None:
    """Set IFF_UP on *ifname* (RTM_NEWLINK): a new interface starts down, lo included."""
    with rtnl(netns) as ipr, netlink_call(f"RTM_NEWLINK({ifname} up)"):
        ipr.link("set", index=ifindex(ipr, ifname, netns), state="up")


def link_delete(ifname: str) -> None:
    """Delete host interface *ifname*; deleting one end of a veth pair deletes both."""
    check_ifname(ifname)
    with rtnl() as ipr:
        index = ifindex(ipr, ifname)
        with netlink_call(f"RTM_DELLINK({ifname})"):
            ipr.link("del", index=index)


def veth_add(ifname: str, netns: str, peer: str = "eth0") -> Link:
    """Create a veth pair: *ifname* stays on the host, *peer* is moved into *netns*.

    What enters one end leaves the other, so the pair is a cable through the namespace wall.
    """
    require_root("creating a veth pair")
    check_ifname(ifname)
    check_ifname(peer, labkit_owned=False)
    require_netns(netns)
    with rtnl() as ipr:
        if ipr.link_lookup(ifname=ifname):
            raise BadInput(f"interface {ifname!r} exists already on the host: choose another name.")
        with netlink_call(f"RTM_NEWLINK(veth {ifname} peer {peer} netns {netns})"):
            # IFLA_NET_NS_FD on the peer: the kernel creates that end directly in the namespace.
            ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": peer, "net_ns_fd": netns})
    return next(link for link in links() if link.ifname == ifname)


def addr_add(ifname: str, address: str, netns: str | None = None) -> None:
    """Give *ifname* an IPv4 address with its prefix, e.g. "10.203.0.2/24" (RTM_NEWADDR).

    The kernel adds the route to the prefix by itself: the subnet is on that link.
    """
    iface = _interface(address)
    with rtnl(netns) as ipr, netlink_call(f"RTM_NEWADDR({ifname} {address})"):
        ipr.addr(
            "add",
            index=ifindex(ipr, ifname, netns),
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
        )


def route_add_default(gateway: str, netns: str) -> None:
    """Send everything with no more specific route to *gateway* (RTM_NEWROUTE 0.0.0.0/0)."""
    with rtnl(netns) as ipr, netlink_call(f"RTM_NEWROUTE(default via {gateway})"):
        ipr.route("add", dst="0.0.0.0/0", gateway=str(ipaddress.ip_address(gateway)))


def _interface(address: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.ip_interface(address)
    except ValueError:
        iface = None
    if not isinstance(iface, ipaddress.IPv4Interface) or "/" not in str(address):
        raise BadInput(
            f"address {address!r} is not an IPv4 address with a prefix: use e.g. '10.203.0.2/24'."
        )
    return iface


# --- subnets that cannot collide with the host's -------------------------------------------------


def host_routes() -> list[ipaddress.IPv4Network]:
    """The destinations of the host's IPv4 routes, all tables, except the default route."""
    with rtnl() as ipr:
        found = {
            ipaddress.ip_network(f"{r.get('dst')}/{r['dst_len']}", strict=False)
            for r in ipr.get_routes(family=2)
            if r["dst_len"] > 0 and r.get("dst")
        }
    return sorted(found)


def check_subnet(subnet: str | ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """Refuse a subnet that is malformed, too small, or overlaps a route the host has."""
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError:
        net = None
    if not isinstance(net, ipaddress.IPv4Network):
        raise BadInput(f"subnet {subnet!r} is not an IPv4 network: use e.g. '10.203.7.0/24'.")
    if net.prefixlen > 29:
        raise BadInput(
            f"subnet {net} is too small for a bridge and its namespaces: use a /29 or larger."
        )
    for route in host_routes():
        if net.overlaps(route):
            raise BadInput(
                f"subnet {net} overlaps the host's route to {route}: choose another subnet, or "
                "leave it out and labkit picks a free one."
            )
    return net


def free_subnet(prefixlen: int = 24) -> ipaddress.IPv4Network:
    """The first subnet of LAB_POOL that overlaps none of the host's routes."""
    taken = host_routes()
    for net in LAB_POOL.subnets(new_prefix=prefixlen):
        if not any(net.overlaps(route) for route in taken):
            return net
    raise LabkitError(f"no free /{prefixlen} is left in {LAB_POOL}: pass a subnet explicitly.")


# --- bridges ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bridge:
    """A bridge on the host, its lab subnet, and its own address: the namespaces' gateway."""

    ifname: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address

    def __str__(self) -> str:
        return f"bridge {self.ifname} subnet {self.subnet} gateway {self.gateway}"


def bridge_add(ifname: str, subnet: str | None = None) -> Bridge:
    """Create bridge *ifname* with the first address of *subnet* (default: a free one) and up.

    The bridge is a switch in the kernel; its own address makes the host a member of the
    subnet, which is what lets it route for the namespaces (their default gateway).
    """
    require_root("creating a bridge")
    check_ifname(ifname)
    net = check_subnet(subnet) if subnet is not None else free_subnet()
    gateway = next(net.hosts())
    with rtnl() as ipr:
        if ipr.link_lookup(ifname=ifname):
            raise BadInput(f"interface {ifname!r} exists already on the host: choose another name.")
        with netlink_call(f"RTM_NEWLINK(bridge {ifname})"):
            ipr.link("add", ifname=ifname, kind="bridge")
        index = ifindex(ipr, ifname)
        try:
            with netlink_call(f"RTM_NEWADDR({ifname} {gateway}/{net.prefixlen})"):
                ipr.addr("add", index=index, address=str(gateway), prefixlen=net.prefixlen)
                ipr.link("set", index=index, state="up")
        except OSError:
            ipr.link("del", index=index)  # leave the host as it was
            raise
    return Bridge(ifname, net, gateway)


def bridge(ifname: str) -> Bridge:
    """The Bridge *ifname* as the kernel has it (its subnet is read back from its address)."""
    check_ifname(ifname)
    for link in links():
        if link.ifname == ifname and link.kind == "bridge" and link.addresses:
            iface = ipaddress.ip_interface(link.addresses[0])
            return Bridge(ifname, iface.network, iface.ip)
    raise BadInput(
        f"there is no labkit bridge {ifname!r} with an address: create it with bridge_add()."
    )


def bridge_delete(ifname: str) -> None:
    """Delete bridge *ifname* and the NAT and publish rules made for it."""
    rules_delete(ifname)
    link_delete(ifname)


# --- plugging namespaces into a bridge ------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A namespace plugged into a bridge: its veth ends and its address on the lab subnet."""

    netns: str
    host_ifname: str  # the host end of the veth, a port of the bridge
    ifname: str  # the end inside the namespace
    address: ipaddress.IPv4Interface
    bridge: str

    def __str__(self) -> str:
        return f"{self.netns}: {self.ifname} {self.address} <-> {self.host_ifname} on {self.bridge}"


def host_ifname_for(netns: str) -> str:
    """The host end's name for *netns*: "lk" and what follows "labkit-" ("labkit-a" -> "lka")."""
    name = LINK_PREFIX + check_netns_name(netns)[len(NETNS_PREFIX) :]
    if len(name) >= IFNAMSIZ:
        raise BadInput(
            f"namespace name {netns!r} is too long to name its veth on the host ({name!r} has "
            f"{len(name)} characters, Linux allows {IFNAMSIZ - 1}): use at most "
            f"{IFNAMSIZ - 1 - len(LINK_PREFIX)} characters after {NETNS_PREFIX!r}."
        )
    return check_ifname(name)


def _addresses_in_use(net: ipaddress.IPv4Network) -> set[ipaddress.IPv4Address]:
    """Addresses of *net* held by the host or by any labkit namespace (so none is given twice)."""
    used = set()
    for where in [None, *netns_list()]:
        try:
            for link in links(where):
                used.update(ipaddress.ip_interface(a).ip for a in link.addresses)
        except (BadInput, OSError):
            continue  # a namespace deleted meanwhile
    return {ip for ip in used if ip in net}


def connect(
    br: Bridge | str, netns: str, address: str | None = None, *, ifname: str = "eth0"
) -> Endpoint:
    """Plug *netns* into bridge *br*, as Docker's bridge driver plugs in a container.

    A veth pair with one end (*ifname*) in the namespace, the other a port of the bridge; an
    address on the bridge's subnet (the next free one unless *address* is given); lo and the
    interface up; a default route via the bridge's address.
    """
    br = bridge(br) if isinstance(br, str) else br
    require_netns(netns)
    host_end = host_ifname_for(netns)
    if address is None:
        used = _addresses_in_use(br.subnet)
        free = next((ip for ip in br.subnet.hosts() if ip not in used), None)
        if free is None:
            raise LabkitError(f"subnet {br.subnet} of {br.ifname} has no free address left.")
        iface = ipaddress.ip_interface(f"{free}/{br.subnet.prefixlen}")
    else:
        iface = _interface(address)
        if iface.network != br.subnet:
            raise BadInput(
                f"address {address} is not on {br.ifname}'s subnet {br.subnet}: use one of it."
            )
    veth_add(host_end, netns, ifname)
    try:
        with rtnl() as ipr, netlink_call(f"RTM_NEWLINK({host_end} master {br.ifname} up)"):
            master = ifindex(ipr, br.ifname)
            ipr.link("set", index=ifindex(ipr, host_end), master=master, state="up")
        with rtnl(netns):  # one socket in the namespace for the four requests
            addr_add(ifname, str(iface), netns)
            link_up("lo", netns)
            link_up(ifname, netns)
            route_add_default(str(br.gateway), netns)
    except BaseException:
        link_delete(host_end)  # both ends go: the namespace is as it was
        raise
    return Endpoint(netns, host_end, ifname, iface, br.ifname)


# --- nftables: outbound NAT and published ports ------------------------------------------------
#
# One table, `ip labkit`, holds every rule labkit makes, with a comment "BRIDGE: what" on each,
# so `nft list table ip labkit` shows them all and `nft delete table ip labkit` removes them.
# Its chains hook into the kernel's NAT: prerouting for packets arriving from elsewhere,
# output for connections made on this host, postrouting for packets about to leave.

_NFT_CHAINS = {
    "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "output": "type nat hook output priority -100; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
}
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _nft_exe() -> str | None:
    return shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")


def _nft(*commands: str) -> str:
    """Run ``nft`` with *commands* (one nft script, applied as one transaction)."""
    exe = _nft_exe()
    if exe is None:
        raise MissingFeature(
            "NAT and published ports need nftables' nft command: install it "
            "(apt-get install nftables)."
        )
    proc = subprocess.run(
        [exe, "-f", "-"],
        input="\n".join(commands),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if proc.returncode != 0:
        raise OSError(errno.EINVAL, f"nft: {proc.stderr.strip()}")
    return proc.stdout


def _nft_json() -> list[dict]:
    """The labkit table as nft's JSON objects, or [] when the table (or nft) is not there."""
    exe = _nft_exe()
    if exe is None:
        return []
    proc = subprocess.run(
        [exe, "-j", "list", "table", "ip", NFT_TABLE],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if proc.returncode != 0:
        return []  # "No such file or directory": no table
    return json.loads(proc.stdout)["nftables"]


def _nft_ensure_table() -> None:
    script = [f"add table ip {NFT_TABLE}"]
    script += [
        f"add chain ip {NFT_TABLE} {name} {{ {spec} }}" for name, spec in _NFT_CHAINS.items()
    ]
    _nft(*script)


@dataclass(frozen=True)
class Rule:
    """One labkit nftables rule: its chain, kernel handle, and the comment saying what it does."""

    chain: str
    handle: int
    comment: str

    def __str__(self) -> str:
        return f"nft {self.chain}: {self.comment}"


def rules(table: list[dict] | None = None) -> list[Rule]:
    """The rules in labkit's nftables table (read now, unless *table* was read already)."""
    found = []
    for obj in _nft_json() if table is None else table:
        rule = obj.get("rule")
        if rule:
            found.append(Rule(rule["chain"], rule["handle"], rule.get("comment", "")))
    return found


def nat_add(br: Bridge | str) -> Rule:
    """Masquerade what *br*'s subnet sends out through another interface; turn on forwarding.

    Masquerade rewrites the source address to the address of the interface the packet leaves
    by (conntrack rewrites the replies back), so the namespaces need no route back to them.
    Routing between interfaces needs net.ipv4.ip_forward=1; the old value is kept in the state
    directory and restored when the last NAT rule goes.
    """
    require_root("adding a NAT rule")
    br = bridge(br) if isinstance(br, str) else br
    comment = f"{br.ifname}: masquerade {br.subnet}"
    if any(r.comment == comment for r in rules()):
        raise BadInput(f"{br.ifname} has outbound NAT already.")
    _nft_ensure_table()
    _nft(
        f'add rule ip {NFT_TABLE} postrouting ip saddr {br.subnet} oifname != "{br.ifname}" '
        f'masquerade comment "{comment}"'
    )
    _forwarding_on()
    return next(r for r in rules() if r.comment == comment)


def publish(
    br: Bridge | str,
    host_port: int,
    address: str,
    port: int,
    proto: str = "tcp",
    host_ip: str | None = None,
) -> list[Rule]:
    """Send connections to the host's *host_port* on to *address*:*port* in a namespace (DNAT).

    Two rules, like Docker's: prerouting for connections arriving from elsewhere (they also need
    forwarding, see nat_add), output for connections made on this host to one of its own
    addresses; not to 127.0.0.1, which the kernel will not route out of lo. With *host_ip*, only
    connections to that one address of the host's (``docker run -p HOST_IP:HOST:CTR``).
    """
    require_root("publishing a port")
    br = bridge(br) if isinstance(br, str) else br
    if proto not in ("tcp", "udp"):
        raise BadInput(f"protocol {proto!r} cannot be published: use 'tcp' or 'udp'.")
    for what, value in (("host port", host_port), ("port", port)):
        if not isinstance(value, int) or not 1 <= value <= 65535:
            raise BadInput(f"{what} {value!r} is not a port number: use 1 to 65535.")
    ip = ipaddress.ip_address(address)
    if ip not in br.subnet:
        raise BadInput(
            f"{ip} is not on {br.ifname}'s subnet {br.subnet}: publish a namespace's address."
        )
    comment = f"{br.ifname}: publish {proto} {host_port} -> {ip}:{port}"
    if any(r.comment.split(" -> ")[0] == comment.split(" -> ")[0] for r in rules()):
        raise BadInput(f"{proto} port {host_port} is published already: choose another host port.")
    # "fib daddr type local": to any address of this host's, as the kernel's routing sees it.
    destination = "fib daddr type local"
    if host_ip:
        try:
            destination = f"ip daddr {ipaddress.IPv4Address(host_ip)}"
        except ValueError:
            raise BadInput(
                f"{host_ip!r} is not an IPv4 address: give one like 192.168.1.5."
            ) from None
        comment += f" on {host_ip}"  # after the " -> " part that unpublish and callers match
    _nft_ensure_table()
    match = f"{destination} {proto} dport {host_port}"
    _nft(
        f'add rule ip {NFT_TABLE} prerouting {match} dnat to {ip}:{port} comment "{comment}"',
        f"add rule ip {NFT_TABLE} output ip daddr != 127.0.0.0/8 {match} dnat to {ip}:{port} "
        f'comment "{comment}"',
    )
    return [r for r in rules() if r.comment == comment]


def unpublish(bridge_name: str, host_port: int, proto: str = "tcp") -> None:
    """Delete the rules that publish *host_port* on *bridge_name* (what publish made)."""
    head = f"{bridge_name}: publish {proto} {host_port} -> "
    doomed = [r for r in rules() if r.comment.startswith(head)]
    if doomed:
        _nft(*[f"delete rule ip {NFT_TABLE} {r.chain} handle {r.handle}" for r in doomed])


def rules_delete(bridge_name: str | None = None) -> None:
    """Delete labkit's rules for *bridge_name* (all when None); the table goes with the last."""
    found = rules()
    doomed = [r for r in found if bridge_name is None or r.comment.startswith(f"{bridge_name}: ")]
    script = [f"delete rule ip {NFT_TABLE} {r.chain} handle {r.handle}" for r in doomed]
    if len(doomed) == len(found) and _nft_json():
        script.append(f"delete table ip {NFT_TABLE}")
    if script:
        _nft(*script)
    if not any("masquerade" in r.comment for r in rules()):
        _forwarding_restore()


def _saved_forwarding() -> Path:
    return state_dir() / "network" / "ip_forward"


def _forwarding_on() -> None:
    saved = _saved_forwarding()
    if not saved.exists():
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(_IP_FORWARD.read_text())
    _IP_FORWARD.write_text("1\n")


def _forwarding_restore() -> None:
    saved = _saved_forwarding()
    if saved.exists():
        _IP_FORWARD.write_text(saved.read_text())
        saved.unlink()
        with contextlib.suppress(OSError):
            saved.parent.rmdir()


# --- clean-up -----------------------------------------------------------------------------------


def _labkit_links() -> list[Link]:
    return [link for link in links() if link.ifname.startswith(LINK_PREFIX)]


def leftovers() -> list[str]:
    """labkit's network namespaces, host interfaces and nftables rules that exist now."""
    found = [f"netns: {name}" for name in netns_list()]
    found += [f"link: {link.ifname} ({link.kind or 'device'})" for link in _labkit_links()]
    table = _nft_json()
    found += [str(r) for r in rules(table)]
    if table and not rules(table):
        found.append(f"nft table ip {NFT_TABLE} (empty)")
    if _saved_forwarding().exists():
        found.append("sysctl: net.ipv4.ip_forward changed by labkit")
    return found


def remove_leftovers() -> None:
    """Delete labkit's rules (restoring ip_forward), host interfaces, then namespaces."""
    if _nft_json():
        _nft(f"delete table ip {NFT_TABLE}")
    _forwarding_restore()
    # veths first: deleting the host end deletes the end inside the namespace at once, rather
    # than when the kernel gets round to freeing the namespace.
    for link in sorted(_labkit_links(), key=lambda link: link.kind == "bridge"):
        with contextlib.suppress(BadInput, OSError):
            link_delete(link.ifname)
    for name in netns_list():
        with contextlib.suppress(BadInput, OSError):
            netns_delete(name)
