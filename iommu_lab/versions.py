"""Environment stamp: the versions that matter when widgets or figures do not render.

The first code cell of every notebook calls :func:`print_versions`; paste its line into a
bug report. ``ipywidgets`` (kernel side) must match the JupyterLab widget manager
(``jupyterlab_widgets``), and plotly's FigureWidget needs ``anywidget``.
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

PACKAGES = ("ipywidgets", "jupyterlab_widgets", "plotly", "anywidget", "pandas", "numpy",
            "jupyterlab")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """``{"iommu_lab": ..., "python": ..., "ipywidgets": ..., ...}``."""
    from . import __version__

    out = {"iommu_lab": __version__, "python": platform.python_version()}
    out.update({name: _version(name) for name in PACKAGES})
    return out


def version_table() -> Any:
    """The versions as a DataFrame (columns ``package``, ``version``)."""
    import pandas as pd

    return pd.DataFrame(list(versions().items()), columns=["package", "version"])


def version_line() -> str:
    """One line: ``iommu_lab 0.1.0 · python 3.11.7 · ipywidgets 8.1.9 · ...``."""
    return " · ".join(f"{k} {v}" for k, v in versions().items())


def print_versions() -> None:
    """Print :func:`version_line` (the first cell of every notebook)."""
    print(version_line())  # noqa: T201 - this function's whole purpose
