"""Widgets (layer 6): the only part of iommu_lab that imports ipywidgets.

- :class:`Stepper`: one domain, a button per IOMMU API call, live views (command ring,
  IOTLB, page table, counters, CPU-vs-IOMMU timeline, log).
- :class:`CompareDashboard`: strategies × callers over a guest teardown, bars and a table.

Figures are plain plotly ``go.Figure`` objects rendered into ``ipywidgets.Output`` (never a
FigureWidget mutated before display), so they show the right state in JupyterLab and Voilà.
"""

from __future__ import annotations

from .dashboard import CompareDashboard
from .stepper import Stepper

__all__ = ["CompareDashboard", "Stepper"]
