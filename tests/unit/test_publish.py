"""`labkit run -p` read as the docker client reads it, and HostConfig.PortBindings checked
(given text only; publishing itself is tested as root in tests/test_container_run.py)."""

from __future__ import annotations

import pytest

from labkit.container import commands, dockerconfig
from labkit.errors import BadInput


@pytest.mark.parametrize(
    "text, key, binding",
    [
        ("80", "80/tcp", {"HostIp": "", "HostPort": ""}),
        ("8080:80", "80/tcp", {"HostIp": "", "HostPort": "8080"}),
        ("8053:53/udp", "53/udp", {"HostIp": "", "HostPort": "8053"}),
        ("10.1.2.3:8080:80", "80/tcp", {"HostIp": "10.1.2.3", "HostPort": "8080"}),
        ("10.1.2.3::80/tcp", "80/tcp", {"HostIp": "10.1.2.3", "HostPort": ""}),
    ],
)
def test_the_forms_docker_takes(text, key, binding):
    assert commands._publish(text) == (key, binding)
    requests = dockerconfig.publish_requests({"PortBindings": {key: [binding]}})
    host_port = int(binding["HostPort"] or 0)  # 0: any free one, chosen at start
    assert requests == [(binding["HostIp"], host_port, int(key.split("/")[0]), key[-3:])]


@pytest.mark.parametrize("text", ["", "http", "80:http", "8000-8010:80", "1:2:3:4", "80/sctp",
                                  "0:80", "70000:80"])  # fmt: skip
def test_a_malformed_one_is_one_sentence(text):
    with pytest.raises(BadInput, match=r"^-p .* is not \[HOST_IP:\]\[HOST_PORT:\]CONTAINER_PORT"):
        commands._publish(text)


@pytest.mark.parametrize(
    "host_ip, words",
    [("127.0.0.1", "is not supported"), ("::1", "is not supported"), ("1.2.3", "not an IP")],
)
def test_host_addresses_labkit_cannot_publish_on_are_refused(host_ip, words):
    with pytest.raises(BadInput, match=words):
        dockerconfig.publish_requests({"PortBindings": {"80/tcp": [{"HostIp": host_ip}]}})
