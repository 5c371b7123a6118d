"""The package's floors, read from its source: an import never points up a floor, the core never
imports labkit.lab, and no module uses another module's private names (CONTRIBUTING.md)."""

from __future__ import annotations

import ast
from pathlib import Path

from labkit import FLOORS

PACKAGE = Path(__file__).resolve().parents[2] / "labkit"

FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield path, list(rel.parts)  # ["labkit", "cgroups", "v1"]


def imported(path: Path, parts: list[str], source: str | None = None):
    """(top-level labkit module, names taken from it, line) for each use of labkit code: the
    names of ``from labkit.x import a, b`` and the attributes read as ``x.a`` of a module x
    imported by name."""
    package = parts[:-1]
    tree = ast.parse(source if source is not None else path.read_text(), str(path))
    aliases = {}  # local name -> the labkit module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            top = package[: len(package) - node.level + 1] if node.level else []
            if (node.level and not node.module and top == ["labkit"]) or node.module == "labkit":
                for a in node.names:  # from labkit import x / from .. import x: modules
                    aliases[a.asname or a.name] = a.name
            elif node.module and (top == ["labkit"] or node.module.startswith("labkit.")):
                module = node.module.removeprefix("labkit.").split(".")[0]
                for a in node.names:  # from ..cgroups import layout, Cgroup
                    aliases[a.asname or a.name] = module
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            yield aliases[node.value.id], [node.attr], node.lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "labkit":
                target = node.module.split(".")
            else:
                continue
            names = [a.name for a in node.names]
            if len(target) == 1:  # from labkit import x, y: each a module
                for name in names:
                    yield name, [], node.lineno
            else:
                yield target[1], names if len(target) >= 2 else [], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name.split(".")
                if target[0] == "labkit" and len(target) > 1:
                    yield target[1], [], node.lineno


def test_the_checks_find_what_they_look_for():
    planted = (
        "from .lab import doctor\n"
        "from . import layers\n"
        "from .network import _index\n"
        "layers._clean_name('x')\n"
    )
    found = list(imported(PACKAGE / "cli.py", ["labkit", "cli"], planted))
    assert ("lab", ["doctor"], 1) in found and ("network", ["_index"], 3) in found
    assert ("layers", ["_clean_name"], 4) in found


def test_every_module_has_a_floor():
    tops = {parts[1] for _path, parts in modules() if parts[1] != "__init__"}
    assert tops <= set(FLOOR), f"give {sorted(tops - set(FLOOR))} a floor in FLOORS above"


def test_no_import_points_up_a_floor():
    wrong = []
    for path, parts in modules():
        if len(parts) < 2 or parts[1] not in FLOOR:
            continue
        own = FLOOR[parts[1]]
        for module, _names, line in imported(path, parts):
            if module in FLOOR and FLOOR[module] > own:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports labkit.{module}")
    assert not wrong, "an import points up a floor:\n" + "\n".join(wrong)


def test_the_core_never_imports_lab():
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path, parts in modules()
        if parts[1] != "lab"
        for module, _names, line in imported(path, parts)
        if module == "lab"
    ]
    assert not wrong, wrong


def test_no_private_name_is_taken_from_another_module():
    wrong = []
    for path, parts in modules():
        for _module, names, line in imported(path, parts):
            for name in names:
                if name.startswith("_") and name != "_init":  # _init: the child's own script
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} takes {name}")
    assert not wrong, wrong
