"""overlayfs against the real kernel: the merged view, copy-up, whiteouts, opaque dirs, errors."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from labkit import overlay
from labkit import sys as ksys
from labkit.errors import BadInput
from labkit.overlay import Overlay


@pytest.fixture
def stack(state_dir):
    """Two lower dirs and an upper below the state dir: lower1 is the top lower."""
    root = state_dir / "ov"
    dirs = {name: root / name for name in ("lower1", "lower2", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir(parents=True)
    lower1, lower2 = dirs["lower1"], dirs["lower2"]
    (lower2 / "only-bottom").write_text("bottom\n")
    (lower2 / "shared").write_text("from lower2\n")
    (lower2 / "dir").mkdir()
    (lower2 / "dir" / "old-1").write_text("old\n")
    (lower2 / "dir" / "old-2").write_text("old\n")
    (lower1 / "shared").write_text("from lower1\n")
    (lower1 / "only-top").write_text("top\n")
    return dirs


def _overlay(d) -> Overlay:
    return Overlay([d["lower1"], d["lower2"]], d["upper"], d["work"], d["merged"])


def test_merged_view_is_the_union_and_the_top_layer_wins(stack):
    with _overlay(stack) as ov:
        assert sorted(os.listdir(ov.merged)) == ["dir", "only-bottom", "only-top", "shared"]
        assert (ov.merged / "shared").read_text() == "from lower1\n"
        assert ov.layer_of("shared") == "lower 0"
        assert ov.layer_of("only-bottom") == "lower 1"
        assert ov.layer_of("missing") == ""
        assert ov.mounted
        assert any(
            o.merged == str(ov.merged) and o.upperdir == str(ov.upperdir)
            for o in overlay.live_overlays()
        )
    assert not ov.mounted


def test_first_write_copies_the_file_up_and_leaves_the_lower_untouched(stack):
    with _overlay(stack) as ov:
        with open(ov.merged / "only-bottom", "a") as f:
            f.write("appended\n")
        assert (stack["upper"] / "only-bottom").read_text() == "bottom\nappended\n"
        assert (stack["lower2"] / "only-bottom").read_text() == "bottom\n"
        assert ov.layer_of("only-bottom") == "upper"
        assert overlay.diff(ov.upperdir, ov.lowerdirs) == [
            overlay.Change("only-bottom", "modified")
        ]


def test_deleting_a_lower_file_leaves_a_whiteout(stack):
    with _overlay(stack) as ov:
        os.unlink(ov.merged / "only-top")
        assert not (ov.merged / "only-top").exists()
        st = os.lstat(stack["upper"] / "only-top")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        assert overlay.is_whiteout(st)
        assert (stack["lower1"] / "only-top").read_text() == "top\n"
        assert ov.layer_of("only-top") == ""
        assert overlay.diff(ov.upperdir, ov.lowerdirs) == [overlay.Change("only-top", "deleted")]


def test_replacing_a_lower_directory_makes_it_opaque(stack):
    with _overlay(stack) as ov:
        for name in os.listdir(ov.merged / "dir"):
            os.unlink(ov.merged / "dir" / name)
        os.rmdir(ov.merged / "dir")
        (ov.merged / "dir").mkdir()
        (ov.merged / "dir" / "new").write_text("new\n")
        assert os.listdir(ov.merged / "dir") == ["new"]
        assert overlay.is_opaque(stack["upper"] / "dir")
        assert sorted(os.listdir(stack["lower2"] / "dir")) == ["old-1", "old-2"]
        assert ov.layer_of("dir/old-1") == ""
        changes = overlay.diff(ov.upperdir, ov.lowerdirs)
        assert changes == [overlay.Change("dir", "opaque"), overlay.Change("dir/new", "added")]


def test_a_new_file_is_added_and_its_copied_up_parent_is_no_change(stack):
    with _overlay(stack) as ov:
        (ov.merged / "dir" / "fresh").write_text("x\n")
        (ov.merged / "newdir").mkdir()
        assert (stack["upper"] / "dir").is_dir()
        assert overlay.diff(ov.upperdir, ov.lowerdirs) == [
            overlay.Change("dir/fresh", "added"),
            overlay.Change("newdir", "added"),
        ]


def test_without_an_upper_dir_the_mount_is_read_only(stack):
    with Overlay([stack["lower1"], stack["lower2"]], merged=stack["merged"]) as ov:
        assert ov.read_only
        with pytest.raises(OSError) as e:
            (ov.merged / "new").write_text("x")
        assert e.value.errno == errno.EROFS


def test_explicit_mount_and_unmount_and_the_work_dir_can_be_used_again(stack):
    ov = _overlay(stack).mount()
    (ov.merged / "a").write_text("1\n")
    ov.unmount()
    assert not ov.mounted
    assert os.listdir(stack["work"]) == ["work"]  # what the kernel leaves behind
    with _overlay(stack) as again:
        assert (again.merged / "a").read_text() == "1\n"


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: {"lowerdirs": [d["lower1"], d["ov"] / "nope"]}, "does not exist"),
        (lambda d: {"merged": d["ov"] / "nope"}, "does not exist"),
        (lambda d: {"workdir": None}, "go together"),
        (lambda d: {"lowerdirs": []}, "at least one lowerdir"),
        (lambda d: {"lowerdirs": [d["lower1"]], "upperdir": None, "workdir": None}, "at least two"),
        (lambda d: {"workdir": d["upper"]}, "different directory"),
    ],
)
def test_invalid_combinations_are_refused_with_one_sentence(stack, change, words):
    d = dict(stack, ov=stack["lower1"].parent)
    args = {
        "lowerdirs": [d["lower1"], d["lower2"]],
        "upperdir": d["upper"],
        "workdir": d["work"],
        "merged": d["merged"],
    }
    args.update(change(d))
    with pytest.raises(BadInput, match=words):
        Overlay(**args).mount()
    assert not any(o.merged == str(stack["merged"]) for o in overlay.live_overlays())


def test_a_work_dir_that_is_not_empty_is_refused(stack):
    (stack["work"] / "junk").write_text("x")
    with pytest.raises(BadInput, match="not empty"):
        _overlay(stack).mount()


def test_a_work_dir_on_another_filesystem_is_refused(stack):
    other = stack["lower1"].parent / "tmpfs"
    other.mkdir()
    ksys.mount("tmpfs", str(other), "tmpfs", 0, "size=1m")
    try:
        with pytest.raises(BadInput, match="another filesystem"):
            Overlay(
                [stack["lower1"], stack["lower2"]], stack["upper"], other, stack["merged"]
            ).mount()
    finally:
        ksys.umount2(str(other))


def test_an_upper_dir_in_use_by_a_live_mount_is_refused(stack):
    second = stack["lower1"].parent / "merged2"
    second.mkdir()
    work2 = stack["lower1"].parent / "work2"
    work2.mkdir()
    with _overlay(stack):
        with pytest.raises(BadInput, match="in use by the overlay mounted at"):
            Overlay([stack["lower2"]], stack["upper"], work2, second).mount()
        with pytest.raises(BadInput, match="already a mount point"):
            _overlay(stack).mount()


def test_a_path_with_a_colon_is_refused(stack):
    odd = stack["lower1"].parent / "a:b"
    odd.mkdir()
    with pytest.raises(BadInput, match="cannot carry"):
        Overlay([odd, stack["lower2"]], stack["upper"], stack["work"], stack["merged"]).mount()


def test_workspace_is_below_the_state_dir(state_dir):
    upper, work, merged = overlay.workspace("lab")
    assert all(p.is_dir() and state_dir in p.parents for p in (upper, work, merged))
    with pytest.raises(BadInput):
        overlay.workspace("../escape")


# --- the lesson's checks and picture (labkit.lab.layers) --------------------------------------


def test_check_whiteout_path_grades_the_upper_dir(stack):
    from labkit.lab import layers as lab

    with _overlay(stack) as ov:
        assert "replace the ..." in str(lab.check_whiteout_path(..., ov))
        assert not lab.check_whiteout_path(stack["upper"] / "shared", ov).ok  # nothing deleted yet
        os.unlink(ov.merged / "shared")
        (ov.merged / "fresh").write_text("x\n")
        assert lab.check_whiteout_path(stack["upper"] / "shared", ov).ok
        assert not lab.check_whiteout_path(stack["lower1"] / "shared", ov).ok
        wrong = lab.check_whiteout_path(stack["upper"] / "fresh", ov)
        assert not wrong.ok and "no whiteout" in wrong.message


def test_check_layer_order_mounts_the_answer(stack):
    from labkit.lab import layers as lab

    lowers = {"lower1": stack["lower1"], "lower2": stack["lower2"]}
    assert "replace the ..." in str(lab.check_layer_order(..., lowers, "shared", "from lower2"))
    assert lab.check_layer_order(
        [stack["lower2"], stack["lower1"]], lowers, "shared", "from lower2"
    ).ok
    wrong = lab.check_layer_order(
        [stack["lower1"], stack["lower2"]], lowers, "shared", "from lower2"
    )
    assert not wrong.ok and "leftmost" in wrong.hint
    assert not lab.check_layer_order([stack["lower1"]], lowers, "shared", "from lower2").ok
    assert not lab.check_layer_order(42, lowers, "shared", "from lower2").ok
    assert not (stack["lower1"].parent.parent / "lessons").exists()


def test_stack_table_shows_each_layer_and_the_source(stack):
    from labkit.lab import layers as lab

    with _overlay(stack) as ov:
        os.unlink(ov.merged / "only-top")
        columns, paths, rows = lab.stack_table(ov)
    assert columns == ["lower2 (lower 1)", "lower1 (lower 0)", "upper", "merged"]
    table = dict(zip(paths, rows))
    assert table["only-top"] == ["", "file", "whiteout", ""]
    assert table["shared"] == ["file", "file", "", "from lower 0"]
    assert table["dir/old-1"] == ["file", "", "", "from lower 1"]


def test_copy_up_costs_more_for_a_bigger_file(state_dir):
    from labkit.lab import layers as lab

    where = lab.lesson_dir("test-copy-up")
    try:
        small, big = lab.measure_copy_up([1, 64], where)
    finally:
        lab.remove_lesson_dir("test-copy-up")
    assert big.first_write > small.first_write
    assert big.first_write > big.second_write
