"""Fixtures for the real-browser tests: JupyterLab, Voilà, and Debian's Chromium via Playwright.

- Outside CI a missing ``/usr/bin/chromium`` (or playwright) *skips* these tests; with
  ``CI=true`` it is a failure.
- The servers bind 127.0.0.1 on a random free port with a random token and serve a temporary
  copy of ``notebooks/`` (never the repository). On shutdown they must leave no kernel behind.
- Timings go to ``artifacts/browser-timings.txt`` and into pytest's terminal summary;
  screenshots to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import helpers  # noqa: E402

_TIMINGS: list[tuple[str, str]] = []      # (label, text) in the order recorded
_SUITE = {"seconds": 0.0, "ran": False}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _missing(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: the browser tests must run in CI)", pytrace=False)
    pytest.skip(reason)


# ---- timings ----------------------------------------------------------------------------
class Timings:
    """Record a figure for the report: ``timings.add("lab: click -> views", "median 80 ms")``."""

    def add(self, label: str, text: str) -> None:
        _TIMINGS.append((label, text))


@pytest.fixture(scope="session")
def timings() -> Timings:
    return Timings()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "browser" in report.keywords:
        _SUITE["seconds"] += report.duration
        if report.when == "call" and not report.skipped:
            _SUITE["ran"] = True


def _timing_lines() -> list[str]:
    lines = [f"browser suite: {_SUITE['seconds']:.1f} s (setup + tests + teardown)"]
    lines += [f"{label}: {text}" for label, text in _TIMINGS]
    return lines


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _SUITE["ran"]:
        return
    helpers.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    helpers.TIMINGS_FILE.write_text(
        f"# iommu-lab browser tests, {stamp}, pytest exit status {int(exitstatus)}\n"
        + "\n".join(_timing_lines()) + "\n")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not _SUITE["ran"]:
        return
    terminalreporter.section("browser timings")
    for line in _timing_lines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(written to {helpers.TIMINGS_FILE.relative_to(helpers.ROOT)};"
                                f" screenshots in "
                                f"{helpers.SCREENSHOTS.relative_to(helpers.ROOT)}/)")


# ---- browser ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium_executable() -> str:
    if not os.access(helpers.CHROMIUM, os.X_OK):
        _missing(f"Debian chromium not found at {helpers.CHROMIUM} "
                 "(apt-get install chromium; never `playwright install`)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("the Python package playwright is not installed (pip install -e '.[dev]')")
    return helpers.CHROMIUM


@pytest.fixture(scope="session")
def screenshots_dir(chromium_executable: str) -> Path:
    """artifacts/screenshots/ (git-ignored; each test overwrites its own PNGs)."""
    helpers.SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return helpers.SCREENSHOTS


@pytest.fixture(scope="session")
def browser(chromium_executable: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_executable, headless=True,
                              args=helpers.CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A fresh browser context + page with its console/page errors collected."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport=dict(helpers.VIEWPORT))
        self.context.set_default_timeout(30_000)
        self.page = self.context.new_page()
        self.log = helpers.PageLog()
        self.log.attach(self.page)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    pages: list[Page] = []

    def make() -> Page:
        pages.append(Page(browser))
        return pages[-1]

    yield make
    for p in pages:
        p.close()


# ---- JupyterLab ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def jupyter_settings() -> None:
    """The venv's Jupyter settings that `make lab` / `make app` write (tools/jupyter_settings.py):
    Lab opens the lessons (.md) as notebooks; Voilà skips jupytext's Lab extension."""
    check = subprocess.run([sys.executable, str(helpers.ROOT / "tools" / "jupyter_settings.py"),
                            "--check"], capture_output=True, text=True)
    if check.returncode:
        pytest.fail(f"Jupyter settings not installed: {check.stderr.strip()}", pytrace=False)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, chromium_executable: str,
        timings: Timings, jupyter_settings: None) -> Iterator[helpers.Server]:
    tmp = tmp_path_factory.mktemp("lab")
    work = helpers.copy_tree_for_serving(tmp)
    port, token = helpers.free_port(), helpers.new_token()
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={work}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            *helpers.root_flags()]
    t0 = time.perf_counter()
    srv = helpers.start_server("jupyterlab", argv, tmp=tmp, workdir=work, port=port,
                               token=token, ready_path="/api/status")
    timings.add("jupyterlab start", f"{time.perf_counter() - t0:.1f} s")
    try:
        yield srv
    finally:
        problems = helpers.stop_server(srv)
        assert srv.proc.returncode is not None
        assert not problems, "JupyterLab shutdown: " + "; ".join(problems)


@pytest.fixture
def lab_page(lab: helpers.Server, browser: Any) -> Iterator[Page]:
    """A fresh page for JupyterLab; afterwards the page is closed, then every kernel is shut
    down (keeps memory low on a 2-core CI machine)."""
    p = Page(browser)
    try:
        yield p
    finally:
        p.close()
        helpers.shutdown_all_kernels(lab)


# ---- Voilà -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def voila_factory(tmp_path_factory: pytest.TempPathFactory, chromium_executable: str,
                  timings: Timings, jupyter_settings: None) -> Iterator[Any]:
    """``voila_factory("app-stepper.ipynb")`` -> the Voilà server, once that app's preheated
    kernel is ready. One server for every app, started like ``make app``: ``voila notebooks``
    with the venv's settings (a pool of preheated kernels per app)."""
    servers: dict[str, helpers.Server] = {}

    def start(name: str) -> helpers.Server:
        assert (helpers.NOTEBOOKS / name).exists(), f"notebooks/{name} missing"
        if "srv" not in servers:
            tmp = tmp_path_factory.mktemp("voila")
            work = helpers.copy_tree_for_serving(tmp)
            port, token = helpers.free_port(), helpers.new_token()
            argv = [str(helpers.VENV_BIN / "voila"), "notebooks", "--no-browser",
                    f"--port={port}", "--Voila.ip=127.0.0.1", f"--token={token}",
                    "--show_tracebacks=True"]      # voila has no --allow-root (nor needs it)
            if not Path(argv[0]).exists():
                argv = [sys.executable, "-m", "voila", *argv[1:]]
            t0 = time.perf_counter()
            # a static file answers without executing a notebook
            srv = helpers.start_server("voila", argv, tmp=tmp, workdir=work, port=port,
                                       token=token, ready_path="/voila/static/voila.js",
                                       timeout=90)
            servers["srv"] = srv
            timings.add("voila start (make app: every app)",
                        f"serving after {time.perf_counter() - t0:.1f} s")
        srv = servers["srv"]
        if name not in servers:
            waited = helpers.wait_voila_warm(srv, name)
            timings.add(f"voila preheated kernel ({name})",
                        f"ready {waited:.1f} s after it was first asked for")
            servers[name] = srv
        return srv

    yield start
    problems = helpers.stop_server(servers["srv"]) if "srv" in servers else []
    assert not problems, "Voilà shutdown: " + "; ".join(problems)
