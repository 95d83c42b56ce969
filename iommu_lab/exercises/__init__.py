"""Seeded exercises: one module per exercise, each with ``make_problem(seed)``, ``solve``
and ``check`` (which returns "not answered yet", "✓ ..." or "✗ ..." and never raises).

=================  ========  ==========================================================
module             notebook  question
=================  ========  ==========================================================
pgsize_split       01        how many pages of each size does iommu_map create?
iova_to_phys       01        what does iommu_iova_to_phys return for three IOVAs?
stale_dma          02        hit / walk / fault / stale after an unflushed unmap?
flush_count        02        TLBIs, CMD_SYNCs, doorbells of one v4.14 iommu_unmap
teardown           03        flushes of a guest teardown per (strategy, caller)
rfc2017_calls      03        what range_add+sync / flush_tlb_all / unmap_sync issue
ring_registers     04        CMDQ_PROD / CMDQ_CONS with the wrap bit; free slots
waste              04        wasted TLBIs and needless syncs (Will's objection)
=================  ========  ==========================================================
"""

from __future__ import annotations

from . import (
    flush_count,
    iova_to_phys,
    pgsize_split,
    rfc2017_calls,
    ring_registers,
    stale_dma,
    teardown,
    waste,
)
from ._base import NOT_ANSWERED, Problem

EXERCISES = {m.NAME: m for m in (pgsize_split, iova_to_phys, stale_dma, flush_count, teardown,
                                 rfc2017_calls, ring_registers, waste)}

__all__ = ["EXERCISES", "NOT_ANSWERED", "Problem", "flush_count", "iova_to_phys",
           "pgsize_split", "rfc2017_calls", "ring_registers", "stale_dma", "teardown", "waste"]
