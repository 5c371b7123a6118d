"""-u NAME read from the image's /etc/passwd and /etc/group, which are hostile (no root)."""

from __future__ import annotations

import os
import threading

import pytest

from labkit.container import dockerconfig
from labkit.container.spec import User
from labkit.errors import BadInput

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nstaff:x:50:\n"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


def test_names_and_numbers_are_dockers(root):
    assert dockerconfig.user(str(root), "") == User(0, 0)
    assert dockerconfig.user(str(root), "nobody") == User(65534, 65534)
    assert dockerconfig.user(str(root), "nobody:staff") == User(65534, 50)
    assert dockerconfig.user(str(root), "1000") == User(1000, 0)
    assert dockerconfig.user(str(root), "1000:7") == User(1000, 7)
    with pytest.raises(BadInput, match="no matching entries in /etc/passwd"):
        dockerconfig.user(str(root), "alice")
    with pytest.raises(BadInput, match="no matching entries in /etc/group"):
        dockerconfig.user(str(root), "nobody:wheel")


def test_an_absolute_symlink_is_followed_inside_the_root(root):
    # /etc/passwd -> /etc/real-passwd: the image's file, never the host's of that name.
    (root / "etc/real-passwd").write_text("nobody:x:7:8::/:/bin/sh\n")
    (root / "etc/passwd").unlink()
    (root / "etc/passwd").symlink_to("/etc/real-passwd")
    assert dockerconfig.user(str(root), "nobody") == User(7, 8)
    (root / "etc/passwd").unlink()
    (root / "etc/passwd").symlink_to("/../../../../etc/passwd")  # climbs no higher than the root
    (root / "etc/real-passwd").rename(root / "etc/passwd-target")
    with pytest.raises(BadInput, match="cannot be read"):
        dockerconfig.user(str(root), "root")


def test_a_fifo_is_refused_without_blocking(root):
    (root / "etc/passwd").unlink()
    os.mkfifo(root / "etc/passwd")
    said = []

    def look() -> None:
        try:
            dockerconfig.user(str(root), "nobody")
        except BadInput as e:
            said.append(str(e))

    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "opening the image's FIFO blocked"
    assert said and "not a regular file" in said[0]


def test_a_huge_file_is_refused(root):
    with open(root / "etc/passwd", "ab") as f:
        f.truncate(dockerconfig.ETC_FILE_LIMIT + 1)
    with pytest.raises(BadInput, match="is over 4 MiB"):
        dockerconfig.user(str(root), "nobody")
