"""Structure of the notebooks: the lessons' jupytext MyST sources (``notebooks/NN-*.md``), the
Voilà apps (``notebooks/app-*.ipynb``), the generated chrome and the executable copies.

Execution itself: ``make notebooks`` (``tools/notebook_chrome.py build build/notebooks``, then
``pytest --nbmake build/notebooks``) and the browser tests.
"""

from __future__ import annotations

import importlib.util
import json
import re
from functools import cache
from importlib import import_module
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
INDEX = "00-Index"
LESSONS = ["01-IO-page-tables-and-iommu_map", "02-The-IOTLB-and-why-unmap-must-flush",
           "03-A-flush-interface-range_add-sync-flush_all", "04-SMMUv3-command-queue",
           "05-Gather-and-range-invalidation", "06-Other-hardware-VT-d-AMD-Vi-SMMUv2-virtio",
           "07-Strict-vs-lazy-flush-queues", "08-Strategy-shoot-out",
           "09-Replay-your-own-trace", "10-Design-your-own-flush-strategy"]
APPS = ["app-stepper", "app-compare", "app-replay"]
# the second half of the course (issue 12) ends with recap questions, as DESIGN §7 asks
RECAP = LESSONS[4:]
SOURCES = [INDEX, *LESSONS]           # .md, edited by hand (apart from the chrome)
ALL = [*SOURCES, *APPS]
REQUIRED = ["## Learning objectives", "## Prerequisites and time", "## Vocabulary",
            "**Predict:**", "## Exercises", "### Exercise 1", "### Exercise 2",
            "<details><summary><b>Solution</b>", "## Kernel cross-reference",
            "| Python (iommu_lab) | kernel symbol | file | version |", "## Instructor notes"]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


chrome = load_tool("notebook_chrome")


def path(stem: str) -> Path:
    return NB_DIR / (f"{stem}.ipynb" if stem in APPS else f"{stem}.md")


@cache
def load(stem: str) -> nbformat.NotebookNode:
    if stem in APPS:
        return nbformat.read(path(stem), as_version=4)
    return jupytext.read(path(stem), fmt="md:myst")


def markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The executable copies, as ``make notebooks`` builds them."""
    dest = tmp_path_factory.mktemp("build") / "notebooks"
    chrome.build(dest)
    return dest


# ---- files and chrome --------------------------------------------------------------------
def test_every_planned_notebook_exists_once():
    assert [row[1] for row in chrome.PLAN] == SOURCES, "the plan is 00-10, in order"
    assert chrome.APPS == APPS and set(chrome.APP_TITLES) == set(APPS)
    assert sorted(p.stem for p in NB_DIR.glob("*.md")) == sorted(SOURCES)
    assert sorted(p.stem for p in NB_DIR.glob("*.ipynb")) == sorted(APPS), (
        "lessons are kept as .md only (the .ipynb copies are built in build/notebooks/)")
    assert [p.stem for p in chrome.lesson_paths()] == SOURCES


def test_chrome_is_up_to_date():
    """``python tools/notebook_chrome.py --check``: nav, curriculum, versions, sentinel."""
    assert chrome.main(["--check"]) == 0, "run python tools/notebook_chrome.py"


def test_chrome_tool_rewrites_only_marked_regions():
    text = path(LESSONS[1]).read_text(encoding="utf-8")
    edited = (text.replace("[Index](00-Index.md) |", "[Idx](00-Index.md) |")
              .replace("print_versions()\n```", "print_versions(0)\n```")
              .replace("## Vocabulary", "## Vocabulary (edited)"))
    assert edited.count("[Idx]") == 2 and "print_versions(0)" in edited
    out = chrome.render_lesson(path(LESSONS[1]), edited)
    assert out == text.replace("## Vocabulary", "## Vocabulary (edited)")
    assert chrome.render_lesson(path(LESSONS[1]), out) == out   # idempotent


def test_chrome_tool_refuses_a_lesson_without_markers():
    text = path(LESSONS[0]).read_text(encoding="utf-8")
    with pytest.raises(chrome.ChromeError, match="sentinel"):
        chrome.render_lesson(path(LESSONS[0]), text.replace(":chrome: sentinel\n", ""))
    with pytest.raises(chrome.ChromeError, match="navigation"):
        chrome.render_lesson(path(LESSONS[0]), re.sub(r"<!-- /?chrome:nav[^>]*-->\n?", "",
                                                      text))


@pytest.mark.parametrize("stem", SOURCES)
def test_sources_are_in_jupytext_canonical_form(stem):
    """Saving a lesson from JupyterLab (jupytext) rewrites nothing, so an edit made there is
    as small a diff as one made in a text editor."""
    text = path(stem).read_text(encoding="utf-8")
    nb = jupytext.reads(text, fmt="md:myst")
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    again = jupytext.writes(nb, fmt="md:myst")

    def ignore_version(t: str) -> str:
        return re.sub(r"(?m)^    jupytext_version: .*\n", "", t)

    assert ignore_version(again) == ignore_version(text), (
        f"{stem}.md is not as jupytext writes it: run jupytext --to md:myst --update on it")


@pytest.mark.parametrize("stem", SOURCES)
def test_no_answers_in_what_ships(stem):
    """The .md a student opens carries no solution: no nbmake mock, no assertion metadata."""
    text = path(stem).read_text(encoding="utf-8")
    for word in ("nbmake", "mock", "post_cell_execute"):
        assert word not in text, f"{stem}.md mentions {word!r}"
    for c in load(stem).cells:
        assert set(c.metadata) <= {"chrome"}, f"{stem}: cell metadata {dict(c.metadata)}"


# ---- shape of every notebook ----------------------------------------------------------------
@pytest.mark.parametrize("stem", ALL)
def test_small_code_cells(stem):
    nb = load(stem)
    for c in code_cells(nb):
        lines = c.source.strip().splitlines()
        assert 1 <= len(lines) <= 4, f"{stem}: code cell of {len(lines)} lines:\n{c.source}"
        assert "print(" not in c.source or c.source.count("print(") <= 3


@pytest.mark.parametrize("stem", APPS)
def test_apps_are_stripped_and_valid(stem):
    nb = load(stem)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata
    for c in code_cells(nb):
        assert c.outputs == [] and c.execution_count is None, f"{stem}: outputs saved"


@pytest.mark.parametrize("stem", ALL)
def test_first_code_cell_prints_versions_and_last_prints_sentinel(stem):
    cells = code_cells(load(stem))
    assert "print_versions()" in cells[0].source and cells[0].metadata["chrome"] == "versions"
    assert cells[-1].source.strip() == f'print("notebook complete: {stem}")'
    assert cells[-1].metadata["chrome"] == "sentinel"


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
    if stem in RECAP:
        assert "## Recap questions" in text, f"{stem}: no recap questions"
        recap = text[text.index("## Recap questions"):]
        assert len(re.findall(r"(?m)^\d+\. ", recap)) >= 3, f"{stem}: fewer than 3 recap questions"


# ---- exercises: answers mocked in the built copies only ------------------------------------
@pytest.mark.parametrize("stem", LESSONS)
def test_built_copies_mock_every_answer_and_check_it(stem, built):
    nb = nbformat.read(built / f"{stem}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = code_cells(nb)
    mocked = [i for i, c in enumerate(code) if c.source.startswith("ANSWER = None")]
    assert len(mocked) >= 2
    for i in mocked:
        answer = code[i].metadata["nbmake"]["mock"]["ANSWER"]
        m = chrome.CHECK_CELL.fullmatch(code[i + 1].source.strip())
        assert m, code[i + 1].source
        post = code[i + 1].metadata["nbmake"]["post_cell_execute"]
        assert post[0].startswith(f"assert {m['module']}.check({m['var']}, ANSWER)")
        # the mocked answer is right for the notebook's seed (0), as the check cell will say
        mod = import_module(f"iommu_lab.exercises.{m['module']}")
        assert mod.check(mod.make_problem(0), answer).startswith("✓")
    checks = [c for c in code if ".check(" in c.source and c.source.startswith("print(")]
    assert len(checks) == len(mocked)


def test_built_copies_are_every_notebook_and_otherwise_the_source(built):
    assert sorted(p.stem for p in built.glob("*.ipynb")) == sorted(ALL)
    for stem in SOURCES:
        copy = nbformat.read(built / f"{stem}.ipynb", as_version=4)
        assert [c.source for c in copy.cells] == [c.source for c in load(stem).cells]
        assert all(c.outputs == [] for c in code_cells(copy))
    for stem in APPS:
        assert (built / f"{stem}.ipynb").read_bytes() == path(stem).read_bytes()


# ---- navigation --------------------------------------------------------------------------
@pytest.mark.parametrize("stem", SOURCES)
def test_navigation_links_resolve(stem):
    text = markdown(load(stem))
    links = re.findall(r"\]\(([^)]+\.(?:md|ipynb))\)", text)
    assert links, f"{stem}: no navigation"
    for link in links:
        assert (NB_DIR / link).exists(), f"{stem}: broken link {link}"
        if link.endswith(".ipynb"):
            assert Path(link).stem in APPS, f"{stem}: link {link} (lessons are .md files)"
    if stem != INDEX:
        assert "(00-Index.md)" in text


def test_lessons_link_prev_and_next():
    """Each lesson links its neighbours in the plan (the first one the index, the last one
    no next), at the top and the bottom; no lesson says "(coming)" any more."""
    for i, stem in enumerate(LESSONS):
        text = markdown(load(stem))
        navs = re.findall(r"<!-- chrome:nav[^>]*-->\n(.*?)\n<!-- /chrome:nav -->", text, re.S)
        assert len(navs) == 2 and navs[0] == navs[1], f"{stem}: navigation at top and bottom"
        links = re.findall(r"\]\(([^)]+)\.md\)", navs[0])
        prev = INDEX if i == 0 else LESSONS[i - 1]
        nxt = [LESSONS[i + 1]] if i + 1 < len(LESSONS) else []
        assert links == [prev, INDEX, *nxt], f"{stem}: {links}"
        assert "(coming)" not in navs[0]
    assert "[05 · Gather and range invalidation (v5.4, RIL) →]" in markdown(load(LESSONS[3]))
    assert "[← 09 · Replay your own ftrace log]" in markdown(load(LESSONS[-1]))


def test_nav_says_coming_for_a_planned_lesson_without_a_file(monkeypatch):
    """The tool still handles a planned lesson that is not written yet (a new row in PLAN)."""
    monkeypatch.setattr(chrome, "ready", lambda s: s != LESSONS[5])
    assert f"next: 06 · {chrome.PLAN[6][2]} (coming)" in chrome.nav(LESSONS[4])
    assert f"[← 05 · {chrome.PLAN[5][2]}]({LESSONS[4]}.md)" in chrome.nav(LESSONS[6])
    row = next(r for r in chrome.curriculum(INDEX).splitlines() if r.startswith("| 06 |"))
    assert "(coming)" in row and "](" not in row


def test_index_lists_all_ten_and_how_to_start():
    """The index's table: every lesson 01-10 linked, with a line on what it teaches; no
    lesson "coming"; every app linked."""
    text = markdown(load(INDEX))
    assert "make lab" in text
    rows = re.findall(r"^\| (\d\d) \| \[([^]]+)\]\(([^)]+)\.md\) \| ([^|]+) \|$", text, re.M)
    assert [r[0] for r in rows] == [f"{n:02d}" for n in range(1, 11)]
    assert [r[2] for r in rows] == LESSONS
    for (num, title, _stem, learn), plan in zip(rows, chrome.PLAN[1:], strict=True):
        assert title == plan[2] and learn.strip() == plan[3]
        assert len(learn.split()) >= 6, f"{num}: say what the notebook teaches"
    table = text[text.index("<!-- chrome:curriculum"):text.index("<!-- /chrome:curriculum")]
    assert "(coming)" not in table
    for app in APPS:
        assert f"]({app}.ipynb)" in text, f"{app} not linked from the index"


def test_apps_are_just_the_widget():
    for stem, name in (("app-stepper", "Stepper("), ("app-compare", "CompareDashboard("),
                       ("app-replay", "ReplayApp(")):
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
    if stem in LESSONS[2:4]:       # the two lessons that step through the 2017 debate
        assert "LKML, 17 Aug 2017" in text
    # a mail is linked by its Message-ID on lore.kernel.org, not by a search or a list page
    for url in re.findall(r"https?://lore\.kernel\.org/[^)\s>]*", text):
        assert re.fullmatch(r"https://lore\.kernel\.org/(r|all|[\w-]+)/[^/@]+@[^/]+/?", url), url


# ---- JupyterLab opens the lessons as notebooks ------------------------------------------------
def test_jupyter_settings_open_markdown_as_notebooks(tmp_path):
    tool = load_tool("jupyter_settings")
    assert tool.main(["--prefix", str(tmp_path)]) == 0
    lab = json.loads((tmp_path / "share/jupyter/lab/settings/overrides.d/iommu-lab.json")
                     .read_text())
    viewers = lab["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["markdown"] == viewers["myst"] == "Jupytext Notebook"
    voila = json.loads((tmp_path / "etc/jupyter/voila.json").read_text())
    assert voila["VoilaConfiguration"]["extension_denylist"] == ["jupyterlab-jupytext"]
    assert tool.main(["--check", "--prefix", str(tmp_path)]) == 0
    assert tool.main(["--check", "--prefix", str(tmp_path / "elsewhere")]) == 1
    make = (ROOT / "Makefile").read_text()
    assert "--LabApp.default_url=/lab/tree/00-Index.md" in make
    assert "tools/jupyter_settings.py" in make
