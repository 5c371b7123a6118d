"""The container's resolv.conf and hosts as Docker writes them, from given text (no root)."""

from __future__ import annotations

from labkit.container import etcfiles

HOST = """# a comment
search lab.example
nameserver 127.0.0.53
nameserver 127.1.2.3
nameserver ::1
nameserver fe80::1%eth0
nameserver 10.0.0.2
options edns0 trust-ad
"""


def test_loopback_and_ipv6_name_servers_are_removed_the_rest_kept():
    assert etcfiles.resolv_conf(HOST) == (
        "# a comment\nsearch lab.example\nnameserver 10.0.0.2\noptions edns0 trust-ad\n"
    )


def test_none_left_adds_no_public_server_but_says_why():
    text = etcfiles.resolv_conf("search lab\nnameserver 127.0.0.53\n")
    assert not [line for line in text.splitlines() if line.startswith("nameserver")]
    assert "8.8.8.8" not in text and text.startswith("search lab\n# labkit: ")


def test_an_empty_host_file_gives_an_empty_one():
    assert etcfiles.resolv_conf("") == ""


def test_hosts_has_the_hostname_only_with_an_address():
    assert etcfiles.hosts("box").splitlines()[0] == "127.0.0.1\tlocalhost"
    assert "box" not in etcfiles.hosts("box")
    assert etcfiles.hosts("box", "10.9.0.2").endswith("ff02::2\tip6-allrouters\n10.9.0.2\tbox\n")
