"""Structure of the committed notebooks (execution itself: ``pytest --nbmake notebooks``)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
LESSONS = ["01-IO-page-tables-and-iommu_map", "02-The-IOTLB-and-why-unmap-must-flush",
           "03-A-flush-interface-range_add-sync-flush_all", "04-SMMUv3-command-queue"]
APPS = ["app-stepper", "app-compare"]
ALL = ["00-Index", *LESSONS, *APPS]
REQUIRED = ["## Learning objectives", "## Prerequisites and time", "## Vocabulary",
            "**Predict:**", "## Exercises", "### Exercise 1", "### Exercise 2",
            "<details><summary><b>Solution</b>", "## Kernel cross-reference",
            "| Python (iommu_lab) | kernel symbol | file | version |", "## Instructor notes"]


def load(stem: str) -> nbformat.NotebookNode:
    return nbformat.read(NB_DIR / f"{stem}.ipynb", as_version=4)


def markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_every_planned_notebook_exists():
    assert sorted(p.stem for p in NB_DIR.glob("*.ipynb")) == sorted(ALL)


def test_notebooks_match_their_generator():
    spec = importlib.util.spec_from_file_location("make_notebooks",
                                                  ROOT / "tools" / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for stem in ALL:
        assert (NB_DIR / f"{stem}.ipynb").read_text(encoding="utf-8") == mod.render(stem), (
            f"{stem} is out of date: run python tools/make_notebooks.py")


@pytest.mark.parametrize("stem", ALL)
def test_stripped_valid_and_small_cells(stem):
    nb = load(stem)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata
    for c in code_cells(nb):
        assert c.outputs == [] and c.execution_count is None, f"{stem}: outputs saved"
        lines = c.source.strip().splitlines()
        assert 1 <= len(lines) <= 4, f"{stem}: code cell of {len(lines)} lines:\n{c.source}"
        assert "print(" not in c.source or c.source.count("print(") <= 3


@pytest.mark.parametrize("stem", ALL)
def test_first_code_cell_prints_versions_and_last_prints_sentinel(stem):
    cells = code_cells(load(stem))
    assert "print_versions()" in cells[0].source
    assert cells[-1].source.strip() == f'print("notebook complete: {stem}")'


@pytest.mark.parametrize("stem", ALL)
def test_exactly_one_h1(stem):
    h1 = [line for line in markdown(load(stem)).splitlines() if re.match(r"^# \S", line)]
    assert len(h1) == 1, h1


@pytest.mark.parametrize("stem", LESSONS)
def test_lesson_has_every_required_section(stem):
    nb = load(stem)
    text = markdown(nb)
    for needle in REQUIRED:
        assert needle in text, f"{stem}: missing {needle!r}"
    assert text.count("**Predict:**") >= 3
    src = "\n".join(c.source for c in code_cells(nb))
    assert "SEED = 0  # change me" in src
    assert src.count("ANSWER = None") >= 2 and src.count(".check(") >= 2
    assert src.count(".make_problem(SEED)") >= 2


@pytest.mark.parametrize("stem", LESSONS)
def test_exercise_cells_are_mocked_and_checked_in_ci(stem):
    nb = load(stem)
    mocked = [c for c in code_cells(nb) if "ANSWER = None" in c.source]
    assert mocked and all("ANSWER" in c.metadata["nbmake"]["mock"] for c in mocked)
    checks = [c for c in code_cells(nb) if c.source.startswith("print(") and ".check(" in c.source]
    assert len(checks) == len(mocked)
    for c in checks:
        assert c.metadata["nbmake"]["post_cell_execute"][0].startswith("assert ")


@pytest.mark.parametrize("stem", ["00-Index", *LESSONS])
def test_navigation_links_resolve(stem):
    text = markdown(load(stem))
    links = re.findall(r"\]\(([^)]+\.ipynb)\)", text)
    assert links, f"{stem}: no navigation"
    for link in links:
        assert (NB_DIR / link).exists(), f"{stem}: broken link {link}"
    if stem != "00-Index":
        assert "(00-Index.ipynb)" in text


def test_lessons_link_prev_and_next():
    for i, stem in enumerate(LESSONS):
        text = markdown(load(stem))
        prev = "00-Index" if i == 0 else LESSONS[i - 1]
        assert f"({prev}.ipynb)" in text
        if i + 1 < len(LESSONS):
            assert f"({LESSONS[i + 1]}.ipynb)" in text
    assert "05 · Gather and range invalidation" in markdown(load(LESSONS[-1]))


def test_index_lists_all_ten_and_how_to_start():
    text = markdown(load("00-Index"))
    assert "make lab" in text
    for n in range(10):
        assert re.search(rf"^\| 0{n} \|", text, re.M) or n == 0, f"notebook 0{n} not listed"
    for stem in LESSONS:
        assert f"]({stem}.ipynb)" in text
    rows = [line for line in text.splitlines() if re.match(r"^\| 0[5-9] \|", line)]
    assert len(rows) == 5 and all("coming" in r and ".ipynb" not in r for r in rows)
    assert "(app-stepper.ipynb)" in text and "(app-compare.ipynb)" in text


def test_apps_are_just_the_widget():
    for stem, name in (("app-stepper", "Stepper("), ("app-compare", "CompareDashboard(")):
        nb = load(stem)
        assert len(code_cells(nb)) == 3 and name in code_cells(nb)[1].source
        assert len([c for c in nb.cells if c.cell_type == "markdown"]) == 1


@pytest.mark.parametrize("stem", LESSONS)
def test_quotes_from_the_mail_are_short(stem):
    """Paraphrase and cite; quote at most a line or two of the 2017 mail."""
    text = markdown(load(stem))
    quoted = re.findall(r'"([^"\n]{20,})"', text)
    for q in quoted:
        assert len(q) < 160, q
    if stem in LESSONS[2:]:
        assert "LKML, 17 Aug 2017" in text
