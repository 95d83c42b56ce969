"""The trace-upload app (``notebooks/app-replay.ipynb``) in Voilà, in Debian's Chromium:
upload the shipped real excerpt through the FileUpload widget and read the replay table,
the lazy-fault table and the chart; a file that is no trace shows a message in the app and
keeps the table. Served like ``make app`` serves every app (one Voilà on notebooks/, offline
template, token on).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import helpers
import pytest

pytestmark = pytest.mark.browser

APP = "app-replay.ipynb"
ROOT_SEL = ".iommu-replay"
EXCERPT = helpers.ROOT / "data" / "traces" / "real" / "mtk-vcodec-2021.txt"
PAIRS = 16                          # ReplayModel's default 4 strategies x 4 callers
TIMEOUT_MS = 60_000


def upload(page: Any, path: Path) -> None:
    """Click the FileUpload button and answer the browser's file chooser with ``path``."""
    with page.expect_file_chooser(timeout=TIMEOUT_MS) as chooser:
        page.locator(f"{ROOT_SEL} .iommu-replay-upload").first.click()
    chooser.value.set_files(str(path))


@pytest.mark.skipif(not (helpers.NOTEBOOKS / APP).exists(), reason=f"notebooks/{APP} missing")
def test_upload_a_real_excerpt_and_read_the_replay(voila_factory: Any, new_page: Any,
                                                   screenshots_dir: Path, timings: Any,
                                                   tmp_path: Path) -> None:
    from playwright.sync_api import expect

    srv = voila_factory(APP)
    p = new_page()
    page = p.page
    helpers.wait_voila_warm(srv, APP)
    t0 = time.perf_counter()
    resp = page.goto(srv.app_url(APP), wait_until="domcontentloaded",
                     timeout=helpers.VOILA_TIMEOUT_S * 1000)
    srv.opened(APP)
    assert resp is not None and resp.ok
    expect(page.locator(f"{ROOT_SEL} .iommu-replay-run-btn")).to_be_visible(
        timeout=helpers.VOILA_TIMEOUT_S * 1000)           # the app answers clicks
    usable = time.perf_counter() - t0
    assert helpers.wait_for_sentinel_or_error(page, "app-replay", 60) == "done"
    expect(page.locator(f"{ROOT_SEL} .iommu-replay-status")).to_contain_text(
        "no trace loaded", timeout=TIMEOUT_MS)

    t1 = time.perf_counter()
    upload(page, EXCERPT)
    rows = page.locator(f"{ROOT_SEL} table.iommu-replay-table tbody tr")
    expect(rows).to_have_count(PAIRS, timeout=TIMEOUT_MS)
    replayed = time.perf_counter() - t1
    expect(page.locator(f"{ROOT_SEL} .iommu-replay-status")).to_contain_text(
        "mtk-vcodec-2021.txt: 0 maps, 9 unmaps, 1 faults")
    lazy = page.locator(f"{ROOT_SEL} table.iommu-lazy-table tbody tr")
    expect(lazy).to_have_count(1)
    expect(lazy.first).to_contain_text("stale")
    expect(page.locator(f"{ROOT_SEL} table.iommu-infer-table")).to_contain_text("dma-strict")
    for out in ("chart", "trace"):
        expect(page.locator(f"{ROOT_SEL} .iommu-replay-{out}-out .js-plotly-plot .main-svg")
               .first).to_be_visible(timeout=TIMEOUT_MS)
    first = rows.first.inner_text()
    assert "smmuv3-v4.14" in first and "unmap-each" in first

    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a trace\n")
    upload(page, junk)
    expect(page.locator(f"{ROOT_SEL} .iommu-replay-error")).to_contain_text(
        "no iommu map/unmap/io_page_fault events in notes.txt", timeout=TIMEOUT_MS)
    expect(rows).to_have_count(PAIRS)              # the previous trace and results stay
    helpers.full_page_screenshot(page, screenshots_dir / "voila-replay-after-upload.png",
                                 scroller="#rendered_cells")
    timings.add("voila replay app: usable / upload -> table",
                f"{usable:.1f} s / {replayed:.1f} s ({PAIRS} pairs, real MT8173 excerpt)")
    report = helpers.page_report(page)
    assert not report["tracebacks"], report["tracebacks"]
    assert not p.log.problems(), "\n".join(p.log.problems())
