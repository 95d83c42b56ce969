"""environment.yml (conda / Binder) and pyproject.toml list the same runtime dependencies
(DESIGN §1: "the same dependency set as pyproject.toml (a test keeps them in step)")."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*$")


def normalise(name: str) -> str:
    """PEP 503 name normalisation (conda names are lower-case with dashes too)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> tuple[str, str]:
    """``"pandas>=2.2,<4"`` → ``("pandas", ">=2.2,<4")`` (specifier without spaces)."""
    m = REQ.match(text.split(";")[0])
    assert m, f"cannot parse requirement {text!r}"
    return normalise(m.group(1)), re.sub(r"\s+", "", m.group(3))


def read_environment() -> dict:
    """environment.yml: with PyYAML if available, else the simple subset used here."""
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:  # pragma: no cover - yaml ships with jupyter
        return tiny_yaml(text)
    return yaml.safe_load(text)


def tiny_yaml(text: str) -> dict:
    """Enough YAML for environment.yml: top-level keys, "- item" lists, one nested
    "- pip:" list."""
    out: dict = {}
    key = None
    nested: list | None = None
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if indent == 0:
            k, _, v = body.partition(":")
            key, nested = k.strip(), None
            out[key] = v.strip() if v.strip() else []
        elif body.startswith("- ") and body.endswith(":"):
            nested = []
            out[key].append({body[2:-1].strip(): nested})
        elif body.startswith("- "):
            item = body[2:].strip()
            if nested is not None and indent > 2:
                nested.append(item)
            else:
                nested = None
                out[key].append(item)
    return out


def conda_and_pip(env: dict) -> tuple[list[str], list[str]]:
    conda, pip = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += list(dep.get("pip", []))
        else:
            conda.append(str(dep))
    return conda, pip


def conda_spec(dep: str) -> tuple[str, str]:
    """conda's ``name=1.2`` / ``name>=1,<2`` as (normalised name, specifier)."""
    m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", dep.strip())
    assert m, dep
    return normalise(m.group(1)), re.sub(r"\s+", "", m.group(2))


def test_tiny_yaml_agrees_with_pyyaml() -> None:
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    assert tiny_yaml(text) == yaml.safe_load(text)


def test_same_runtime_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    want = dict(parse_requirement(r) for r in project["dependencies"])
    conda, _ = conda_and_pip(read_environment())
    got = dict(conda_spec(d) for d in conda)
    assert got.pop("python", None) is not None
    assert got.pop("pip", None) == ""  # pip itself, unpinned, to install the package
    assert got == want


def test_python_and_editable_install() -> None:
    env = read_environment()
    conda, pip = conda_and_pip(env)
    assert "python=3.11" in [d.replace(" ", "") for d in conda]
    assert "-e ." in pip
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == ">=3.11"
    assert env["name"] == "iommu-lab"


def test_parse_requirement() -> None:
    assert parse_requirement("pandas>=2.2,<4") == ("pandas", ">=2.2,<4")
    assert parse_requirement("Jupyter_Lab >= 4.6, <5") == ("jupyter-lab", ">=4.6,<5")
    assert parse_requirement("numpy") == ("numpy", "")
    assert parse_requirement("tqdm>=4.66; python_version>'3'") == ("tqdm", ">=4.66")
