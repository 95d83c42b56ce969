"""Every notebook in notebooks/ runs top to bottom in JupyterLab in a real browser.

For each notebook: open it, Run → Run All Cells, wait for the last cell's sentinel
(``notebook complete: <name>``), then check there is no traceback, no widget/render error and
no console error, that widgets and plotly figures rendered, and save a full-page screenshot.
"""

from __future__ import annotations

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
