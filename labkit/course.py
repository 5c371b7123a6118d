"""The classroom kit: student copies of the lessons, and each student's progress through them.

The instructor's notebooks carry each exercise's solution between two marker lines::

    # BEGIN SOLUTION
    limit = "48M"
    # END SOLUTION
    check_survivor_limit(limit)

A student copy keeps the cell with the blank ``limit = ...`` in place of the solution (a block
with no assignment becomes ``...``), and the check after it. Progress runs every notebook
headless in a fresh kernel, as the student left it, and asks that kernel which checks passed
(labkit.lab.checks keeps a report per exercise).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import socket
import subprocess
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import LabkitError

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
ROOT = Path(__file__).resolve().parents[1]
CLASS_DIR_FILE = Path("/etc/labkit/class-dir")  # written by scripts/provision-vm
# The printed line a headless run's last cell starts with, followed by the kernel's reports.
_REPORT_MARK = "labkit-course-reports:"


class CourseError(LabkitError):
    """A notebook or a directory that the course commands cannot use."""


# --- student copies ---------------------------------------------------------------------------


def _blank(block: list[str], indent: str, where: str) -> list[str]:
    """The student's version of one solution block: its top-level assignments with ``...``."""
    try:
        tree = ast.parse(textwrap.dedent("".join(block)))
    except SyntaxError as e:
        raise CourseError(
            f"{where}: the solution block is not valid Python ({e.msg}, line "
            f"{e.lineno}); fix it in the instructor's notebook."
        ) from None
    blanks = []
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        for target in targets:  # "a, b = 1, 2" gives "a, b = ..., ..."
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            if all(isinstance(n, ast.Name) for n in names):
                left = ", ".join(n.id for n in names)
                blanks.append(f"{indent}{left} = {', '.join('...' for _ in names)}\n")
    return blanks or [f"{indent}...\n"]


def blank_source(source: str, where: str = "cell") -> str:
    """*source* with every solution block replaced by its blanks (no markers: unchanged)."""
    out: list[str] = []
    block: list[str] | None = None
    indent = ""
    for line in source.splitlines(keepends=True):
        marker = line.strip()
        if marker == BEGIN:
            if block is not None:
                raise CourseError(
                    f"{where}: '{BEGIN}' again before '{END}'; close the first block."
                )
            block, indent = [], line[: len(line) - len(line.lstrip())]
        elif marker == END:
            if block is None:
                raise CourseError(f"{where}: '{END}' without a '{BEGIN}' before it.")
            out += _blank(block, indent, where)
            block = None
        elif block is not None:
            block.append(line)
        else:
            out.append(line)
    if block is not None:
        raise CourseError(f"{where}: '{BEGIN}' is never closed; add '{END}' after the solution.")
    text = "".join(out)
    return text if source.endswith("\n") else text.removesuffix("\n")


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def has_solutions(nb: dict) -> bool:
    """Whether a notebook (its JSON) holds at least one solution block."""
    return any(cell.get("cell_type") == "code" and BEGIN in _source(cell) for cell in nb["cells"])


def student_notebook(nb: dict, name: str = "notebook") -> dict:
    """A student copy of the notebook *nb*: solutions blanked, outputs and counts cleared."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        cell["source"] = blank_source(_source(cell), f"{name}, cell {i}")
        cell["outputs"], cell["execution_count"] = [], None
        cell.get("metadata", {}).pop("execution", None)  # timings of the instructor's run
    # Widget state holds the instructor's plots and values: a student starts without it.
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def _read(path: Path) -> dict:
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CourseError(f"{path}: not a readable notebook ({e}); give a .ipynb file.") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise CourseError(f"{path}: a notebook's JSON has a list of cells, this has none.")
    return nb


def notebooks_in(paths: list[Path]) -> list[Path]:
    """The notebooks named by *paths*: .ipynb files, and those directly inside directories."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(path.glob("[0-9]*.ipynb")) or sorted(path.glob("*.ipynb"))
        elif path.suffix == ".ipynb" and path.is_file():
            found.append(path)
        else:
            raise CourseError(
                f"{path}: no such notebook or directory; give a directory of "
                "lessons or a .ipynb file."
            )
    return found


def write_student_copies(dest: Path, source: Path = ROOT / "notebooks") -> list[Path]:
    """Write a student copy of every lesson in *source* into *dest*; returns the files written.

    Every copy starts without outputs: the instructor's would show the answers' verdicts.
    """
    lessons = notebooks_in([source])
    if not lessons:
        raise CourseError(f"{source}: no notebooks in it; give the lessons' directory.")
    if dest.resolve() == source.resolve():
        raise CourseError(
            f"{dest}: that is where the instructor's notebooks are; write the "
            "student copies to another directory."
        )
    copies = [(p, student_notebook(_read(p), p.name)) for p in lessons]  # all checked, then written
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for path, nb in copies:
        (dest / path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        written.append(dest / path.name)
    for extra in source.glob("*.cfg"):  # the nbval sanitize file, so the copies test the same
        (dest / extra.name).write_text(extra.read_text())
    return written


# --- progress ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One exercise of one notebook, as the student's notebook left it."""

    notebook: str  # the file's name, e.g. 03-pid.ipynb
    exercise: str
    status: str  # "done", "not yet" or "error"
    message: str
    host: str
    path: str  # the notebook as given (or found in the directory given)


def exercises_of(nb: dict, graded: list[str] | None = None) -> list[str]:
    """The exercises a notebook checks, in order: the checks its code cells call (only those
    in *graded*, the names labkit.lab's exercise checks report under, when given)."""
    names: list[str] = []
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        for name in re.findall(r"\bcheck_(\w+)\s*\(", _source(cell)):
            if (graded is None or name in graded) and name not in names:
                names.append(name)
    return names


# Run last in the notebook's own kernel: which checks exist, and what each reported. (labkit.lab
# is the lessons' package, imported by the kernel, never by the tooling.)
_REPORT_CELL = (
    "import json as _json\n"
    "from labkit.lab import checks as _checks\n"
    f"print({_REPORT_MARK!r}, _json.dumps("
    "{'graded': _checks.all_graded(), 'reports': _checks.reports()}))\n"
)


def _kernel_reports(nb: dict, cwd: Path, timeout: int) -> tuple[dict, str]:
    """Run *nb* headless in a new kernel (errors do not stop it); what its checks reported
    (``{"graded": [...], "reports": {...}}``), or {} and what went wrong."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    run = nbformat.reads(json.dumps(nb), as_version=4)
    run.cells.append(nbformat.v4.new_code_cell(_REPORT_CELL))
    client = NotebookClient(
        run,
        timeout=timeout,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        # The kernel process's own stderr carries only its start-up chatter; what cells write to
        # stderr comes back in their outputs.
        client.execute(stderr=subprocess.DEVNULL)
    except (CellTimeoutError, DeadKernelError, RuntimeError, OSError) as e:  # no reports
        return {}, f"the notebook did not run to its end ({type(e).__name__}: {e})"
    for output in run.cells[-1].get("outputs", []):
        text = output.get("text", "")
        if output.get("name") == "stdout" and text.startswith(_REPORT_MARK):
            try:
                return json.loads(text[len(_REPORT_MARK) :]), ""
            except ValueError:
                break
    return {}, "the notebook's kernel gave no reports"


def progress(paths: list[Path], timeout: int = 300) -> list[Outcome]:
    """Run each notebook with exercises headless; every exercise's status as the kernel saw it.

    An exercise whose check never ran (its cell, or one before it, raised) counts as an error.
    """
    if os.geteuid() != 0:  # every lesson asks the kernel for namespaces and cgroups
        raise CourseError("progress runs the lessons, and they need root: run it with sudo.")
    host = socket.gethostname()
    outcomes = []
    for path in notebooks_in(paths):
        nb = _read(path)
        if not exercises_of(nb):
            continue
        got, problem = _kernel_reports(nb, path.parent, timeout)
        reports = got.get("reports", {})
        for name in exercises_of(nb, got.get("graded")):
            outcome = reports.get(name) or {
                "status": "error",
                "message": problem or "its check never ran: a cell before it raised an error",
            }
            outcomes.append(
                Outcome(path.name, name, outcome["status"], outcome["message"], host, str(path))
            )
    return outcomes


def format_progress(outcomes: list[Outcome]) -> str:
    """Per lesson, one line per exercise: done / not yet / error, with the check's message."""
    lines: list[str] = []
    width = max((len(o.exercise) for o in outcomes), default=0)
    notebook = None
    for o in outcomes:
        if o.path != notebook:
            notebook = o.path
            lines.append(notebook)
        first = (o.message.splitlines() or [""])[0]
        lines.append(f"  {o.exercise:<{width}}  {o.status:<7}  {first}")
    done = sum(o.status == "done" for o in outcomes)
    lines.append(f"{done} of {len(outcomes)} exercises done.")
    return "\n".join(lines)


def outcomes_json(outcomes: list[Outcome]) -> str:
    """The outcomes as a JSON list of objects (notebook, exercise, status, message, host, path)."""
    return json.dumps([asdict(o) for o in outcomes], indent=1, ensure_ascii=False)


def served_dir() -> Path:
    """The lessons the lab serves: the class directory scripts/provision-vm remembered (its
    student copies), else the repository's notebooks/."""
    try:
        remembered = Path(CLASS_DIR_FILE.read_text().strip())
    except OSError:
        return ROOT / "notebooks"
    return remembered if remembered.is_absolute() and remembered.is_dir() else ROOT / "notebooks"


# --- the `labkit course` command --------------------------------------------------------------


def _cmd(args) -> int:
    if args.verb == "student":
        written = write_student_copies(Path(args.dest), Path(args.source))
        print(f"labkit: {len(written)} student copies in {args.dest}")
        return 0
    outcomes = progress([Path(p) for p in args.paths] or [served_dir()], args.timeout)
    print(outcomes_json(outcomes) if args.json else format_progress(outcomes))
    return 0


def add_commands(sub) -> None:
    """Register `labkit course student|progress` with the CLI's subcommands."""
    course = sub.add_parser("course", help="the classroom: student copies, students' progress")
    verbs = course.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verbs.add_parser("student", help="write the lessons with their solutions blanked to DEST")
    p.add_argument("dest", help="directory for the student copies")
    p.add_argument(
        "--source",
        default=str(ROOT / "notebooks"),
        help="the instructor's notebooks (default: the repository's notebooks/)",
    )
    p = verbs.add_parser(
        "progress", help="run the lessons' checks headless: done / not yet / error"
    )
    p.add_argument(
        "paths",
        nargs="*",
        metavar="DIR",
        help="directories of lessons or .ipynb files (default: what the lab serves)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per exercise")
    p.add_argument(
        "--timeout", type=int, default=300, help="seconds allowed per cell (default 300)"
    )
    course.set_defaults(func=_cmd)
