"""Views (layer 5): pure functions from model state or trace to pandas DataFrames and plotly
figures. No widgets here: ``iommu_lab.ui`` wires these into ipywidgets.

========================  ==================================================================
page table                :func:`pgtable_table`, :func:`pgtable_tree`, :func:`walk_table`,
                          :func:`split_table`, :func:`split_summary`,
                          :func:`address_space_figure`
IOTLB                     :func:`iotlb_table`, :func:`iotlb_styler`, :func:`iotlb_figure`
command queue             :func:`ring_table`, :func:`ring_state`, :func:`ring_figure`,
                          :func:`register_text`
counters                  :func:`counters_table`, :func:`counters_diff`,
                          :func:`counters_styler`
timeline                  :func:`timeline_figure`, :func:`overlap_ns`
comparison                :func:`compare_figure`, :func:`compare_table`, :func:`compare_pivot`
refused calls             :func:`attempt`
========================  ==================================================================
"""

from __future__ import annotations

from .calls import attempt
from .cmdq import register_text, ring_figure, ring_state, ring_table
from .compare import compare_figure, compare_pivot, compare_table
from .counters import KEY_COUNTERS, counters_diff, counters_styler, counters_table
from .iotlb import iotlb_figure, iotlb_styler, iotlb_table
from .pgtable import (
    address_space_figure,
    pgtable_table,
    pgtable_tree,
    split_summary,
    split_table,
    walk_table,
)
from .timeline import overlap_ns, timeline_figure

__all__ = [
    "KEY_COUNTERS", "address_space_figure", "attempt", "compare_figure", "compare_pivot",
    "compare_table", "counters_diff", "counters_styler", "counters_table", "iotlb_figure",
    "iotlb_styler", "iotlb_table", "overlap_ns", "pgtable_table", "pgtable_tree",
    "register_text", "ring_figure", "ring_state", "ring_table", "split_summary",
    "split_table", "timeline_figure", "walk_table",
]
