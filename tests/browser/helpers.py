"""Helpers for the real-browser tests: servers, pages, error checks, the stepper scenario.

Used by ``conftest.py`` and the ``test_*.py`` modules next to it. Nothing here talks to the
repository's notebooks directly: the servers always serve a temporary copy.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
TIMINGS_FILE = ARTIFACTS / "browser-timings.txt"
VENV_BIN = Path(sys.executable).parent

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 1000}
MAX_SHOT_HEIGHT = 15_000            # Chromium cannot capture much taller than ~16k px

SENTINEL = "notebook complete: {name}"
RUN_ALL_TIMEOUT_S = 120             # one notebook's Run All (DESIGN: < 60 s; nbmake < 10 s here)
VOILA_TIMEOUT_S = 120               # Voilà runs the whole notebook before it answers

# Console / page errors that are known to be harmless (see notebook-ecosystem.md §3.4).
HARMLESS_CONSOLE = (
    # old FigureWidget models torn down by a kernel restart
    re.compile(r"\[anywidget\] Failed to initialize model"),
)
# No request may leave the machine: every page must work in an offline classroom
# (DESIGN §8). Voilà's own lab template links FontAwesome from a CDN; the venv's
# `iommu-lab` template (tools/jupyter_settings.py) drops those links.

# Text that means a widget or output failed to render.
PAGE_ERROR_TEXTS = ("Error displaying widget", "model not found", "Javascript Error",
                    "There was an error when executing cell")


# ---- processes -------------------------------------------------------------------------
def status_without_token(url: str) -> int:
    """HTTP status of a GET without the token (redirects not followed)."""
    import http.client

    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", u.path + (f"?{u.query}" if u.query else ""))
        return conn.getresponse().status
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_token() -> str:
    return secrets.token_hex(16)


def copy_tree_for_serving(dest: Path) -> Path:
    """A temporary copy of notebooks/ (and data/, which notebooks may read): never the repo."""
    work = dest / "work"
    shutil.copytree(NOTEBOOKS, work / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    if (ROOT / "data").is_dir():
        shutil.copytree(ROOT / "data", work / "data")
    return work


def isolated_env(tmp: Path) -> dict[str, str]:
    """Environment for a server: settings, workspaces, runtime, config all inside ``tmp``."""
    settings = tmp / "settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
     ).write_text(json.dumps({"fetchNews": "false"}))
    # Render every cell (no windowing), so the DOM holds all outputs and full-page
    # screenshots show the whole notebook.
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True, exist_ok=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
     ).write_text(json.dumps({"windowingMode": "none"}))
    for d in ("workspaces", "runtime", "config", "ipython"):
        (tmp / d).mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update({
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "PYTHONUNBUFFERED": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    })
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def root_flags() -> list[str]:
    return ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


@dataclass
class Server:
    """A server process started by the tests (JupyterLab or Voilà)."""

    name: str
    proc: subprocess.Popen
    url: str
    token: str
    log: Path
    workdir: Path
    tmp: Path
    seen_children: set[int] = field(default_factory=set)
    pages: dict[str, int] = field(default_factory=dict)   # Voilà: pages opened per app

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def remember_children(self) -> None:
        """Note the server's child processes (kernels), to check none survive shutdown."""
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil comes with ipykernel
            return
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return
        self.seen_children.update(k.pid for k in kids)

    def app_url(self, name: str, token: bool = True) -> str:
        """Voilà serving notebooks/ (like ``make app``): the page of app ``name``."""
        url = f"{self.url}/voila/render/{urllib.parse.quote(name)}"
        return f"{url}?token={self.token}" if token else url

    def opened(self, name: str) -> None:
        """Note that a page of ``name`` was requested: it took that app's preheated kernel."""
        self.pages[name] = self.pages.get(name, 0) + 1

    def api(self, method: str, path: str) -> Any:
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None


def start_server(name: str, argv: list[str], *, tmp: Path, workdir: Path, port: int,
                 token: str, ready_path: str, timeout: float = 90) -> Server:
    """Start ``argv`` in ``workdir``; wait until GET ``ready_path`` (with the token) is 200."""
    env = isolated_env(tmp)
    log = tmp / f"{name}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    srv = Server(name, proc, f"http://127.0.0.1:{port}", token, log, workdir, tmp)
    sep = "&" if "?" in ready_path else "?"
    probe = f"{srv.url}{ready_path}{sep}token={token}"
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready:\n"
                               f"{srv.log_tail()}")
        try:
            with urllib.request.urlopen(probe, timeout=max(5.0, timeout / 3)) as r:
                if r.status == 200:
                    return srv
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.25)
    stop_server(srv, check_orphans=False)
    raise RuntimeError(f"{name} not ready after {timeout:.0f} s ({last}):\n{srv.log_tail()}")


def stop_server(srv: Server, check_orphans: bool = True) -> list[str]:
    """SIGTERM, wait; the server shuts its kernels down. Returns problems (orphans...)."""
    problems: list[str] = []
    srv.remember_children()
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGTERM)
        try:
            srv.proc.wait(30)
        except subprocess.TimeoutExpired:
            problems.append(f"{srv.name} did not exit within 30 s of SIGTERM; killed")
            srv.proc.kill()
            srv.proc.wait(10)
    if not check_orphans:
        return problems
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return problems
    deadline = time.monotonic() + 15
    alive: list[Any] = []
    while time.monotonic() < deadline:
        alive = []
        for pid in srv.seen_children:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        if not alive:
            break
        time.sleep(0.25)
    for p in alive:
        try:
            desc = " ".join(p.cmdline())[:200]
        except psutil.Error:
            desc = "?"
        problems.append(f"orphan process {p.pid} left by {srv.name}: {desc}")
        try:
            p.kill()          # a process this test session started (a kernel of our server)
        except psutil.Error:
            pass
    return problems


def children_cpu_s(srv: Server) -> float:
    """CPU seconds used so far by the server's child processes (its kernels)."""
    import psutil

    total = 0.0
    try:
        kids = psutil.Process(srv.proc.pid).children(recursive=True)
    except psutil.Error:
        return total
    for k in kids:
        try:
            t = k.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def wait_voila_warm(srv: Server, name: str, timeout_s: float = 150) -> float:
    """Wait until Voilà's pool of preheated kernels for ``name`` is full again and its
    kernel has finished running the notebook (its CPU time stops growing): a class opens
    the app once the teacher's server is warm. Returns the seconds waited."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    line = f"Kernel pool of {Path(name).name} is filled"
    while srv.log.read_text(errors="replace").count(line) < srv.pages.get(name, 0) + 1:
        if time.monotonic() > deadline or srv.proc.poll() is not None:
            raise AssertionError(f"Voilà's kernel pool for {name} was not filled after "
                                 f"{timeout_s:.0f} s:\n{srv.log_tail()}")
        time.sleep(0.2)
    srv.remember_children()
    last, quiet = children_cpu_s(srv), 0
    while quiet < 3:                    # 3 × 0.4 s without CPU use: the kernel is idle
        if time.monotonic() > deadline:
            raise AssertionError(f"Voilà's preheated kernel for {name} still busy after "
                                 f"{timeout_s:.0f} s")
        time.sleep(0.4)
        now = children_cpu_s(srv)
        quiet = quiet + 1 if now - last < 0.02 else 0
        last = now
    return time.monotonic() - t0


USABLE_JS = r"""
([what]) => {
  const vis = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  if (what === 'plot')
    return Array.from(document.querySelectorAll('.js-plotly-plot'))
      .some(e => e.querySelector('.main-svg') && vis(e));
  const buttons = Array.from(document.querySelectorAll('.jupyter-widgets .widget-button'));
  // usable: its buttons are on the page and no widget still waits for its model
  const stepper = document.querySelector('.iommu-stepper');    // and the stepper's views
  const views = !stepper || ['.iommu-ring-out svg', '.iommu-counters-out table',
                             '.iommu-iotlb-out table', '.iommu-pgtable-out table',
                             '.iommu-timeline-out svg.iommu-gantt-svg']
    .every(sel => stepper.querySelector(sel));
  return buttons.length > 0 && buttons.every(vis) && views;
}
"""


def wait_usable(page: Any, timeout_s: float) -> None:
    """Until the app's widget buttons are all shown (it answers clicks)."""
    page.wait_for_function(USABLE_JS, arg=["buttons"], timeout=timeout_s * 1000,
                           polling="raf")


def wait_drawn(page: Any, timeout_s: float) -> None:
    """Until a plotly figure is drawn."""
    page.wait_for_function(USABLE_JS, arg=["plot"], timeout=timeout_s * 1000, polling="raf")


# ---- browser pages ---------------------------------------------------------------------
@dataclass
class PageLog:
    """Console errors and page errors seen by one page."""

    console: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    local: int = 0

    def attach(self, page: Any) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", self._on_pageerror)
        page.on("request", self._on_request)

    def _on_request(self, req: Any) -> None:
        url = req.url
        if not re.match(r"^(https?|wss?)://", url):
            return                          # data:, blob:, about:
        host = urllib.parse.urlsplit(url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1"):
            self.local += 1
            return
        self.external.append(url)

    def _keep(self, text: str) -> bool:
        if any(p.search(text) for p in HARMLESS_CONSOLE):
            self.ignored.append(text)
            return False
        return True

    def _on_console(self, msg: Any) -> None:
        if msg.type == "error":
            loc = msg.location or {}
            text = f"{msg.text} @ {loc.get('url', '')}:{loc.get('lineNumber', '')}"
            if self._keep(text):
                self.console.append(text)

    def _on_pageerror(self, exc: Any) -> None:
        text = f"{getattr(exc, 'name', 'Error')}: {getattr(exc, 'message', exc)}"
        if self._keep(text):
            self.page_errors.append(text)

    def problems(self) -> list[str]:
        return ([f"console error: {t}" for t in self.console]
                + [f"page error: {t}" for t in self.page_errors]
                + [f"request to the internet (classrooms may be offline): {u}"
                   for u in self.external])


def notebook_names() -> list[str]:
    """Every notebook in notebooks/ (new notebooks are covered automatically): the lessons,
    jupytext MyST ``.md`` files that Lab opens as notebooks, and the ``.ipynb`` apps."""
    return sorted(p.name for p in [*NOTEBOOKS.glob("*.ipynb"), *NOTEBOOKS.glob("*.md")])


def app_notebook_names() -> list[str]:
    return [n for n in notebook_names() if n.startswith("app-") and n.endswith(".ipynb")]


def notebook_source(name: str) -> str:
    if name.endswith(".md"):
        import jupytext

        cells = jupytext.read(NOTEBOOKS / name, fmt="md:myst").cells
        return "\n".join(c.source for c in cells if c.cell_type == "code")
    nb = json.loads((NOTEBOOKS / name).read_text())
    return "\n".join("".join(c.get("source", "")) for c in nb["cells"]
                     if c.get("cell_type") == "code")


WIDGET_HINT = re.compile(r"\b(Stepper|CompareDashboard)\(|\bipywidgets\b|\binteract\(|"
                         r"\bwidgets\.\w+\(")
# (the Stepper and the CompareDashboard draw HTML + SVG only: no plotly figure)
PLOTLY_HINT = re.compile(r"_figure\(|\.timeline\(\)|\bgo\.Figure|\bpx\.\w+\(")


def expects_widgets(name: str) -> bool:
    return bool(WIDGET_HINT.search(notebook_source(name)))


def expects_plotly(name: str) -> bool:
    return bool(PLOTLY_HINT.search(notebook_source(name)))


# JS: everything on the page that looks like an error, plus what rendered.
PAGE_REPORT_JS = r"""
(texts) => {
  const out = {tracebacks: [], stderr: [], error_texts: [], widgets: 0, widgets_visible: 0,
               buttons: 0, plots: 0, plots_rendered: 0};
  const vis = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  for (const e of document.querySelectorAll(
        '[data-mime-type="application/vnd.jupyter.stderr"], .jp-OutputArea-output.jp-mod-error')) {
    const t = (e.innerText || e.textContent || '').trim();
    if (/Traceback|\b\w*Error\b|\bException\b/.test(t)) out.tracebacks.push(t.slice(0, 2000));
    else if (t) out.stderr.push(t.slice(0, 500));
  }
  // only in outputs and widgets: a notebook's markdown may well *mention* these messages
  for (const e of document.querySelectorAll('.jp-OutputArea-output, .jupyter-widgets')) {
    const body = e.innerText || '';
    for (const t of texts) {
      const i = body.indexOf(t);
      if (i >= 0) out.error_texts.push(body.slice(Math.max(0, i - 100), i + 300));
    }
  }
  out.error_texts = Array.from(new Set(out.error_texts));
  const ws = document.querySelectorAll('.jupyter-widgets');
  out.widgets = ws.length;
  out.widgets_visible = Array.from(ws).filter(vis).length;
  out.buttons = document.querySelectorAll('.widget-button').length;
  const plots = document.querySelectorAll('.js-plotly-plot');
  out.plots = plots.length;
  out.plots_rendered = Array.from(plots).filter(p => p.querySelector('.main-svg') && vis(p)).length;
  return out;
}
"""


def page_report(page: Any) -> dict[str, Any]:
    return page.evaluate(PAGE_REPORT_JS, list(PAGE_ERROR_TEXTS))


def page_problems(report: dict[str, Any], log: PageLog, *, widgets: bool,
                  plotly: bool) -> list[str]:
    """Everything wrong with a rendered page (empty list = fine)."""
    p = [f"traceback in an output:\n{t}" for t in report["tracebacks"]]
    p += [f"error text on the page: {t!r}" for t in report["error_texts"]]
    if widgets and not report["widgets_visible"]:
        p.append("the notebook creates widgets but no .jupyter-widgets element is visible")
    if widgets and not report["buttons"]:
        p.append("the notebook creates widgets but no .widget-button is on the page")
    if plotly and not report["plots_rendered"]:
        p.append("the notebook draws plotly figures but no .js-plotly-plot is rendered")
    if report["plots"] != report["plots_rendered"]:
        p.append(f"only {report['plots_rendered']} of {report['plots']} .js-plotly-plot "
                 "elements rendered with a visible SVG")
    return p + log.problems()


SETTLE_JS = r"""
() => [document.querySelectorAll('.jupyter-widgets').length,
       document.querySelectorAll('.js-plotly-plot .main-svg').length,
       document.querySelectorAll('.jp-OutputArea-output').length,
       document.body.innerText.length].join(',')
"""


def settle(page: Any, quiet_ms: int = 800, timeout_s: float = 30,
           wait_for: str | None = None) -> None:
    """Wait until the number of widgets / figures / outputs stops changing for a while
    (after ``wait_for``, if given, is visible: widgets render after the outputs arrive)."""
    if wait_for:
        from playwright.sync_api import expect

        expect(page.locator(wait_for).first).to_be_visible(timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        sig = page.evaluate(SETTLE_JS)
        now = time.monotonic()
        if sig != last:
            last, since = sig, now
        elif (now - since) * 1000 >= quiet_ms:
            return
        page.wait_for_timeout(100)


def full_page_screenshot(page: Any, path: Path, scroller: str | None = None) -> None:
    """Screenshot of the whole page. JupyterLab scrolls inside the notebook panel, not the
    document, so the viewport is made as tall as the notebook first (capped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size or VIEWPORT
    if scroller:
        extra = page.evaluate(
            "(sel) => { const e = document.querySelector(sel); "
            "return e ? e.scrollHeight - e.clientHeight : 0; }", scroller)
        if extra > 0:
            height = min(size["height"] + extra + 40, MAX_SHOT_HEIGHT)
            page.set_viewport_size({"width": size["width"], "height": height})
            page.wait_for_timeout(700)      # let plotly relayout in the new size
        # Lab keeps the active (last) cell in view: show the notebook from its top
        page.evaluate("(sel) => { const e = document.querySelector(sel); "
                      "if (e) e.scrollTop = 0; }", scroller)
        page.wait_for_timeout(200)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)


# ---- JupyterLab ------------------------------------------------------------------------
NOTEBOOK_SCROLLER = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer"


def kernel_connected(lab: Server, rel: str) -> bool:
    """The notebook's kernel is up, idle, and the page's websocket is connected to it."""
    for s in lab.api("GET", "/api/sessions") or []:
        k = s.get("kernel") or {}
        if (s.get("path") == rel and k.get("execution_state") == "idle"
                and k.get("connections", 0) >= 1):
            return True
    return False


def open_notebook_in_lab(page: Any, lab: Server, rel: str, workspace: str) -> None:
    from playwright.sync_api import expect

    # a fresh workspace per test: Lab would otherwise reopen the previous test's notebooks
    ws, path = urllib.parse.quote(workspace, safe=""), urllib.parse.quote(rel)
    page.goto(f"{lab.url}/lab/workspaces/{ws}/tree/{path}?token={lab.token}",
              wait_until="domcontentloaded", timeout=60_000)
    # a lesson (.md) opens as a notebook too, by the venv's Lab settings, like `make lab`
    expect_notebook_opened(page, lab, rel)
    # The execution indicator can say "idle" before any kernel exists; Run All sent then
    # may run one cell only. Wait for the server to report a connected, idle kernel.
    deadline = time.monotonic() + 60
    while not kernel_connected(lab, rel):
        if time.monotonic() > deadline:
            raise AssertionError(f"no idle kernel connected to {rel} after 60 s: "
                                 f"{lab.api('GET', '/api/sessions')}")
        page.wait_for_timeout(200)
    expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=60_000)


CURRENT_TAB = ".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel"


def expect_notebook_opened(page: Any, lab: Server, rel: str, timeout_s: float = 60) -> None:
    """``rel`` (e.g. ``notebooks/01-….md``) is the current tab, shown as a notebook (not in
    the text editor), with a kernel session of its own."""
    from playwright.sync_api import expect

    name = rel.rsplit("/", 1)[-1]
    expect(page.locator(CURRENT_TAB)).to_have_text(name, timeout=timeout_s * 1000)
    notebook = ".jp-NotebookPanel:not(.lm-mod-hidden)"
    editor = ".jp-MainAreaWidget:not(.lm-mod-hidden) .jp-FileEditor"
    expect(page.locator(f"{notebook}, {editor}").first).to_be_visible(
        timeout=timeout_s * 1000)
    assert page.locator(editor).count() == 0, (
        f"{name} opened in the text editor, not as a notebook: are the venv's Lab settings "
        "installed (make lab, or .venv/bin/python tools/jupyter_settings.py)?")
    expect(page.locator(notebook).locator(".jp-Cell").first).to_be_visible(
        timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while not any(s.get("path") == rel for s in lab.api("GET", "/api/sessions") or []):
        if time.monotonic() > deadline:
            raise AssertionError(f"no kernel session for {rel}: "
                                 f"{lab.api('GET', '/api/sessions')}")
        page.wait_for_timeout(200)


def run_all_cells(page: Any) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).first.click()


WAIT_DONE_JS = r"""
([sentinel]) => {
  for (const e of document.querySelectorAll('.jp-OutputArea-output, .jp-RenderedText'))
    if ((e.textContent || '').includes(sentinel)) return 'done';
  for (const e of document.querySelectorAll(
      '[data-mime-type="application/vnd.jupyter.stderr"]'))
    if (/Traceback|\b\w*Error\b/.test(e.textContent || '')) return 'error';
  return false;
}
"""


def wait_for_sentinel_or_error(page: Any, name: str, timeout_s: float) -> str:
    """'done' when the last cell's sentinel shows, 'error' as soon as a traceback shows,
    'timeout' (with the cell prompts) when neither happens in time."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        handle = page.wait_for_function(WAIT_DONE_JS, arg=[SENTINEL.format(name=name)],
                                        timeout=timeout_s * 1000, polling=200)
    except PlaywrightTimeout:
        prompts = page.evaluate(
            "() => Array.from(document.querySelectorAll('.jp-InputArea-prompt'))"
            ".map(e => e.textContent.trim()).filter(t => t).join(' ')")
        return f"timeout after {timeout_s:.0f} s (cell prompts: {prompts})"
    return handle.json_value()


def wait_kernel_idle(page: Any, timeout_s: float = 60) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=timeout_s * 1000)


def shutdown_all_kernels(lab: Server) -> None:
    """Delete every session and kernel (keeps memory down between notebooks)."""
    lab.remember_children()
    try:
        for s in lab.api("GET", "/api/sessions") or []:
            lab.api("DELETE", f"/api/sessions/{s['id']}")
        for k in lab.api("GET", "/api/kernels") or []:
            lab.api("DELETE", f"/api/kernels/{k['id']}")
    except (urllib.error.URLError, OSError):
        pass


# ---- the stepper -------------------------------------------------------------------------
def stepper_from_notebook(name: str = "app-stepper.ipynb") -> Any:
    """The Stepper the notebook displays, rebuilt in this process by the same code.

    Runs the notebook's code cells in order (trusted repository code; stdout discarded) and
    returns the Stepper shown by the last cell whose value is a Stepper, so the tests
    compute the expected views with the Python API for exactly the widget on the page.
    """
    import contextlib
    import io

    from iommu_lab.ui import Stepper

    nb = json.loads((NOTEBOOKS / name).read_text())
    ns: dict[str, Any] = {"__name__": "__notebook__"}
    shown: Any = None
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        src = "".join(cell.get("source", ""))
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue                        # IPython magics: nothing a Stepper depends on
        last = tree.body[-1] if tree.body else None
        with contextlib.redirect_stdout(io.StringIO()):
            if isinstance(last, ast.Expr):
                exec(compile(ast.Module(tree.body[:-1], []), name, "exec"), ns)  # noqa: S102
                value = eval(compile(ast.Expression(last.value), name, "eval"), ns)  # noqa: S307
                if isinstance(value, Stepper):
                    shown = value
            else:
                exec(compile(tree, name, "exec"), ns)  # noqa: S102
    if shown is None:
        raise LookupError(f"no code cell of {name} shows a Stepper")
    return shown


# Reads what the stepper shows: status, error, newest log line, counters, ring, IOTLB.
STEPPER_SNAPSHOT_JS = r"""
(root) => {
  const txt = (sel) => { const e = root.querySelector(sel);
                         return e ? (e.textContent || '').trim() : null; };
  const counters = {};
  for (const tr of root.querySelectorAll('.iommu-counters-out table.iommu-counters-table tbody tr')) {
    const td = tr.querySelectorAll('td');
    counters[tr.dataset.key] = [td[1] ? td[1].textContent : null, td[2] ? td[2].textContent : null];
  }
  const ringEl = root.querySelector('.iommu-ring-out .iommu-ring');
  const all = (el, sel) => el ? Array.from(el.querySelectorAll(sel)) : [];
  const ring = ringEl ? {
    head: (ringEl.querySelector('.iommu-ring-head') || {}).textContent,
    sub: (ringEl.querySelector('.iommu-ring-sub') || {}).textContent,
    text: all(ringEl, 'g.iommu-slot > text').map(t => t.textContent),
    hover: all(ringEl, 'g.iommu-slot > title').map(t => t.textContent),
    states: all(ringEl, 'g.iommu-slot').map(g => g.dataset.state),
    marks: all(ringEl, '.iommu-mark-label').map(t => t.textContent),
    rendered: !!ringEl.querySelector('svg g.iommu-slot')} : null;
  const ganttEl = root.querySelector('.iommu-timeline-out .iommu-gantt');
  const timeline = ganttEl ? {
    head: (ganttEl.querySelector('.iommu-gantt-head') || {}).textContent,
    sub: (ganttEl.querySelector('.iommu-gantt-sub') || {}).textContent,
    bars: ganttEl.querySelectorAll('rect.iommu-bar').length,
    markers: ganttEl.querySelectorAll('.iommu-marker').length,
    rendered: !!ganttEl.querySelector('svg.iommu-gantt-svg')} : null;
  const tlb = root.querySelector('.iommu-iotlb-out table.iommu-iotlb-table');
  let iotlb = null;
  if (tlb) {
    const head = Array.from(tlb.querySelectorAll('thead th')).map(th => th.textContent);
    const rows = Array.from(tlb.querySelectorAll('tbody tr')).map(
      tr => Array.from(tr.querySelectorAll('td')).map(td => td.textContent));
    const cap = tlb.querySelector('caption');
    iotlb = {caption: cap ? cap.textContent : null, head, rows};
  }
  const pt = root.querySelector('.iommu-pgtable-out table.iommu-pgtable-table caption');
  const log = txt('.iommu-log');
  return {status: txt('.iommu-status'), error: txt('.iommu-error') || '',
          log_first: log ? log.split('\n')[0].trim() : null, counters,
          ring, timeline,
          iotlb, pgtable_caption: pt ? pt.textContent : null};
}
"""

# Clicks a button and resolves once every view matches `expected`, with the elapsed ms and
# when each view first matched (to see where the time goes).
CLICK_AND_WAIT_JS = r"""
async ([rootSel, btnSel, expected, timeoutMs, snapshotSrc]) => {
  const snapshot = eval(snapshotSrc);
  const root = document.querySelector(rootSel);
  const btn = root.querySelector(btnSel);
  if (!btn) throw new Error('no button ' + btnSel);
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const parts = {
    status: (s) => s.status === expected.status && s.error === expected.error,
    log: (s) => s.log_first === expected.log_first,
    counters: (s) => same(s.counters, expected.counters),
    iotlb: (s) => !!s.iotlb && s.iotlb.caption === expected.iotlb_caption,
    ring: (s) => !!s.ring && s.ring.rendered && s.ring.sub === expected.ring_sub
                 && s.ring.head === expected.ring_head,
    timeline: (s) => !!s.timeline && s.timeline.rendered
                     && s.timeline.head === expected.timeline_head
                     && s.timeline.sub === expected.timeline_sub,
  };
  // views that already show the expected state (e.g. the IOTLB after a map) are not timed
  const first = {};
  const s0 = snapshot(root);
  const timed = Object.keys(parts).filter(k => !parts[k](s0));
  const t0 = performance.now();
  btn.click();
  // Check once per animation frame: cheap (textContent, no forced layout), so the
  // measurement does not slow the rendering it measures. Resolution ~16 ms.
  return await new Promise((resolve, reject) => {
    let done = false;
    const check = () => {
      if (done) return;
      const s = snapshot(root);
      const now = performance.now() - t0;
      let all = true;
      for (const [k, f] of Object.entries(parts)) {
        if (f(s)) { if (timed.includes(k) && !(k in first)) first[k] = now; } else { all = false; }
      }
      if (all) { done = true; clearTimeout(to); resolve({ms: now, first}); return; }
      requestAnimationFrame(check);
    };
    const to = setTimeout(() => { if (done) return; done = true;
      reject(new Error('views not updated after ' + timeoutMs + ' ms; matched so far '
        + JSON.stringify(first))); }, timeoutMs);
    requestAnimationFrame(check);
  });
}
"""


def _plain(v: Any) -> str:
    try:
        import pandas as pd

        if pd.isna(v):
            return ""
    except (TypeError, ValueError):
        pass
    return str(v)


def expected_view(s: Any) -> dict[str, Any]:
    """What the page must show for stepper ``s`` (computed with the Python API)."""
    from iommu_lab import views

    ctr = s.counters()
    ring = s.ring_grid()
    shown = ring.slot_ids()
    tl = s.timeline().to_plotly_json()      # the plotly figure the stepper draws as SVG
    tl_head, _, tl_sub = tl["layout"]["title"]["text"].partition("<br>")
    tl_kinds = [t["type"] for t in tl["data"]]
    tlb = s.iotlb()
    pt = views.pgtable_table(s.domain, limit=32)
    return {
        "status": s.status(),
        "error": f"⚠ {s.error}" if s.error else "",
        "log_first": s.log[-1].strip() if s.log else None,
        "counters": {k: [str(int(r["value"])), str(int(r["delta"]))] for k, r in ctr.iterrows()},
        "ring_head": ring.head,
        "ring_sub": ring.sub,
        "ring_text": [ring.text[i] for i in shown],
        "ring_hover": [ring.hover_text(i) for i in shown],
        "ring_states": [ring.state[i] for i in shown],
        "ring_marks": [label for label, _, _ in ring.marks],
        "timeline_head": tl_head,
        "timeline_sub": re.sub(r"</?sup>", "", tl_sub),
        "timeline_bars": sum(len(t["x"]) for t, k in zip(tl["data"], tl_kinds) if k == "bar"),
        "timeline_markers": sum(len(t["x"]) for t, k in zip(tl["data"], tl_kinds)
                                if k == "scatter"),
        "iotlb_caption": (f"{len(tlb)} of {tlb.attrs['capacity']} entries, "
                          f"{tlb.attrs['stale']} stale"),
        "iotlb_head": [str(c) for c in tlb.columns],
        "iotlb_rows": [[_plain(v) for v in row] for row in tlb.itertuples(index=False)],
        "pgtable_caption": ("first 32 leaves shown, more exist" if pt.attrs["truncated"]
                            else f"{len(pt)} leaves"),
    }


def _as_lists(x: Any) -> Any:
    if isinstance(x, tuple | list):
        return [_as_lists(v) for v in x]
    return x


def compare_view(seen: dict[str, Any], exp: dict[str, Any]) -> list[str]:
    """Differences between the page (``seen``) and the Python API (``exp``)."""
    diffs = []
    for key in ("status", "error", "log_first", "pgtable_caption"):
        if seen.get(key) != exp[key]:
            diffs.append(f"{key}: page {seen.get(key)!r} != expected {exp[key]!r}")
    if seen["counters"] != exp["counters"]:
        bad = {k: (seen["counters"].get(k), v) for k, v in exp["counters"].items()
               if seen["counters"].get(k) != v}
        extra = sorted(set(seen["counters"]) - set(exp["counters"]))
        diffs.append(f"counters differ (page, expected) [value, delta]: {bad}; extra rows {extra}")
    ring = seen.get("ring")
    if not ring or not ring["rendered"]:
        diffs.append("ring not rendered")
    else:
        for key in ("head", "sub"):
            if ring[key] != exp[f"ring_{key}"]:
                diffs.append(f"ring {key}: page {ring[key]!r} != {exp[f'ring_{key}']!r}")
        if ring["text"] != exp["ring_text"] or ring["states"] != exp["ring_states"]:
            diffs.append(f"ring slots: page {list(zip(ring['text'], ring['states']))} != "
                         f"{list(zip(exp['ring_text'], exp['ring_states']))}")
        if ring["marks"] != exp["ring_marks"]:
            diffs.append(f"ring PROD/CONS marks: page {ring['marks']} != {exp['ring_marks']}")
        if ring["hover"] != exp["ring_hover"]:
            diffs.append("ring hover text (full command names) differs")
    tl = seen.get("timeline")
    want = [exp[k] for k in ("timeline_head", "timeline_sub", "timeline_bars",
                             "timeline_markers")]
    got = tl and [tl["head"], tl["sub"], tl["bars"], tl["markers"]]
    if not tl or not tl["rendered"] or got != want:
        diffs.append(f"timeline [head, sub, bars, markers]: page {got} != {want}")
    tlb = seen.get("iotlb")
    if not tlb:
        diffs.append("IOTLB table missing")
    else:
        if tlb["caption"] != exp["iotlb_caption"]:
            diffs.append(f"IOTLB caption: page {tlb['caption']!r} != {exp['iotlb_caption']!r}")
        if tlb["head"] != exp["iotlb_head"] or tlb["rows"] != exp["iotlb_rows"]:
            diffs.append(f"IOTLB rows: page {tlb['head']} {tlb['rows']} != "
                         f"{exp['iotlb_head']} {exp['iotlb_rows']}")
    return diffs


@dataclass
class StepperDriver:
    """Clicks the stepper on a page and keeps a Python twin in step with it."""

    page: Any
    root_sel: str
    twin: Any
    latencies: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        return self.page.eval_on_selector(self.root_sel, STEPPER_SNAPSHOT_JS)

    def wait_matches(self, timeout_s: float = 30) -> dict[str, Any]:
        exp = expected_view(self.twin)
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.snapshot()
            diffs = compare_view(seen, exp)
            if not diffs:
                return seen
            if time.monotonic() > deadline:
                raise AssertionError("the stepper on the page differs from the Python API:\n  "
                                     + "\n  ".join(diffs))
            self.page.wait_for_timeout(50)

    def click(self, button_cls: str, action: Any, timeout_s: float = 30) -> float:
        """Click ``.button_cls``, apply ``action(twin)``, wait for every view; returns ms."""
        action(self.twin)
        exp = expected_view(self.twin)
        exp_js = {k: exp[k] for k in ("status", "error", "log_first", "counters", "ring_head",
                                      "ring_sub", "iotlb_caption", "timeline_head",
                                      "timeline_sub")}
        try:
            res = self.page.evaluate(CLICK_AND_WAIT_JS, [
                self.root_sel, f"button.{button_cls}", exp_js, int(timeout_s * 1000),
                f"({STEPPER_SNAPSHOT_JS})"])
        except Exception as exc:
            diffs = compare_view(self.snapshot(), exp)
            raise AssertionError(f"after clicking {button_cls}: {exc}\n  "
                                 + "\n  ".join(diffs)) from None
        self.wait_matches(timeout_s=10)     # the full comparison (slots, hover, rows)
        self.phases.append(res["first"])
        return float(res["ms"])

    def type_into(self, input_cls: str, value: str, twin_widget: Any) -> None:
        box = self.page.locator(f"{self.root_sel} .{input_cls} input")
        box.fill(value)
        twin_widget.value = value
        # the value reaches the kernel before the next click (one ordered websocket)
        self.page.wait_for_timeout(50)


def run_stepper_scenario(page: Any, root_sel: str, twin: Any) -> dict[str, Any]:
    """map, DMA, unmap_fast, consume, sync, unmap, flush-all, bad input, then >= 20 timed
    clicks. Returns facts to report (latencies in ms)."""
    d = StepperDriver(page, root_sel, twin)
    d.wait_matches(timeout_s=60)            # the initial state, as the notebook built it
    steps = [
        ("iommu-map-btn", lambda s: s.map()),
        ("iommu-dma-read-btn", lambda s: s.dma_read()),
        ("iommu-unmap-fast-btn", lambda s: s.unmap_fast()),
        ("iommu-consume-btn", lambda s: s.consume(s.w_n.value)),
        ("iommu-consume-btn", lambda s: s.consume(s.w_n.value)),
        ("iommu-sync-btn", lambda s: s.tlb_sync()),
        ("iommu-map-btn", lambda s: s.map()),
        ("iommu-dma-read-btn", lambda s: s.dma_read()),
        ("iommu-unmap-btn", lambda s: s.unmap()),
        ("iommu-flush-all-btn", lambda s: s.flush_all()),
    ]
    facts: dict[str, Any] = {"checkpoints": []}
    for cls, action in steps:
        d.latencies.append(d.click(cls, action))
        st = twin.domain.stats()
        facts["checkpoints"].append(
            (cls, {k: st.get(k, 0) for k in ("inv_cmds", "sync_cmds", "doorbells")},
             twin.status()))
    seen = d.snapshot()
    assert any("NH_VA" in str(t) for t in _flatten(seen["ring"]["text"])), seen["ring"]["text"]
    assert any("CMD_TLBI_NH_VA" in str(h) for h in _flatten(seen["ring"]["hover"]))
    assert any("CMD_SYNC" in str(h) for h in _flatten(seen["ring"]["hover"]))
    assert "CMDQ_PROD" in seen["ring"]["sub"] and "CMDQ_CONS" in seen["ring"]["sub"]
    assert "CMD_TLBI_NH_VA" in " ".join(seen["counters"]), seen["counters"]

    # bad input: a message in .iommu-error, counters untouched
    facts["errors"] = []
    for bad in ("0x1001", "banana"):
        before = d.snapshot()["counters"]
        d.type_into("iommu-iova-input", bad, twin.w_iova)
        d.click("iommu-map-btn", lambda s: s.map())
        after = d.snapshot()
        assert after["error"], f"no error message for iova {bad!r}"
        assert after["counters"] == before, f"counters changed after bad iova {bad!r}"
        expect_visible(page, f"{root_sel} .iommu-error")
        facts["errors"].append(after["error"])
    d.type_into("iommu-iova-input", "0x0", twin.w_iova)

    # timed clicks: map / unmap alternately, every view must be updated each time
    d.latencies.clear()
    d.phases.clear()
    kernel_ms: list[float] = []
    for i in range(24):
        if i % 2 == 0:
            d.latencies.append(d.click("iommu-map-btn", lambda s: s.map()))
        else:
            d.latencies.append(d.click("iommu-unmap-btn", lambda s: s.unmap()))
        # the stepper's own "views refreshed in N ms" (kernel side), when it shows one
        shown = page.evaluate("(sel) => { const e = document.querySelector(sel); "
                              "return e ? e.textContent : ''; }", f"{root_sel} .iommu-timing")
        m = re.search(r"([\d.]+)\s*ms", shown or "")
        if m:
            kernel_ms.append(float(m.group(1)))
    facts["kernel_refresh_ms"] = kernel_ms
    assert d.snapshot()["error"] == ""
    facts["latencies_ms"] = list(d.latencies)
    keys = sorted({k for p in d.phases for k in p})
    facts["phases_ms"] = {k: statistics.median(p[k] for p in d.phases if k in p) for k in keys}
    facts["final_stats"] = {k: twin.domain.stats().get(k, 0)
                            for k in ("map_calls", "unmap_calls", "inv_cmds", "sync_cmds")}
    return facts


def expect_visible(page: Any, selector: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector).first).to_be_visible(timeout=10_000)


def _flatten(x: Any) -> list[Any]:
    if isinstance(x, list | tuple):
        return [v for item in x for v in _flatten(item)]
    return [x]


CLICK_TARGET_MS = {"median": 150, "p90": 250}     # DESIGN §8, issue 13
APP_USABLE_TARGET_S = 5.0


def percentiles(ms: list[float]) -> dict[str, float]:
    """median and p90 (nearest rank) of a sample."""
    q = sorted(ms)
    return {"median": statistics.median(q),
            "p90": q[min(len(q) - 1, int(round(0.9 * (len(q) - 1))))]}


def assert_click_targets(ms: list[float], where: str) -> None:
    """Click -> every view updated within :data:`CLICK_TARGET_MS` (median and p90)."""
    pc = percentiles(ms)
    misses = [f"{k} {pc[k]:.0f} ms > {v:.0f} ms" for k, v in CLICK_TARGET_MS.items()
              if pc[k] > v]
    assert not misses, (f"stepper clicks in {where}: {', '.join(misses)} "
                        f"({latency_summary(ms)})")


def latency_summary(ms: list[float], targets: dict[str, float] | None = None) -> str:
    if not ms:
        return "no samples"
    q = sorted(ms)
    pc = percentiles(q)
    text = (f"median {pc['median']:.0f} ms, p90 {pc['p90']:.0f} ms, "
            f"min {q[0]:.0f} ms, max {q[-1]:.0f} ms (n={len(q)})")
    if targets:
        misses = [f"{k} over {v:.0f} ms" for k, v in targets.items() if pc[k] > v]
        text += (" — MISSES the target: " + ", ".join(misses) if misses else
                 " — meets the target (" + ", ".join(f"{k} <= {v:.0f} ms"
                                                      for k, v in targets.items()) + ")")
    return text


def phases_summary(phases: dict[str, float]) -> str:
    """When each view first showed the new state (medians, ms after the click)."""
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(phases.items(), key=lambda kv: kv[1]))
