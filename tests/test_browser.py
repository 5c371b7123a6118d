"""A student's view: JupyterLab started by scripts/lab, driven by a headless Chromium.

The lab serves student copies (`labkit course student`); the browser opens a lesson with a
slider and a run button, runs all its cells, finds no error output, then moves the slider,
presses run and sees the plot change. Debian's chromium (scripts/setup test installs it) is
driven by playwright with its own executable: nothing is downloaded. Screenshots are kept in
LABKIT_TEST_OUTPUT (default .test-output/ in the repository); the test prints where.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from labkit import cleanup, course

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
LESSON = "13-pids.ipynb"  # a quick experiment behind a slider and a run button, with a plot
TOKEN_FILE = Path("/etc/labkit/jupyter-token")
START_S, RUN_ALL_S, PLOT_S = 90, 240, 90  # bounds: server up, all cells run, a new plot


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, path: str, method: str = "GET"):
    token = TOKEN_FILE.read_text()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # only to this machine's lab
        body = answer.read()
    return json.loads(body) if body else None


def _kernels(port: int) -> list[dict]:
    """The server's kernels; none while it cannot say (it answers 500 while one is starting)."""
    try:
        return _api(port, "/api/kernels")
    except OSError:
        return []


def _wait(predicate, seconds: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(interval)
    pytest.fail(f"{what}: not within {seconds} s")


@pytest.fixture
def output_dir(request) -> Path:
    base = Path(os.environ.get("LABKIT_TEST_OUTPUT", ROOT / ".test-output"))
    path = base / "browser"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    yield path
    # Said past pytest's capture, so that a passing run says where its screenshots are too.
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter and capture:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ntest_browser: screenshots in {path}")


@pytest.fixture
def lab(tmp_path):
    """scripts/lab serving student copies on a free port; stopped, and labkit cleaned, after."""
    course.write_student_copies(tmp_path / "class")
    port = _free_port()
    log = (tmp_path / "lab.log").open("w")
    env = dict(
        os.environ,
        LABKIT_PORT=str(port),
        LABKIT_NOTEBOOKS=str(tmp_path / "class"),
        LABKIT_SETUP_DONE="1",
    )
    server = subprocess.Popen(
        [str(ROOT / "scripts" / "lab")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def up():
            assert server.poll() is None, (tmp_path / "lab.log").read_text()[-2000:]
            try:
                return _api(port, "/api/status") is not None
            except OSError:
                return False

        _wait(up, START_S, "JupyterLab answering on its port")
        yield port, tmp_path / "class" / LESSON
    finally:
        try:  # the kernels first, so each lesson's kernel exits the way a student's does
            for kernel in _api(port, "/api/kernels") or []:
                _api(port, f"/api/kernels/{kernel['id']}", "DELETE")
        except OSError:
            pass
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()
        cleanup.cleanup()


def _errors(page) -> list[str]:
    """The texts of error outputs (tracebacks) and of anything written to stderr."""
    return page.locator(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
    ).all_inner_texts()


def _last_prompt(page) -> str:
    """The prompt of the notebook's last code cell: [N]: once run, [*]: while it runs."""
    return page.locator(".jp-CodeCell .jp-InputPrompt").last.inner_text().strip()


def _saved_errors(path: Path) -> list[str]:
    """Error and stderr outputs in the notebook as the browser saved it (JupyterLab keeps only
    the cells in view in the page, so the file is the whole truth)."""
    found = []
    for cell in json.loads(path.read_text())["cells"]:
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                found.append(f"{out['ename']}: {out['evalue']}")
            elif out["output_type"] == "stream" and out["name"] == "stderr":
                found.append("".join(out["text"]))
    return found


def test_a_student_runs_a_lesson_and_moves_its_slider(lab, output_dir):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no {CHROMIUM}: run 'sudo scripts/setup test' (it installs chromium).")
    from playwright.sync_api import sync_playwright

    port, notebook = lab
    token = TOKEN_FILE.read_text()
    cells = json.loads(notebook.read_text())["cells"]
    code_cells = sum(c["cell_type"] == "code" for c in cells)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            timeout=60_000,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{LESSON}?reset&token={token}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for()
            _wait(
                lambda: [k for k in _kernels(port) if k["execution_state"] == "idle"],
                START_S,
                "the lesson's kernel starting",
            )

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            # Each code cell runs once in a fresh kernel: the last one's count is their number.
            _wait(
                lambda: (
                    _last_prompt(page) == f"[{code_cells}]:"
                    and all(k["execution_state"] == "idle" for k in _kernels(port))
                ),
                RUN_ALL_S,
                "every cell of the lesson run",
            )
            page.screenshot(path=str(output_dir / "1-run-all.png"), full_page=True)
            assert _errors(page) == []
            saved = notebook.stat().st_mtime
            page.locator(".jp-Notebook").first.click()
            page.keyboard.press("Control+s")
            _wait(lambda: notebook.stat().st_mtime != saved, 30, "the notebook saved")
            assert _saved_errors(notebook) == []
            # The lab asks nothing about news (scripts/lab switches the feed off).
            assert not page.get_by_text(re.compile("Jupyter news", re.IGNORECASE)).count()

            panel = (
                page.locator(".widget-vbox", has=page.locator(".widget-slider"))
                .filter(has=page.locator(".widget-button"))
                .first
            )
            panel.scroll_into_view_if_needed()
            readout = panel.locator(".widget-readout").first
            handle = panel.locator(".noUi-handle").first
            images = panel.locator("img")

            def slide_and_run(presses: int, previous: str | None) -> str:
                """Move the slider by *presses* steps, press run; the new plot's image."""
                value = readout.inner_text()
                handle.focus()
                for _ in range(presses):
                    handle.press("ArrowRight")
                _wait(lambda: readout.inner_text() != value, 10, "the slider moving")
                panel.locator(".widget-button", has_text=re.compile(r"^\s*run\s*$")).click()

                def new_plot():
                    srcs = [i.get_attribute("src") or "" for i in images.all()]
                    fresh = [s for s in srcs if s.startswith("data:image/png") and s != previous]
                    return fresh[-1] if fresh else None

                return _wait(new_plot, PLOT_S, "a new plot after pressing run")

            first = slide_and_run(1, images.first.get_attribute("src") if images.count() else None)
            panel.screenshot(path=str(output_dir / "2-first-run.png"))
            second = slide_and_run(3, first)
            panel.screenshot(path=str(output_dir / "3-slider-moved.png"))
            assert second != first  # the plot drew what the kernel measured at the new value
            assert _errors(page) == []
        finally:
            if "page" in locals():  # what the student would see, also when a step failed
                page.screenshot(path=str(output_dir / "last.png"), full_page=True)
            browser.close()
    assert (output_dir / "1-run-all.png").stat().st_size > 10_000
