"""What lesson 30-network needs: the exercise checks, the plots, and the rate experiment."""

from __future__ import annotations

from dataclasses import dataclass

from .. import network, traffic
from .checks import Verdict, graded, not_done, verdict

# --- exercise checks -----------------------------------------------------------------------------


@graded
def check_new_netns_links(answer) -> Verdict:
    """30: the names of the interfaces a brand-new network namespace holds (a list of names)."""
    if answer is ...:
        return not_done("new namespace")
    name = "labkit-check-fresh"
    if name in network.netns_list():
        network.netns_delete(name)
    network.netns_add(name)
    try:
        found = [link.ifname for link in network.links(name)]
    finally:
        network.netns_delete(name)
    try:
        given = sorted(answer) if not isinstance(answer, str) else [answer]
    except TypeError:
        given = None
    return verdict(
        given == sorted(found),
        f"new namespace: it holds only {', '.join(found)}, and that one is down.",
        f"new namespace: {answer!r} is not what a new network namespace holds.",
        "create one with network.netns_add('labkit-x') and list network.links('labkit-x').",
    )


@graded
def check_plugged_in(answer, other: str) -> Verdict:
    """30: *answer* is a namespace plugged into the bridge, so that it reaches *other*."""
    if answer is ...:
        return not_done("plugged in")
    name = getattr(answer, "netns", answer)  # an Endpoint from connect(), or the namespace's name
    if not isinstance(name, str) or name not in network.netns_list():
        return Verdict(
            False,
            f"plugged in: {answer!r} is not a labkit network namespace.",
            "give the namespace's name, e.g. 'labkit-c', or what connect() returned.",
        )
    to_other, from_other = traffic.address_of(other), traffic.address_of(name)
    if from_other is None:
        return Verdict(
            False,
            f"plugged in: {name} has no address: it is not plugged in.",
            f"network.connect(bridge, {name!r}) gives it a veth, an address and a route.",
        )
    ok = traffic.ping(name, to_other).ok and traffic.ping(other, from_other).ok
    return verdict(
        ok,
        f"plugged in: {name} ({from_other}) and {other} ({to_other}) reach each other.",
        f"plugged in: {name} and {other} do not reach each other.",
        "plug both into the same bridge; its subnet must be the one both addresses are on.",
    )


MIB = 1 << 20  # sizes are in MiB (2**20 bytes) across the course; tc's rates are in bits/s


@graded
def check_rate_for_bytes(
    answer,
    sender: network.Endpoint,
    receiver: network.Endpoint,
    target_mib: float = 2.0,
    tries: int = 3,
) -> Verdict:
    """30: a tbf rate (Mbit/s) with which a stream delivers about *target_mib* MiB a second.

    tbf never lets more than its rate through, but a busy machine can make a measurement fall
    short (a sender that is not scheduled for 100 ms loses those 100 ms of tokens: the bucket
    holds only 5 ms). So the best of up to *tries* one-second measurements is the one judged.
    """
    if answer is ...:
        return not_done("rate")
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) or answer <= 0:
        return Verdict(
            False, f"rate: {answer!r} is not a rate in Mbit/s.", "give a number, e.g. 10."
        )

    def near(mib: float) -> bool:
        return abs(mib - target_mib) <= 0.2 * target_mib

    got_mib = 0.0
    traffic.shape(receiver.host_ifname, rate_mbit=answer)
    try:
        for _ in range(tries):
            measured = traffic.throughput(
                sender.netns, receiver.netns, str(receiver.address.ip), 1.0
            )
            got_mib = max(got_mib, measured.mbit_per_s * 1e6 / 8 / MIB)
            if near(got_mib) or got_mib > 1.2 * target_mib:
                break  # judged: more tries could only deliver more
    finally:
        traffic.unshape(receiver.host_ifname)
    return verdict(
        near(got_mib),
        f"rate: {answer:g} Mbit/s delivered about {target_mib:g} MiB a second.",
        f"rate: {answer:g} Mbit/s delivered {got_mib:.2f} MiB a second, "
        f"not about {target_mib:g} MiB.",
        "a byte is 8 bits, a MiB is 1,048,576 bytes and a Mbit is 1,000,000 bits "
        "(tc's M is decimal); TCP/IP headers take a few percent of the rate.",
    )


# --- the rate experiment -------------------------------------------------------------------------


@dataclass(frozen=True)
class RateResult:
    """Throughput and round trip under load, without a limit and with one (None: unlimited)."""

    limit_mbit: float | None
    mbit_per_s: float
    loaded_rtt_ms: float


def measure(
    sender: network.Endpoint,
    receiver: network.Endpoint,
    limit_mbit: float | None,
    seconds: float = 1.0,
) -> RateResult:
    """Stream from *sender* to *receiver* with *limit_mbit* on the receiver's host end."""
    if limit_mbit is not None:
        traffic.shape(receiver.host_ifname, rate_mbit=limit_mbit)
    try:
        rtt, tp = traffic.latency_under_load(
            sender.netns, receiver.netns, str(receiver.address.ip), seconds=seconds
        )
    finally:
        traffic.unshape(receiver.host_ifname)
    return RateResult(limit_mbit, tp.mbit_per_s, rtt)


def summary(results: list[RateResult]) -> str:
    """One deterministic line per limited result: how close it came to its limit."""
    free = next((r for r in results if r.limit_mbit is None), None)
    lines = []
    for r in results:
        if r.limit_mbit is None:
            continue
        # The limit's promise is a ceiling: a slow machine (software emulation) may not reach
        # it, but no stream may pass it by more than tbf's bucket lets through.
        held = r.mbit_per_s <= 1.15 * r.limit_mbit
        lines.append(
            f"limit {r.limit_mbit:g} Mbit/s: the stream stayed under it (15% slack): "
            f"{'yes' if held else 'no'}"
        )
        if free is not None:
            lines.append(
                f"  without a limit the stream is over 10 times faster: "
                f"{'yes' if free.mbit_per_s > 10 * r.mbit_per_s else 'no'}"
            )
            lines.append(
                f"  the round trip under load grows with the limit's queue: "
                f"{'yes' if r.loaded_rtt_ms > free.loaded_rtt_ms else 'no'}"
            )
    return "\n".join(lines)


def plot_rates(results: list[RateResult]):
    """Bars: throughput (log scale) and round trip under load, per limit."""
    import matplotlib.pyplot as plt

    labels = ["no limit" if r.limit_mbit is None else f"{r.limit_mbit:g} Mbit/s" for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    _ = left.bar(labels, [r.mbit_per_s for r in results], color="tab:blue")
    for i, r in enumerate(results):  # the asked-for rate, as a dashed line over its bar
        if r.limit_mbit is not None:
            _ = left.hlines(r.limit_mbit, i - 0.45, i + 0.45, colors="black", linestyles="dashed")
    left.set_yscale("log")
    left.set_ylabel("throughput (Mbit/s)")
    left.set_title("TCP stream between two namespaces")
    _ = right.bar(labels, [r.loaded_rtt_ms for r in results], color="tab:orange")
    right.set_ylabel("round trip under load (ms)")
    right.set_title("ping while the stream runs")
    fig.tight_layout()
    return fig


def rate_experiment(sender: network.Endpoint, receiver: network.Endpoint, value: int = 20):
    """A slider for the tc limit; moving it re-measures and redraws (into an Output widget)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    slider = widgets.IntSlider(
        value=value, min=1, max=200, step=1, description="limit Mbit/s", continuous_update=False
    )
    out = widgets.Output()

    def redraw(_change=None) -> None:
        results = [measure(sender, receiver, None), measure(sender, receiver, slider.value)]
        with out:
            out.clear_output(wait=True)
            print(summary(results))
            plot_rates(results)
            plt.show()

    slider.observe(redraw, names="value")
    return slider, widgets.VBox([slider, out]), redraw


# --- the reachability grid -----------------------------------------------------------------------


def plot_reachability(grid: traffic.Reachability, title: str = "who reaches whom (ping)"):
    """The reachability matrix as a grid: green where the row's namespace reached the column's."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n = len(grid.names)
    short = [name.removeprefix(network.NETNS_PREFIX) for name in grid.names]
    fig, ax = plt.subplots(figsize=(1.2 * n + 1.5, 1.2 * n + 0.8))
    values = [[1 if ok else 0 for ok in row] for row in grid.reached]
    _ = ax.imshow(values, cmap=ListedColormap(["#e8a0a0", "#8fd18f"]), vmin=0, vmax=1)
    for i, row in enumerate(grid.reached):
        for j, ok in enumerate(row):
            _ = ax.text(j, i, "yes" if ok else "no", ha="center", va="center")
    ax.set_xticks(range(n), [f"{s}\n{a or 'no address'}" for s, a in zip(short, grid.addresses)])
    ax.set_yticks(range(n), short)
    ax.set_xlabel("to")
    ax.set_ylabel("from")
    ax.set_title(title)
    fig.tight_layout()
    return fig


# --- the lesson's own resources ------------------------------------------------------------------

LESSON_NETNS = ("labkit-a", "labkit-b", "labkit-c", "labkit-d")
LESSON_BRIDGE = "lk0"
LESSON_VETH = "lka"


def host_connect(address: str, port: int, timeout: float = 2.0) -> str:
    """Connect from this host's own network namespace; say what happened, in one word or two."""
    import socket

    try:
        with socket.create_connection((str(address), port), timeout=timeout):
            return "connected"
    except ConnectionRefusedError:
        return "refused (nothing listens there)"
    except OSError as e:
        return f"failed ({e.strerror or e})"


def clean_lesson() -> list[str]:
    """Remove what lesson 30 made (its namespaces, its bridge and its rules); say what went."""
    removed = []
    host = {link.ifname for link in network.links()}
    if any(rule.comment.startswith(f"{LESSON_BRIDGE}: ") for rule in network.rules()):
        network.rules_delete(LESSON_BRIDGE)
        removed.append(f"nftables rules of {LESSON_BRIDGE}")
    for name in LESSON_NETNS:
        if name in network.netns_list():
            network.netns_delete(name)  # its veth goes with it
            removed.append(f"netns {name}")
    for ifname in (LESSON_VETH, LESSON_BRIDGE):
        if ifname in host and ifname in {link.ifname for link in network.links()}:
            network.link_delete(ifname)
            removed.append(f"link {ifname}")
    return removed


def lesson_leftovers() -> list[str]:
    """What of lesson 30's namespaces, interfaces and rules is still there."""
    ours = {*LESSON_NETNS, LESSON_BRIDGE, LESSON_VETH, f"{LESSON_BRIDGE}:"}
    return [line for line in network.leftovers() if ours & set(line.split())]
