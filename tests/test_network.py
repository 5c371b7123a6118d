"""labkit.network and labkit.traffic against the real kernel: namespaces, veth, bridge, NAT, tc.

Every packet goes between namespaces these tests made (or to this host's own addresses). Names
carry this process's id (``labkit-tn<pid>x``, ``lktn<pid>x``) so that concurrent runs do not meet.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from labkit import cli, network, traffic
from labkit.errors import BadInput, MissingFeature
from labkit.lab import network as lab

TAG = f"tn{os.getpid() % 100000}"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def ns(x: str) -> str:
    return f"labkit-{TAG}{x}"


BRIDGE = f"lk{TAG}br"


@pytest.fixture
def made():
    """Remove what a test made through the public API, whatever happened in it."""
    names: list[str] = []
    yield names
    network.rules_delete(BRIDGE)
    for name in names:
        if name.startswith(network.NETNS_PREFIX) and name in network.netns_list():
            network.netns_delete(name)
    if any(link.ifname == BRIDGE for link in network.links()):
        network.link_delete(BRIDGE)


@pytest.fixture
def two(made):
    """A bridge with two namespaces plugged in: (bridge, endpoint a, endpoint b)."""
    made += [ns("a"), ns("b")]
    br = network.bridge_add(BRIDGE)
    endpoints = []
    for x in "ab":
        network.netns_add(ns(x))
        endpoints.append(network.connect(br, ns(x)))
    return br, *endpoints


# --- isolation and wiring -------------------------------------------------------------------


def test_a_new_netns_holds_only_lo_and_outlives_its_creator(made):
    made.append(ns("a"))
    # Made by a process that exits at once: the bind mount in /run/netns keeps it alive.
    code = f"from labkit import network; network.netns_add({ns('a')!r})"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert ns("a") in network.netns_list()
    inside = network.links(ns("a"))
    assert [(link.ifname, link.state, link.addresses) for link in inside] == [("lo", "DOWN", [])]
    # An interface made on the host now does not show up inside either.
    network.bridge_add(BRIDGE)
    assert BRIDGE in {link.ifname for link in network.links()}
    assert [link.ifname for link in network.links(ns("a"))] == ["lo"]
    assert os.stat(network.netns_path(ns("a"))).st_ino != os.stat("/proc/self/ns/net").st_ino
    network.netns_delete(ns("a"))
    assert ns("a") not in network.netns_list()


def test_veth_pair_joins_a_namespace_to_the_host(made):
    made.append(ns("a"))
    network.netns_add(ns("a"))
    subnet = network.free_subnet(30)
    host_ip, inner_ip = list(subnet.hosts())
    link = network.veth_add(f"lk{TAG}a", ns("a"), peer="eth0")
    assert link.kind == "veth"
    network.addr_add(link.ifname, f"{host_ip}/30")
    network.link_up(link.ifname)
    network.addr_add("eth0", f"{inner_ip}/30", ns("a"))
    network.link_up("eth0", ns("a"))
    inside = {lk.ifname: lk for lk in network.links(ns("a"))}
    assert inside["eth0"].addresses == [f"{inner_ip}/30"]
    result = traffic.ping(ns("a"), str(host_ip), count=2)
    assert (result.sent, result.received) == (2, 2) and result.rtt_ms > 0
    network.netns_delete(ns("a"))  # its veth end goes with it, and takes the host end along
    assert f"lk{TAG}a" not in {lk.ifname for lk in network.links()}


def test_a_bridge_connects_namespaces_and_only_them(two, made):
    br, a, b = two
    assert a.address.network == b.address.network == br.subnet
    assert a.address.ip != b.address.ip and br.gateway not in (a.address.ip, b.address.ip)
    ports = {lk.ifname: lk.master for lk in network.links() if lk.master == BRIDGE}
    assert ports == {a.host_ifname: BRIDGE, b.host_ifname: BRIDGE}
    assert traffic.tcp_connect(ns("a"), ns("b"), str(b.address.ip), port=7)
    # A third namespace with no cable reaches no one, and no one reaches it.
    made.append(ns("c"))
    network.netns_add(ns("c"))
    grid = traffic.reachability([ns("a"), ns("b"), ns("c")], timeout=1)
    assert grid.reached == ((True, True, False), (True, True, False), (False, False, False))
    network.connect(br, ns("c"))
    grid = traffic.reachability([ns("a"), ns("b"), ns("c")], timeout=1)
    assert all(all(row) for row in grid.reached), str(grid)


def test_tcp_connect_to_a_port_nobody_listens_on_fails(two):
    _, _, b = two
    sock = traffic.socket_in(ns("a"))
    with sock:
        sock.settimeout(2)
        with pytest.raises(ConnectionRefusedError):
            sock.connect((str(b.address.ip), 9))


# --- tc -------------------------------------------------------------------------------------


@pytest.mark.host_timing
def test_tbf_limits_the_rate_within_15_percent(two):
    _, a, b = two
    free = traffic.throughput(ns("a"), ns("b"), str(b.address.ip), seconds=0.5)
    rate = 40.0
    assert free.mbit_per_s > 3 * rate, f"unshaped veth only carried {free}"
    shaped = traffic.shape(b.host_ifname, rate_mbit=rate)
    assert shaped.rate_mbit == pytest.approx(rate, rel=0.01)
    limited = traffic.throughput(ns("a"), ns("b"), str(b.address.ip), seconds=1.5)
    assert limited.mbit_per_s == pytest.approx(rate, rel=0.15), str(limited)
    # The other direction leaves through b's own end, which is not shaped.
    back = traffic.throughput(ns("b"), ns("a"), str(a.address.ip), seconds=0.5)
    assert back.mbit_per_s > 3 * rate
    traffic.unshape(b.host_ifname)
    assert traffic.shaping(b.host_ifname).rate_mbit is None


def test_netem_delay_or_a_clear_refusal(two):
    _, _, b = two
    before = traffic.latency(ns("a"), str(b.address.ip), count=3)
    try:
        shaped = traffic.shape(b.host_ifname, rate_mbit=50, delay_ms=30)
    except MissingFeature as e:  # this kernel was built without CONFIG_NET_SCH_NETEM
        assert "netem" in str(e)
        assert traffic.shaping(b.host_ifname).rate_mbit is None  # the tbf was taken back
        return
    assert shaped.delay_ms == pytest.approx(30, rel=0.01)
    after = traffic.latency(ns("a"), str(b.address.ip), count=3)
    assert after - before == pytest.approx(30, abs=10)  # only the way in to b is delayed


def test_netem_alone_is_added_and_removed(two):
    """netem as the root qdisc (a delay with no rate), then removed: the default comes back."""
    _, _, b = two
    try:
        shaped = traffic.shape(b.host_ifname, delay_ms=20)
    except MissingFeature as e:  # this kernel was built without CONFIG_NET_SCH_NETEM
        assert "netem" in str(e)
        assert traffic.shaping(b.host_ifname) == traffic.Shaping(b.host_ifname, None, None)
        return
    assert shaped.delay_ms == pytest.approx(20, rel=0.01) and shaped.rate_mbit is None
    traffic.unshape(b.host_ifname)
    assert traffic.shaping(b.host_ifname) == traffic.Shaping(b.host_ifname, None, None)


# --- NAT and published ports ----------------------------------------------------------------


def test_published_port_reaches_the_namespace_from_the_host(two):
    br, a, b = two
    published = network.publish(br, 18080, str(b.address.ip), 80)
    assert {r.chain for r in published} == {"prerouting", "output"}
    with traffic.listen(ns("b"), str(b.address.ip), 80) as listener:
        listener.settimeout(5)
        # From the host's own network namespace to its own address on the bridge.
        with socket.create_connection((str(br.gateway), 18080), timeout=5) as client:
            conn, (peer, _) = listener.accept()
            with conn:
                client.sendall(b"hello")
                assert conn.recv(5) == b"hello"
    assert ipaddress.ip_address(peer) == br.gateway  # the host connected, through DNAT to :80
    with pytest.raises(BadInput, match="published already"):
        network.publish(br, 18080, str(a.address.ip), 80)
    network.rules_delete(BRIDGE)
    assert not [r for r in network.rules() if r.comment.startswith(f"{BRIDGE}: ")]


def test_nat_turns_forwarding_on_and_restores_it(two, state_dir):
    br, _, _ = two
    before = IP_FORWARD.read_text()
    rule = network.nat_add(br)
    assert rule.chain == "postrouting" and str(br.subnet) in rule.comment
    assert str(rule) in network.leftovers()
    assert IP_FORWARD.read_text().strip() == "1"
    network.bridge_delete(BRIDGE)
    assert IP_FORWARD.read_text() == before
    assert not [line for line in network.leftovers() if BRIDGE in line or "ip_forward" in line]


def test_cleanup_finds_and_removes_all_of_it(monkeypatch, state_dir):
    # Confine clean-up to this test's own names, so that it cannot touch a concurrent run's.
    monkeypatch.setattr(network, "NETNS_PREFIX", f"labkit-{TAG}")
    monkeypatch.setattr(network, "LINK_PREFIX", f"lk{TAG}")
    monkeypatch.setattr(network, "NFT_TABLE", f"labkit_{TAG}")
    before = IP_FORWARD.read_text()
    br = network.bridge_add(BRIDGE)
    for x in "ab":
        network.netns_add(ns(x))
    ep = network.connect(br, ns("a"), ifname="eth1")
    network.publish(br, 18081, str(ep.address.ip), 80)
    network.nat_add(br)
    found = network.leftovers()
    assert {
        f"netns: {ns('a')}",
        f"netns: {ns('b')}",
        f"link: {BRIDGE} (bridge)",
        f"link: {ep.host_ifname} (veth)",
    } <= set(found)
    assert sum(line.startswith("nft ") for line in found) == 3
    network.remove_leftovers()
    assert network.leftovers() == []
    assert IP_FORWARD.read_text() == before


# --- bad input ------------------------------------------------------------------------------


def test_bad_names_are_refused_and_change_nothing(made):
    made.append(ns("a"))
    before = network.leftovers()
    with pytest.raises(BadInput, match="at most 15"):
        network.bridge_add("lk" + "x" * 14)
    with pytest.raises(BadInput, match="must start with 'lk'"):
        network.bridge_add("br0")
    with pytest.raises(BadInput, match="must start with 'labkit-'"):
        network.netns_add("blue")
    network.netns_add(ns("a"))
    with pytest.raises(BadInput, match="at most 15"):
        network.veth_add(f"lk{TAG}a", ns("a"), peer="a-very-long-name")
    with pytest.raises(BadInput, match="exists already"):
        network.netns_add(ns("a"))
    with pytest.raises(BadInput, match="too long to name its veth"):
        network.host_ifname_for("labkit-" + "x" * 14)
    network.netns_delete(ns("a"))
    assert network.leftovers() == before


def test_an_overlapping_subnet_is_refused(made):
    before = network.leftovers()
    route = network.host_routes()[0]  # the host always has one at least (127.0.0.0/8 on lo)
    inside = next(route.subnets(new_prefix=max(route.prefixlen, 29)))
    with pytest.raises(BadInput, match=f"overlaps the host's route to {route}"):
        network.bridge_add(BRIDGE, subnet=str(inside))
    with pytest.raises(BadInput, match="not an IPv4 network"):
        network.bridge_add(BRIDGE, subnet="10.203.300.0/24")
    default = network.free_subnet()
    assert not any(default.overlaps(r) for r in network.host_routes())
    assert network.leftovers() == before


def test_a_namespace_that_does_not_exist_is_refused(two):
    br, a, b = two
    missing = ns("zz")
    for call in (
        lambda: network.links(missing),
        lambda: network.netns_delete(missing),
        lambda: network.connect(br, missing),
        lambda: traffic.ping(missing, str(a.address.ip)),
        lambda: traffic.throughput(ns("a"), missing, str(b.address.ip)),
    ):
        with pytest.raises(BadInput, match=f"{missing!r} does not exist"):
            call()
    with pytest.raises(BadInput, match="not an address of"):
        traffic.tcp_connect(ns("a"), ns("b"), str(a.address.ip))
    with pytest.raises(BadInput, match="not on"):
        network.connect(br, ns("a"), address="192.168.250.2/24")


def test_bad_shaping_is_refused(two):
    _, _, b = two
    for kwargs in ({}, {"rate_mbit": 0}, {"rate_mbit": -5}, {"delay_ms": "lots"}):
        with pytest.raises(BadInput):
            traffic.shape(b.host_ifname, **kwargs)
    assert traffic.shaping(b.host_ifname).rate_mbit is None


# --- the command line -----------------------------------------------------------------------


def test_cli_builds_and_removes_a_network(made, capsys):
    made += [ns("a")]
    assert cli.main(["net", "add", ns("a")]) == 0
    assert cli.main(["net", "bridge", BRIDGE]) == 0
    assert cli.main(["net", "connect", BRIDGE, ns("a")]) == 0
    assert cli.main(["net", "list"]) == 0
    out = capsys.readouterr().out
    assert ns("a") in out and BRIDGE in out
    assert cli.main(["net", "shape", f"lk{TAG}a", "--rate", "10"]) == 0
    assert "rate 10 Mbit/s" in capsys.readouterr().out
    assert cli.main(["net", "add", "blue"]) == 2
    assert "must start with 'labkit-'" in capsys.readouterr().err
    assert cli.main(["net", "delete", ns("a")]) == 0
    assert cli.main(["net", "delete", BRIDGE]) == 0
    assert ns("a") not in network.netns_list()


# --- exercise checks ------------------------------------------------------------------------


def test_check_new_netns_links():
    assert not lab.check_new_netns_links(...).ok
    assert lab.check_new_netns_links(["lo"]).ok
    assert not lab.check_new_netns_links(["lo", "eth0"]).ok


def test_check_plugged_in(two, made):
    br, _, _ = two
    made.append(ns("c"))
    network.netns_add(ns("c"))
    assert "replace the ..." in lab.check_plugged_in(..., ns("a")).message
    wrong = lab.check_plugged_in(ns("c"), ns("a"))  # not connected yet
    assert not wrong.ok and wrong.hint
    network.connect(br, ns("c"))
    assert lab.check_plugged_in(ns("c"), ns("a")).ok


@pytest.mark.host_timing
def test_check_rate_for_bytes(two):
    _, a, b = two
    assert not lab.check_rate_for_bytes(..., a, b).ok
    good = lab.check_rate_for_bytes(17, a, b)  # 2 MiB/s is 16.8 Mbit/s, plus headers
    assert good.ok, str(good)
    for wrong in (4, 40):  # too slow, and too fast: each fails, best of three tries or not
        bad = lab.check_rate_for_bytes(wrong, a, b)
        assert not bad.ok and "MiB" in bad.message, str(bad)
    assert traffic.shaping(b.host_ifname).rate_mbit is None  # the check leaves it unshaped


def test_sender_thread_is_not_left_running(two):
    _, _, b = two
    threads = threading.active_count()
    traffic.throughput(ns("a"), ns("b"), str(b.address.ip), seconds=0.2)
    assert threading.active_count() == threads


def test_rate_experiment_slider_re_measures(two, capsys):
    _, a, b = two
    slider, _box, _redraw = lab.rate_experiment(a, b, value=20)
    capsys.readouterr()
    slider.value = 10  # as a student moving the slider: measures again, with 10 Mbit/s
    text = capsys.readouterr().out  # outside a notebook kernel, the Output widget prints here
    assert "limit 10 Mbit/s: the stream stayed under it (15% slack): yes" in text, text
    assert traffic.shaping(b.host_ifname).rate_mbit is None
