"""Traffic between network namespaces: shaping it with tc, and measuring it from the inside.

A network namespace isolates addresses, routes and ports, but not the machine's capacity: two
namespaces share the same CPUs and the same kernel, and a veth is as fast as memory copies. What
slows a container's network down is a queueing discipline (qdisc) on one of its interfaces, set
with tc (through pyroute2's RTM_NEWQDISC, as ``tc qdisc add`` does):

- ``tbf``, the token bucket filter: tokens arrive at the rate, a packet leaves only when the
  bucket holds enough tokens for its bytes; *burst* is the size of the bucket;
- ``netem``, the network emulator: holds every packet back for a delay (kernels built without
  CONFIG_NET_SCH_NETEM refuse it; labkit then says so).

A qdisc shapes what *leaves* an interface: on the host's end of a namespace's veth, it shapes what
the namespace receives. The measurements run inside the namespaces: ``ping`` is busybox run in
the namespace; the TCP helpers use sockets created in the namespaces, because a socket belongs
to the network namespace it was created in, whichever process reads it later.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from pyroute2 import netns as pyroute2_netns

from . import namespaces
from .errors import BadInput, LabkitError, MissingFeature, require_root
from .network import ifindex, links, netlink_call, require_netns, rtnl

TC_H_ROOT = 0xFFFFFFFF  # the parent of a root qdisc
TBF_HANDLE = 0x10000  # 1:  the root qdisc
NETEM_HANDLE = 0x100000  # 10:  netem, below tbf's only class 1:1 when both are asked for
TBF_LATENCY_MS = 50  # how long a packet may wait in tbf's queue before it is dropped


# --- shaping with tc ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shaping:
    """What the root qdisc of an interface does to what leaves it."""

    ifname: str
    rate_mbit: float | None = None  # tbf's rate; None: not limited
    delay_ms: float | None = None  # netem's delay; None: not delayed

    def __str__(self) -> str:
        parts = []
        if self.rate_mbit is not None:
            parts.append(f"rate {self.rate_mbit:g} Mbit/s (tbf)")
        if self.delay_ms is not None:
            parts.append(f"delay {self.delay_ms:g} ms (netem)")
        return f"{self.ifname}: {', '.join(parts) or 'not shaped'}"


def _check_positive(value: float | None, what: str, unit: str, top: float) -> None:
    if value is not None and not (isinstance(value, (int, float)) and 0 < value <= top):
        raise BadInput(
            f"{what} {value!r} is not usable: give a number of {unit} above 0 and up to {top:g}."
        )


def shape(
    ifname: str,
    rate_mbit: float | None = None,
    delay_ms: float | None = None,
    netns: str | None = None,
) -> Shaping:
    """Limit what leaves *ifname* to *rate_mbit* (tbf) and hold it back *delay_ms* (netem).

    Replaces any shaping already there. On the host's end of a veth this shapes what the
    namespace receives; pass *netns* to shape an interface inside a namespace instead.
    """
    require_root("shaping traffic with tc")
    _check_positive(rate_mbit, "rate", "Mbit/s", 10_000)
    _check_positive(delay_ms, "delay", "milliseconds", 10_000)
    if rate_mbit is None and delay_ms is None:
        raise BadInput(
            "shape() needs a rate_mbit, a delay_ms or both: use unshape() to remove shaping."
        )
    unshape(ifname, netns)
    with rtnl(netns) as ipr:
        index = ifindex(ipr, ifname, netns)
        try:
            parent = "root"
            if rate_mbit is not None:
                rate = rate_mbit * 1e6 / 8  # bytes per second
                # A bucket of 5 ms of traffic (but at least two full frames) keeps bursts short,
                # so what a second of traffic measures is the rate.
                burst = max(int(rate / 200), 3200)
                with netlink_call(f"RTM_NEWQDISC({ifname} root tbf rate {rate_mbit:g}mbit)"):
                    ipr.tc(
                        "add",
                        "tbf",
                        index,
                        handle=TBF_HANDLE,
                        rate=f"{int(rate * 8)}bit",
                        burst=burst,
                        latency=f"{TBF_LATENCY_MS}ms",
                    )
                parent = TBF_HANDLE + 1  # 1:1, tbf's one class, where a child qdisc goes
            if delay_ms is not None:
                kwargs = {"parent": parent} if parent != "root" else {}
                try:
                    with netlink_call(f"RTM_NEWQDISC({ifname} netem delay {delay_ms:g}ms)"):
                        ipr.tc(
                            "add",
                            "netem",
                            index,
                            handle=NETEM_HANDLE,
                            delay=int(delay_ms * 1000),
                            **kwargs,
                        )
                except OSError as e:
                    if e.errno == errno.ENOENT:
                        raise MissingFeature(
                            "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM), so it cannot "
                            "add delay: shape with rate_mbit only, or use a kernel that has netem."
                        ) from None
                    raise
        except BaseException:
            if parent != "root":  # tbf was added: leave the interface as it was
                _delete_root(ipr, index, "tbf", TBF_HANDLE)
            raise
    return shaping(ifname, netns)


def _delete_root(ipr, index: int, kind: str, handle: int) -> None:
    """RTM_DELQDISC of the root qdisc on interface *index*.

    netem must be named by kind and handle (`tc qdisc del dev X root handle 10: netem`): asked
    by position alone, the deletion is refused with EINVAL. pyroute2 builds a kind's options
    even for a deletion and wants a rate for tbf, so tbf is deleted by position alone.
    """
    if kind == "netem":
        ipr.tc("del", "netem", index, handle=handle, root=True)
    else:
        ipr.tc("del", index=index, root=True)


def unshape(ifname: str, netns: str | None = None) -> None:
    """Delete labkit's root qdisc on *ifname*, if any: the interface gets its default back."""
    with rtnl(netns) as ipr:
        index = ifindex(ipr, ifname, netns)
        for qdisc in ipr.get_qdiscs(index=index):
            if qdisc["parent"] == TC_H_ROOT and qdisc["handle"] in (TBF_HANDLE, NETEM_HANDLE):
                # Deleting the root qdisc deletes its children too (netem below tbf).
                kind = qdisc.get_attr("TCA_KIND")
                with netlink_call(f"RTM_DELQDISC({ifname} root {kind})"):
                    _delete_root(ipr, index, kind, qdisc["handle"])


def shaping(ifname: str, netns: str | None = None) -> Shaping:
    """Read back what tbf and netem on *ifname* do (RTM_GETQDISC)."""
    rate = delay = None
    with rtnl(netns) as ipr:
        for qdisc in ipr.get_qdiscs(index=ifindex(ipr, ifname, netns)):
            kind = qdisc.get_attr("TCA_KIND")
            options = qdisc.get_attr("TCA_OPTIONS")
            if kind == "tbf" and options is not None:
                parms = options.get_attr("TCA_TBF_PARMS")
                rate = round(parms["rate"] * 8 / 1e6, 3)
            elif kind == "netem" and options is not None:
                # netem reports its delay in scheduler ticks; a tick is a microsecond here.
                delay = round(options["delay"] / _ticks_per_usec() / 1000, 3)
    return Shaping(ifname, rate, delay)


def _ticks_per_usec() -> float:
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

    return tick_in_usec


# --- running a command inside a namespace ---------------------------------------------------------


def run_in(netns: str, argv: Sequence[str], timeout: float = 10.0) -> namespaces.Result:
    """Run *argv* in labkit network namespace *netns* (setns, as ``ip netns exec`` does)."""
    path = require_netns(netns)
    return namespaces.run(list(argv), join={"net": path}, timeout=timeout)


def _busybox() -> str:
    found = shutil.which("busybox") or shutil.which("busybox", path="/bin:/usr/bin")
    if found is None:
        raise MissingFeature(
            "ping needs busybox: install busybox-static (apt-get install busybox-static)."
        )
    return found


@dataclass(frozen=True)
class Ping:
    """What busybox ping reported: echo requests sent, replies received, average round trip."""

    address: str
    sent: int
    received: int
    rtt_ms: float | None  # average round-trip time of the replies; None without replies

    @property
    def ok(self) -> bool:
        return self.received > 0

    def __str__(self) -> str:
        rtt = f", round trip {self.rtt_ms:.3f} ms" if self.rtt_ms is not None else ""
        return f"ping {self.address}: {self.received}/{self.sent} replies{rtt}"


def ping(
    netns: str, address: str, count: int = 1, timeout: float = 1.0, interval: float = 0.05
) -> Ping:
    """Ping *address* from inside *netns* with busybox: *count* echo requests, *timeout* s to
    wait."""
    ip = ipaddress.ip_address(address)
    if not 1 <= count <= 100:
        raise BadInput(f"count {count} is not usable: ping 1 to 100 times.")
    argv = [
        _busybox(),
        "ping",
        "-c",
        str(count),
        "-i",
        f"{interval:g}",
        "-W",
        str(max(1, round(timeout))),
        "-w",
        str(max(1, round(timeout + count * interval + 1))),
        str(ip),
    ]
    result = run_in(netns, argv, timeout=timeout + count * interval + 10)
    sent = received = 0
    rtt = None
    counts = re.search(r"(\d+) packets transmitted, (\d+) packets received", result.stdout)
    if counts:
        sent, received = int(counts[1]), int(counts[2])
    times = re.search(r"min/avg/max = [\d.]+/([\d.]+)/", result.stdout)
    if times:
        rtt = float(times[1])
    return Ping(str(ip), sent or count, received, rtt)


def latency(netns: str, address: str, count: int = 5) -> float:
    """The average round-trip time, in ms, from inside *netns* to *address* (busybox ping)."""
    result = ping(netns, address, count=count)
    if result.rtt_ms is None:
        raise LabkitError(
            f"{address} did not answer from {netns}: check that it is reachable first."
        )
    return result.rtt_ms


# --- TCP between two namespaces ------------------------------------------------------------------


def socket_in(netns: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """An IPv4 socket created inside *netns* (pyroute2 creates it in a child that did setns)."""
    require_netns(netns)
    return pyroute2_netns.create_socket(netns, socket.AF_INET, kind, flags=0)


@contextlib.contextmanager
def listen(netns: str, address: str, port: int) -> Iterator[socket.socket]:
    """A TCP socket in *netns* listening on *address*:*port*, closed when the block ends."""
    sock = socket_in(netns)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise BadInput(
                    f"{address} is not an address of {netns}: listen on one of its own."
                ) from None
            raise
        sock.listen(1)
        yield sock
    finally:
        sock.close()


def tcp_connect(
    src_netns: str, dst_netns: str, address: str, port: int = 7, timeout: float = 1.0
) -> bool:
    """Whether a TCP connection from *src_netns* reaches a listener on *address*:*port* in
    *dst_netns*."""
    with listen(dst_netns, address, port), contextlib.closing(socket_in(src_netns)) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except OSError:  # refused, unreachable, or no answer in time
            return False
        return True


@dataclass(frozen=True)
class Throughput:
    """Bytes a TCP stream delivered into the receiving namespace, over the time it took."""

    bytes: int
    seconds: float

    @property
    def mbit_per_s(self) -> float:
        return self.bytes * 8 / self.seconds / 1e6 if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return f"{self.mbit_per_s:.1f} Mbit/s ({self.bytes} bytes in {self.seconds:.2f} s)"


def throughput(
    src_netns: str, dst_netns: str, address: str, seconds: float = 1.0, port: int = 5201
) -> Throughput:
    """Stream TCP from *src_netns* to *address*:*port* in *dst_netns*; measure at the receiver.

    The receiver counts the bytes that arrive during *seconds* from the first one, then closes,
    which stops the sender (what is still queued in socket buffers is not counted).
    """
    if not 0.1 <= seconds <= 30:
        raise BadInput(f"seconds {seconds!r} is not usable: measure for 0.1 to 30 seconds.")
    stop = threading.Event()
    chunk = b"\0" * 65536

    def send(sock: socket.socket) -> None:
        give_up = time.monotonic() + seconds + 10
        with contextlib.suppress(OSError):
            sock.connect((address, port))
            while not stop.is_set() and time.monotonic() < give_up:
                try:
                    sock.send(chunk)
                except TimeoutError:
                    continue  # the receiver is slower than us: check stop, then try again

    with listen(dst_netns, address, port) as listener:
        sender = socket_in(src_netns)
        sender.settimeout(0.2)
        thread = threading.Thread(target=send, args=(sender,), daemon=True)
        thread.start()
        try:
            listener.settimeout(5)
            conn, _ = listener.accept()
            with conn:
                received, elapsed = _receive_for(conn, seconds)
        finally:
            stop.set()
            thread.join(timeout=5)
            sender.close()
    return Throughput(received, elapsed)


def latency_under_load(
    src_netns: str, dst_netns: str, address: str, seconds: float = 1.5, count: int = 5
) -> tuple[float, Throughput]:
    """Ping *address* from *src_netns* while a TCP stream from there fills the queue to it.

    The echo requests wait in the same queue as the stream's packets, so the round trip
    grows by however long that queue is (up to tbf's latency when the rate is limited).
    """
    result: list[Throughput] = []
    stream = threading.Thread(
        target=lambda: result.append(throughput(src_netns, dst_netns, address, seconds)),
        daemon=True,
    )
    stream.start()
    try:
        time.sleep(min(0.3, seconds / 4))  # let the stream fill the queue first
        rtt = latency(src_netns, address, count=count)
    finally:
        stream.join(timeout=seconds + 15)
    if not result:
        raise LabkitError(f"the TCP stream from {src_netns} to {address} did not finish.")
    return rtt, result[0]


def _receive_for(conn: socket.socket, seconds: float) -> tuple[int, float]:
    """Count bytes arriving on *conn* for *seconds* from the first one."""
    buf = bytearray(1 << 18)
    conn.settimeout(5)
    conn.recv_into(buf)  # the first bytes start the clock; they are not counted
    start = time.monotonic()
    deadline = start + seconds
    received = 0
    while (left := deadline - time.monotonic()) > 0:
        conn.settimeout(left)
        try:
            n = conn.recv_into(buf)
        except TimeoutError:
            break
        if n == 0:
            break
        received += n
    return received, time.monotonic() - start


# --- who reaches whom -------------------------------------------------------------------------


def address_of(netns: str) -> str | None:
    """The first IPv4 address of *netns* outside lo, or None."""
    for link in links(netns):
        if link.ifname != "lo" and link.addresses:
            return str(ipaddress.ip_interface(link.addresses[0]).ip)
    return None


@dataclass(frozen=True)
class Reachability:
    """For each pair of namespaces, whether the first reached the second's address."""

    names: tuple[str, ...]
    addresses: tuple[str | None, ...]
    reached: tuple[tuple[bool, ...], ...]  # reached[i][j]: from names[i] to names[j]

    def __str__(self) -> str:
        width = max(len(n) for n in self.names)
        lines = [" " * width + "  to: " + " ".join(n.ljust(width) for n in self.names)]
        for name, row in zip(self.names, self.reached):
            cells = " ".join(("yes" if ok else "no").ljust(width) for ok in row)
            lines.append(f"{name.ljust(width)}      {cells}")
        return "\n".join(lines)


def reachability(names: Iterable[str], timeout: float = 1.0) -> Reachability:
    """Ping every namespace's address from every other namespace (the diagonal pings itself)."""
    names = tuple(names)
    addresses = tuple(address_of(n) for n in names)
    reached = []
    for src in names:
        row = []
        for address in addresses:
            row.append(address is not None and ping(src, address, count=1, timeout=timeout).ok)
        reached.append(tuple(row))
    return Reachability(names, addresses, tuple(reached))
