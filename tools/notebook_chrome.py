"""The generated parts ("chrome") of the notebooks, and executable copies of them for CI.

The lessons are jupytext MyST markdown files, ``notebooks/NN-*.md``: an instructor edits them
as text, or opens them as notebooks in JupyterLab (``make lab``). Everything in a lesson is
written by hand except these marked parts, which this tool rewrites (like PDSH's
``add_navigation.py``) and never anything else:

- ``<!-- chrome:nav ... -->`` … ``<!-- /chrome:nav -->``, at the top and the bottom of each
  lesson: ← previous | Index | next →;
- ``<!-- chrome:curriculum ... -->`` … ``<!-- /chrome:curriculum -->``, in the index: the
  table of notebooks, from ``PLAN``;
- the code cell marked ``:chrome: versions`` (the first one): prints the versions;
- the code cell marked ``:chrome: sentinel`` (the last one):
  ``print("notebook complete: <stem>")``, which the browser tests wait for.

The Voilà apps stay committed notebooks (``notebooks/app-*.ipynb``, Voilà needs them); the tool
rewrites their two chrome code cells the same way and keeps them stripped.

Answers never ship: the ``ANSWER = None`` cells in a lesson carry no solution. ``build`` writes
executable ``.ipynb`` copies for nbmake in which each ``ANSWER`` cell is mocked with the
solution for the notebook's ``SEED`` and the check cell after it must print ✓.

    python tools/notebook_chrome.py              # rewrite the chrome (idempotent)
    python tools/notebook_chrome.py --check      # exit 1 if a file would change
    python tools/notebook_chrome.py build DIR    # executable copies (make: build/notebooks)

A new lesson: add a row to ``PLAN``, write ``notebooks/<stem>.md`` with the markers above
(copy them from a neighbour), run the tool. A lesson is "ready" once its ``.md`` exists.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
INDEX = "00-Index"

PLAN = [  # (number, file stem, title in navigation and the index, what a student learns there)
    ("00", "00-Index", "Index: how to use this suite",
     "how to start, and the chart the course explains"),
    ("01", "01-IO-page-tables-and-iommu_map", "IO page tables and iommu_map",
     "how `iommu_map` splits a range by `pgsize_bitmap` and walks the io-pgtable"),
    ("02", "02-The-IOTLB-and-why-unmap-must-flush", "The IOTLB and why unmap must flush",
     "a stale IOTLB hit step by step, why an unmap must invalidate and wait, and v4.14's "
     "flush inside every unmap"),
    ("03", "03-A-flush-interface-range_add-sync-flush_all",
     "A flush interface: range_add, sync, flush_all (Joerg Roedel, 2017)",
     "the 2017 proposal, what merged in v4.14, and why the caller sets the flush count"),
    ("04", "04-SMMUv3-command-queue", "The SMMUv3 command queue (Will Deacon's reply, stepped)",
     "the SMMUv3 command queue: early issue against a flush-all, doorbells, CMD_SYNC waits"),
    ("05", "05-Gather-and-range-invalidation", "Gather and range invalidation (v5.4, RIL)",
     "the v5.4 gather and its merge rules, TLBIs in batches of 64, SMMUv3.2 range TLBIs, "
     "several CPUs on one queue"),
    ("06", "06-Other-hardware-VT-d-AMD-Vi-SMMUv2-virtio",
     "Other hardware: VT-d, AMD-Vi, SMMUv2, virtio-iommu",
     "VT-d address masks and DSI, AMD's aligned superset, SMMUv2 polling, virtio's VM "
     "exits, device TLBs (ATS), the hardware that needs a sync on map"),
    ("07", "07-Strict-vs-lazy-flush-queues", "Strict vs lazy: flush queues and the stale window",
     "the per-CPU flush queue (256 entries, 10 ms), the stale window as a security metric, "
     "`iommu.strict` history, measured beside modelled"),
    ("08", "08-Strategy-shoot-out", "Strategy shoot-out: workloads × strategies, scaling",
     "workloads × strategies × callers, cost against size on log axes, CPU scaling, which "
     "conclusions survive a sweep of the assumed costs"),
    ("09", "09-Replay-your-own-trace", "Replay your own ftrace log",
     "record an iommu trace, replay it under every pair, infer the caller, mark the faults "
     "lazy flushing would have hidden"),
    ("10", "10-Design-your-own-flush-strategy", "Design your own flush strategy: write it, "
     "fuzz it, race it",
     "write a flush strategy, fuzz it for stale hits, race it against the kernel's"),
]
APPS = ["app-stepper", "app-compare", "app-replay"]
APP_TITLES = {  # the apps as the index lists them (Voilà; no narrative, for live demos)
    "app-stepper": "the stepper",
    "app-compare": "the comparison dashboard",
    "app-replay": "replay your own trace (upload a file)",
}

# <!-- chrome:NAME anything -->\nBODY\n<!-- /chrome:NAME -->  (inside a markdown cell)
MD_REGION = re.compile(r"(?P<open><!-- chrome:(?P<name>[\w-]+)\b[^\n]*-->\n)(?P<body>.*?)"
                       r"(?P<close>\n<!-- /chrome:(?P=name) -->)", re.S)
# ```{code-cell} ipython3\n[:option: ...\n]:chrome: NAME\n[...]\nBODY\n```
CODE_REGION = re.compile(r"(?P<open>^```\{code-cell\}[^\n]*\n(?::[^\n]*\n)*?:chrome: "
                         r"(?P<name>[\w-]+)\n(?::[^\n]*\n)*\n)(?P<body>.*?)(?P<close>\n```$)",
                         re.S | re.M)
CHECK_CELL = re.compile(r"print\((?P<module>\w+)\.check\((?P<var>\w+), ANSWER\)\)")
# SEED = 0, or a student ID as a string: SEED = "s1234567" (the build mocks that seed's answers)
SEED_LINE = re.compile(r"""^SEED\s*=\s*(?P<seed>-?\d+\b(?!\.)|"[^"\n]*"|'[^'\n]*')""", re.M)


class ChromeError(Exception):
    """A notebook is missing a marker, or its exercises cannot be mocked."""


# ---- what the chrome says ----------------------------------------------------------------
def ready(stem: str) -> bool:
    return (NB_DIR / f"{stem}.md").exists()


def nav(stem: str) -> str:
    """``[← 01 · …](01-….md) | [Index](00-Index.md) | [03 · … →](03-….md)`` for ``stem``;
    the first planned lesson that does not exist yet is shown as "next: … (coming)"."""
    i = next(i for i, row in enumerate(PLAN) if row[1] == stem)
    done = [row for row in PLAN if ready(row[1])]
    parts = []
    before = [row for row in done if row[0] < PLAN[i][0]]
    after = PLAN[i + 1:]
    if before:
        num, s, title, _ = before[-1]
        parts.append(f"[← {num} · {title}]({s}.md)")
    if stem != INDEX:
        parts.append(f"[Index]({INDEX}.md)")
    if after:
        num, s, title, _ = after[0]
        parts.append(f"[{num} · {title} →]({s}.md)" if ready(s)
                     else f"next: {num} · {title} (coming)")
    return " | ".join(parts)


def curriculum(stem: str) -> str:
    """The index's table of lessons (what each teaches; "(coming)" until its .md exists),
    then the apps."""
    rows = ["| # | notebook | what you learn |", "|---|---|---|"]
    for num, s, title, learn in PLAN[1:]:
        name = f"[{title}]({s}.md)" if ready(s) else f"{title} (coming)"
        rows.append(f"| {num} | {name} | {learn} |")
    apps = " · ".join(f"[{APP_TITLES[a]}]({a}.ipynb)" for a in APPS)
    return "\n".join(rows) + f"\n\nApps (no narrative, for live demos): {apps}."


def versions(stem: str) -> str:
    return "from iommu_lab.versions import print_versions\nprint_versions()"


def sentinel(stem: str) -> str:
    return f'print("notebook complete: {stem}")'


MARKDOWN_CHROME: dict[str, Callable[[str], str]] = {"nav": nav, "curriculum": curriculum}
CODE_CHROME: dict[str, Callable[[str], str]] = {"versions": versions, "sentinel": sentinel}


# ---- lessons (.md) -----------------------------------------------------------------------
def lesson_paths() -> list[Path]:
    return sorted(NB_DIR.glob("[0-9][0-9]-*.md"))


def render_lesson(path: Path, text: str) -> str:
    """``text`` with every chrome region rewritten; raises ChromeError if one is missing."""
    stem = path.stem
    if stem not in {row[1] for row in PLAN}:
        raise ChromeError(f"{path.name}: not in PLAN (add a row in tools/notebook_chrome.py)")

    def fill(table: dict[str, Callable[[str], str]]) -> Callable[[re.Match], str]:
        def sub(m: re.Match) -> str:
            if m["name"] not in table:
                raise ChromeError(f"{path.name}: unknown chrome marker {m['name']!r}")
            return m["open"] + table[m["name"]](stem) + m["close"]
        return sub

    out = MD_REGION.sub(fill(MARKDOWN_CHROME), text)
    out = CODE_REGION.sub(fill(CODE_CHROME), out)
    check_markers(path, out)
    return out


def check_markers(path: Path, text: str) -> None:
    nb = jupytext.reads(text, fmt="md:myst")
    code = [c for c in nb.cells if c.cell_type == "code"]
    problems = []
    if not code or code[0].metadata.get("chrome") != "versions":
        problems.append("the first code cell must be the versions cell (`:chrome: versions`)")
    if not code or code[-1].metadata.get("chrome") != "sentinel":
        problems.append("the last code cell must be the sentinel cell (`:chrome: sentinel`)")
    if "<!-- chrome:nav" not in text:
        problems.append("no navigation (`<!-- chrome:nav -->` … `<!-- /chrome:nav -->`)")
    if path.stem == INDEX and "<!-- chrome:curriculum" not in text:
        problems.append("no curriculum table (`<!-- chrome:curriculum -->` …)")
    if problems:
        raise ChromeError(f"{path.name}: " + "; ".join(problems))


# ---- apps (.ipynb, stripped) ---------------------------------------------------------------
def render_app(path: Path, text: str) -> str:
    nb = nbformat.reads(text, as_version=4)
    nb.metadata.pop("widgets", None)
    for i, cell in enumerate(nb.cells):
        cell.id = str(i)  # what nbstripout writes: stable, and --verify stays clean
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        name = cell.metadata.get("chrome")
        if name is not None:
            if name not in CODE_CHROME:
                raise ChromeError(f"{path.name}: unknown chrome marker {name!r}")
            cell.source = CODE_CHROME[name](path.stem)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or code[0].metadata.get("chrome") != "versions" or \
            code[-1].metadata.get("chrome") != "sentinel":
        raise ChromeError(f"{path.name}: first/last code cells need metadata "
                          '{"chrome": "versions"} / {"chrome": "sentinel"}')
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def app_paths() -> list[Path]:
    return [NB_DIR / f"{stem}.ipynb" for stem in APPS]


# ---- executable copies for CI --------------------------------------------------------------
def executable_copy(path: Path) -> nbformat.NotebookNode:
    """Lesson ``path`` as a stripped .ipynb, with the answers mocked for nbmake."""
    nb = jupytext.read(path, fmt="md:myst")
    nb.metadata.pop("jupytext", None)
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell.id = str(i)
    mock_answers(nb, path.name)
    nbformat.validate(nb)
    return nb


def mock_answers(nb: nbformat.NotebookNode, name: str) -> int:
    """Mock each ``ANSWER = None`` cell with the solution for the notebook's SEED and make the
    check cell after it assert ✓. Returns the number of exercises mocked."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    answers = [i for i, c in enumerate(code) if c.source.startswith("ANSWER = None")]
    if not answers:
        return 0
    seeds = [m["seed"] for c in code for m in SEED_LINE.finditer(c.source)]
    if len(seeds) != 1:
        raise ChromeError(f"{name}: exercises need exactly one `SEED = <int or \"string\">` "
                          f"line, found {len(seeds)}")
    seed = ast.literal_eval(seeds[0])
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))  # the repository's package, if it is not installed
    for i in answers:
        check = code[i + 1] if i + 1 < len(code) else None
        m = CHECK_CELL.fullmatch(check.source.strip()) if check is not None else None
        if m is None:
            raise ChromeError(f"{name}: the code cell after `ANSWER = None` must be "
                              "`print(<module>.check(<problem>, ANSWER))`")
        mod = import_module(f"iommu_lab.exercises.{m['module']}")
        problem = mod.make_problem(seed)
        if getattr(problem, "error", ""):
            raise ChromeError(f"{name}: {problem.error}")
        code[i].metadata["nbmake"] = {"mock": {"ANSWER": mod.solve(problem)}}
        expr = f"{m['module']}.check({m['var']}, ANSWER)"
        check.metadata["nbmake"] = {
            "post_cell_execute": [f'assert {expr}.startswith("✓"), {expr}']}
    return len(answers)


def build(dest: Path) -> list[Path]:
    """Write every lesson (answers mocked) and app as .ipynb into ``dest``."""
    dest = dest.resolve()
    if dest == NB_DIR.resolve():
        raise ChromeError("build DIR must not be notebooks/ (the copies carry the answers)")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.ipynb"):
        old.unlink()
    written = []
    for path in lesson_paths():
        out = dest / f"{path.stem}.ipynb"
        out.write_text(nbformat.writes(executable_copy(path)) + "\n", encoding="utf-8")
        written.append(out)
    for path in app_paths():
        shutil.copyfile(path, dest / path.name)
        written.append(dest / path.name)
    return written


# ---- command line --------------------------------------------------------------------------
def rewrite(check: bool) -> list[str]:
    """Rewrite (or with ``check``, only compare) every chrome region; returns stale names."""
    stale = []
    jobs = [(p, render_lesson) for p in lesson_paths()] + [(p, render_app) for p in app_paths()]
    for path, render in jobs:
        text = path.read_text(encoding="utf-8")
        new = render(path, text)
        if new != text:
            stale.append(path.name)
            if not check:
                path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a file would change")
    sub = ap.add_subparsers(dest="command")
    b = sub.add_parser("build", help="write executable .ipynb copies (answers mocked) to DIR")
    b.add_argument("dir", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.command == "build":
            written = build(args.dir)
            print(f"wrote {len(written)} notebooks to {args.dir}")
            return 0
        stale = rewrite(check=args.check)
    except ChromeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if stale and args.check:
        print("chrome out of date (run python tools/notebook_chrome.py):", ", ".join(stale),
              file=sys.stderr)
        return 1
    if stale:
        print("rewrote:", ", ".join(stale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
