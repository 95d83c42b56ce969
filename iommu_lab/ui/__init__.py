"""Widgets (layer 6): the only part of iommu_lab that imports ipywidgets.

- :class:`Stepper`: one domain, a button per IOMMU API call, live views (command ring,
  IOTLB, page table, counters, CPU-vs-IOMMU timeline, log).
- :class:`CompareDashboard`: strategies × callers over a guest teardown, bars and a table.

The stepper's views are all HTML widgets (ring, tables, address-space strip, and the
timeline drawn as SVG by :func:`iommu_lab.views.gantt_html`), whose whole state is a synced
trait, so they show the right state in JupyterLab and Voilà and a click costs the browser a
few ms; the dashboard renders plain ``go.Figure`` objects into ``ipywidgets.Output`` (never
a FigureWidget mutated before display).
"""

from __future__ import annotations

from .dashboard import CompareDashboard
from .stepper import Stepper

__all__ = ["CompareDashboard", "Stepper"]
