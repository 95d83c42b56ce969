"""ARM SMMUv2 (drivers/iommu/arm-smmu.c @v4.14.5): no command queue, register writes.

``tlb_add_flush`` = ``arm_smmu_tlb_inv_range_nosync``: one ``TLBIVAL`` (leaf) or ``TLBIVA``
MMIO write per granule, issued immediately; ``tlb_sync`` = write ``TLBSYNC`` then poll
``TLBSTATUS``; io-pgtable syncs once per ``->unmap`` (hardware-invalidation.md §2).
"""

from __future__ import annotations

from typing import Any

from ..core.domain import IommuDomainOps
from ..hw.cmdq import REGISTERS
from ..hw.commands import Command
from .base import Driver


class ArmSmmuV2(Driver):
    """SMMUv2 stage 1 at v4.14: every TLBI and every sync is an MMIO register access."""

    name = "smmuv2"
    queue_style = REGISTERS
    doorbell_reg = "CB_TLBIVAL"
    cons_reg = "CB_TLBSTATUS"
    no_ats = "SMMUv2 has no ATS"
    one_iommu = "an SMMU domain belongs to one SMMU (smmu_domain->smmu)"

    def domain_ops(self) -> IommuDomainOps:
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages)

    def _tlbi(self, name: str, iova: int, granule: int, n: int) -> None:
        self.issue([(Command(name, self.asid, iova, granule, granule), n)])

    def tlb_add_page(self, gather: Any, iova: int, granule: int) -> None:
        """Leaf: one ``TLBIVAL`` write per granule."""
        self._tlbi("TLBIVAL", iova, granule, 1)

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None:
        """Table freed: ``TLBIVA`` per granule, then sync."""
        self.dom.stats["walk_flushes"] += 1
        self._tlbi("TLBIVA", iova, granule, size // granule)
        self.tlb_sync()

    def tlb_flush_all(self) -> None:  # type: ignore[override]
        """``arm_smmu_tlb_inv_context_s1``: write ``TLBIASID``, then sync."""
        self.issue([(Command("TLBIASID", self.asid), 1)])
        self.tlb_sync()

    def tlb_sync(self) -> None:
        """``__arm_smmu_tlb_sync``: write ``TLBSYNC``, poll ``TLBSTATUS`` until not active."""
        self.issue([(Command("TLBSYNC"), 1)], wait=True)

