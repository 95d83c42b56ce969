"""DESIGN §2 layering: imports only point downward.

- layers 1–4 (hardware model, kernel mirror, inputs, analysis: everything in ``iommu_lab``
  but ``iommu_lab/views`` and ``iommu_lab/ui``) import no ipywidgets, IPython or plotly;
- layers 1–5 (all but ``iommu_lab/ui``) import no ipywidgets or IPython.

Checked twice: by importing every module in a fresh interpreter (with the forbidden
packages made unimportable, and again with them importable, to catch soft imports), and
by a static scan of every ``import`` statement — including imports inside functions,
which run later (e.g. a progress bar created only when asked for). ``tqdm.auto`` /
``tqdm.notebook`` / ``tqdm.autonotebook`` count as widget imports: in a Jupyter kernel
they import ``ipywidgets`` (tqdm/notebook.py). ``views`` and ``ui`` may not exist yet;
whatever exists is checked.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "iommu_lab"
WIDGETS = ("ipywidgets", "IPython", "ipykernel", "anywidget",
           "tqdm.auto", "tqdm.notebook", "tqdm.autonotebook")
PLOTLY = ("plotly",)
LOWER = ("views", "ui")  # excluded from layers 1–4
UPPER = ("ui",)          # excluded from layers 1–5


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def files(exclude: tuple[str, ...]) -> list[Path]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] in exclude or path.name == "__main__.py":
            continue
        out.append(path)
    return out


def forbidden(name: str, banned: tuple[str, ...]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


def imported_names(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement (or importlib/__import__ call with a literal) names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                out.append((node.lineno, node.args[0].value))
    return out


def static_violations(exclude: tuple[str, ...], banned: tuple[str, ...]) -> list[str]:
    return [f"{p.relative_to(PKG.parent)}:{line}: imports {name}"
            for p in files(exclude) for line, name in imported_names(p)
            if forbidden(name, banned)]


# A fresh interpreter imports every module of the layer. With ``block`` the banned
# top-level packages are set to None in sys.modules (any import of them raises); without,
# it reports which banned packages ended up in sys.modules anyway.
PROBE = r"""
import importlib, json, sys
mods, banned, block = json.loads(sys.argv[1])
if block:
    for name in banned:
        sys.modules[name] = None
errors = {}
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as exc:  # noqa: BLE001
        errors[m] = f"{type(exc).__name__}: {exc}"
loaded = sorted(n for n in sys.modules if sys.modules[n] is not None and
                any(n == b or n.startswith(b + ".") for b in banned))
print(json.dumps({"errors": errors, "loaded": loaded}))
"""


def probe(mods: list[str], banned: tuple[str, ...], block: bool) -> dict:
    top = sorted({b.split(".")[0] for b in banned if "." not in b})
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps([mods, top, block])],
                         capture_output=True, text=True, timeout=120, cwd=PKG.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


LAYERS = [
    pytest.param(LOWER, WIDGETS + PLOTLY, id="layers-1-4-no-widgets-ipython-plotly"),
    pytest.param(UPPER, WIDGETS, id="layers-1-5-no-widgets-ipython"),
]


@pytest.mark.parametrize("exclude,banned", LAYERS)
def test_static_imports(exclude: tuple[str, ...], banned: tuple[str, ...]) -> None:
    assert files(exclude), "no modules found"
    assert static_violations(exclude, banned) == []


@pytest.mark.parametrize("exclude,banned", LAYERS)
def test_modules_import_with_gui_packages_blocked(exclude: tuple[str, ...],
                                                  banned: tuple[str, ...]) -> None:
    mods = [module_name(p) for p in files(exclude)]
    res = probe(mods, banned, block=True)
    assert res["errors"] == {}


@pytest.mark.parametrize("exclude,banned", LAYERS)
def test_modules_do_not_pull_in_gui_packages(exclude: tuple[str, ...],
                                             banned: tuple[str, ...]) -> None:
    mods = [module_name(p) for p in files(exclude)]
    res = probe(mods, banned, block=False)
    assert res["errors"] == {}
    assert res["loaded"] == []


def test_scanner_sees_what_it_must(tmp_path: Path) -> None:
    """The static scanner itself: top-level, lazy, from-imports and importlib calls."""
    src = ("import plotly.graph_objects as go\n"
           "def f():\n    from ipywidgets import Button\n"
           "    import importlib; importlib.import_module('IPython.display')\n"
           "from tqdm.auto import tqdm\nfrom . import views\nimport numpy\n")
    tmp = tmp_path / "probe.py"
    tmp.write_text(src, encoding="utf-8")
    names = [n for _, n in imported_names(tmp)]
    bad = [n for n in names if forbidden(n, WIDGETS + PLOTLY)]
    assert "plotly.graph_objects" in bad and "ipywidgets" in bad
    assert "IPython.display" in bad and "tqdm.auto" in bad
    assert not forbidden("numpy", WIDGETS + PLOTLY) and not forbidden("tqdm", WIDGETS)


@pytest.mark.parametrize("sub", LOWER)
def test_upper_layers_checked_when_present(sub: str) -> None:
    """views/ui are excluded only from the rules above them: views is still held to the
    no-widgets rule (layers 1–5); ui is unrestricted. Absent packages are fine."""
    present = (PKG / sub).is_dir()
    in_1_5 = any(p.relative_to(PKG).parts[0] == sub for p in files(UPPER))
    assert in_1_5 == (present and sub == "views" and any((PKG / sub).rglob("*.py")))
