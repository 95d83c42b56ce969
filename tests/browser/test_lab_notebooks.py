"""Every notebook in notebooks/ runs top to bottom in JupyterLab in a real browser.

For each notebook (the lessons are jupytext MyST ``.md`` files, which the venv's Lab settings
open as notebooks, as ``make lab`` does; the apps are ``.ipynb``): open it, Run → Run All
Cells, wait for the last cell's sentinel (``notebook complete: <name>``), then check there is
no traceback, no widget/render error and no console error, that widgets and plotly figures
rendered, and save a full-page screenshot. And one click on a link in the index, or on a
lesson in the file browser, opens that lesson as a notebook.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import helpers
import pytest

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("name", helpers.notebook_names())
def test_notebook_runs_in_lab(name: str, lab: helpers.Server, lab_page: Any,
                              screenshots_dir: Path, timings: Any) -> None:
    stem = Path(name).stem
    p = lab_page
    page = p.page
    t0 = time.perf_counter()
    helpers.open_notebook_in_lab(page, lab, f"notebooks/{name}", workspace=f"t-{stem}")
    t_open = time.perf_counter() - t0

    t1 = time.perf_counter()
    helpers.run_all_cells(page)
    outcome = helpers.wait_for_sentinel_or_error(page, stem, helpers.RUN_ALL_TIMEOUT_S)
    t_run = time.perf_counter() - t1
    if outcome == "done":
        helpers.wait_kernel_idle(page)
        helpers.settle(page, wait_for=".jupyter-widgets" if helpers.expects_widgets(name)
                       else None)
    lab.remember_children()

    shot = screenshots_dir / f"lab-{stem}.png"
    helpers.full_page_screenshot(page, shot, scroller=helpers.NOTEBOOK_SCROLLER)
    timings.add(f"lab run-all {name}", f"{t_run:.1f} s (open {t_open:.1f} s)")

    report = helpers.page_report(page)
    for text in report["stderr"]:          # warnings: reported, not failed
        timings.add(f"note: stderr output in {name} (Lab)", text.replace("\n", " ")[:300])
    problems = helpers.page_problems(report, p.log, widgets=helpers.expects_widgets(name),
                                     plotly=helpers.expects_plotly(name))
    if outcome != "done":
        problems.insert(0, f"Run All did not reach the sentinel "
                           f"{helpers.SENTINEL.format(name=stem)!r}: {outcome}")
    assert not problems, (f"{name} in JupyterLab (screenshot {shot}):\n- "
                          + "\n- ".join(problems))


def test_lab_requires_the_token(lab: helpers.Server) -> None:
    """DESIGN §8: token auth stays on (the server binds 127.0.0.1 only: see conftest)."""
    assert helpers.status_without_token(f"{lab.url}/api/contents") == 403
    assert helpers.status_without_token(f"{lab.url}/api/kernels") == 403
    assert lab.api("GET", "/api/status")["kernels"] >= 0


def test_one_click_opens_a_lesson_as_a_notebook(lab: helpers.Server, lab_page: Any,
                                                screenshots_dir: Path, timings: Any) -> None:
    """From the index (``make lab`` opens ``00-Index.md``): a link, then the file browser."""
    lessons = [n for n in helpers.notebook_names() if n.endswith(".md") and n[:2] != "00"]
    assert len(lessons) >= 2, lessons
    page = lab_page.page
    helpers.open_notebook_in_lab(page, lab, "notebooks/00-Index.md", workspace="t-one-click")

    t0 = time.perf_counter()
    link = page.locator(f'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-RenderedMarkdown '
                        f'a[href*="{lessons[0]}"]').first
    link.click()
    helpers.expect_notebook_opened(page, lab, f"notebooks/{lessons[0]}")
    timings.add("lab index link -> lesson open as a notebook",
                f"{time.perf_counter() - t0:.1f} s")

    listing = page.locator(".jp-FileBrowser .jp-DirListing-content")

    def item(name: str) -> Any:
        return listing.locator(".jp-DirListing-item").filter(
            has=page.locator(".jp-DirListing-itemText", has_text=re.compile(
                f"^{re.escape(name)}$")))
    if not item(lessons[1]).count():            # the file browser may still be at the root
        item("notebooks").click()
    t1 = time.perf_counter()
    item(lessons[1]).click()
    helpers.expect_notebook_opened(page, lab, f"notebooks/{lessons[1]}")
    timings.add("lab file browser click -> lesson open as a notebook",
                f"{time.perf_counter() - t1:.1f} s")
    page.screenshot(path=str(screenshots_dir / "lab-one-click.png"))
    assert not lab_page.log.problems(), "\n".join(lab_page.log.problems())
