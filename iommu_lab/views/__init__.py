"""Views (layer 5): pure functions from model state or trace to pandas DataFrames and plotly
figures. No widgets here: ``iommu_lab.ui`` wires these into ipywidgets.

========================  ==================================================================
page table                :func:`pgtable_table`, :func:`pgtable_rows`, :func:`pgtable_tree`,
                          :func:`walk_table`,
                          :func:`split_table`, :func:`split_summary`,
                          :func:`address_space_figure`, :func:`address_space_html`
IOTLB                     :func:`iotlb_table`, :func:`iotlb_rows`, :func:`iotlb_styler`,
                          :func:`iotlb_figure`
command queue             :func:`ring_table`, :func:`ring_state`, :func:`ring_figure`,
                          :func:`ring_html`, :func:`ring_grid`, :func:`register_text`
counters                  :func:`counters_table`, :func:`counters_rows`, :func:`counters_diff`,
                          :func:`counters_styler`
timeline                  :func:`timeline_figure`, :func:`timeline_spec`,
                          :func:`overlap_ns`, :func:`gantt_html` (a spec as SVG)
comparison                :func:`compare_figure`, :func:`compare_html`, :func:`compare_table`,
                          :func:`compare_pivot`
refused calls             :func:`attempt`
lessons 05 (gather.py)    :func:`gather_table`, :func:`gather_text`, :func:`batches_table`,
                          :func:`ril_table`, :func:`phase_table`, :func:`scaling_table`,
                          :func:`scaling_figure`, :func:`costs_table`, :func:`published_table`,
                          :func:`us`
lessons 06 (hardware.py)  :func:`commands_table`, :func:`probe_summary`, :func:`after_table`,
                          :func:`caches_table`, :func:`map_table`, :func:`per_iommu_table`
lesson 07 (lazy.py)       :func:`fq_table`, :func:`fq_status`, :func:`stale_windows_table`,
                          :func:`late_writes_figure`, :func:`unflushed_figure`,
                          :func:`window_gap_figure`, :func:`reuse_table`, :func:`times_table`,
                          :func:`lazy_costs_table`, :func:`lazy_measured_table` …
lesson 08 (shootout.py)   :func:`shootout_pivot`, :func:`winners_table`, :func:`size_figure`,
                          :func:`sizes_table`, :func:`sweep_figure`, :func:`scaling_lines`,
                          :func:`scaling_rows_table`, :func:`verdicts_table`
========================  ==================================================================
"""

from __future__ import annotations

from .calls import attempt
from .cmdq import register_text, ring_figure, ring_grid, ring_html, ring_state, ring_table
from .compare import compare_figure, compare_html, compare_pivot, compare_table
from .counters import (
    KEY_COUNTERS,
    counters_diff,
    counters_rows,
    counters_styler,
    counters_table,
)
from .gantt import gantt_html
from .gather import (
    batches_table,
    costs_table,
    gather_table,
    gather_text,
    phase_table,
    published_table,
    ril_table,
    scaling_figure,
    scaling_table,
    us,
)
from .hardware import (
    after_table,
    caches_table,
    commands_table,
    map_table,
    per_iommu_table,
    probe_summary,
)
from .iotlb import iotlb_figure, iotlb_rows, iotlb_styler, iotlb_table
from .lazy import (
    fmt_time,
    fq_status,
    fq_table,
    late_writes_figure,
    lazy_costs_table,
    lazy_measured_per_io_table,
    lazy_measured_table,
    reuse_table,
    stale_window_summary,
    stale_windows_table,
    times_table,
    unflushed_figure,
    window_gap_figure,
    window_gap_table,
)
from .pgtable import (
    address_space_figure,
    address_space_html,
    pgtable_rows,
    pgtable_table,
    pgtable_tree,
    split_summary,
    split_table,
    walk_table,
)
from .shootout import (
    scaling_lines,
    scaling_rows_table,
    shootout_pivot,
    size_figure,
    sizes_table,
    sweep_figure,
    verdicts_table,
    winners_table,
)
from .timeline import overlap_ns, timeline_figure, timeline_spec

__all__ = [
    "KEY_COUNTERS", "address_space_figure", "address_space_html", "attempt", "compare_figure",
    "compare_html",
    "compare_pivot", "compare_table", "counters_diff", "counters_rows", "counters_styler",
    "counters_table", "gantt_html", "iotlb_figure", "iotlb_rows", "iotlb_styler", "iotlb_table",
    "overlap_ns",
    "pgtable_rows", "pgtable_table", "pgtable_tree", "register_text", "ring_figure",
    "ring_grid", "ring_html", "ring_state", "ring_table", "split_summary", "split_table",
    "timeline_figure", "timeline_spec", "walk_table",
    # lessons 05/06
    "after_table", "batches_table", "caches_table", "commands_table", "costs_table", "gather_table",
    "gather_text", "map_table", "per_iommu_table", "phase_table", "probe_summary",
    "published_table", "ril_table", "scaling_figure", "scaling_table", "us",
    # lesson 07
    "fmt_time", "fq_status", "fq_table", "late_writes_figure", "lazy_costs_table",
    "lazy_measured_per_io_table", "lazy_measured_table", "reuse_table", "stale_window_summary",
    "stale_windows_table", "times_table", "unflushed_figure", "window_gap_figure",
    "window_gap_table",
    # lesson 08
    "scaling_lines", "scaling_rows_table", "shootout_pivot", "size_figure", "sizes_table",
    "sweep_figure", "verdicts_table", "winners_table",
]
