"""Named cost parameters, each with its default and its source.

Sources are hardware-invalidation.md §0.2 of the project reference. Most figures are
**assumptions** (no published per-command latency exists); the UI says so. Times are
integer nanoseconds so runs are exact and repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import einval


@dataclass(frozen=True)
class Costs:
    """Every modelled cost (ns). Override per run: ``Costs().with_overrides({"hw_tlbi_ns": 80})``."""

    cmd_write_ns: int = 10
    """CPU stores one 16-byte command into queue memory. [assumption] §0.2"""
    mmio_write_ns: int = 100
    """Posted MMIO write: a doorbell (CMDQ_PROD / IQT / CMD_TAIL) or an SMMUv2 TLBI register. [assumption] §0.2"""
    mmio_read_ns: int = 500
    """Non-posted MMIO read: polling CMDQ_CONS / TLBSTATUS / a full queue's head. [assumption] §0.2"""
    mem_poll_ns: int = 50
    """CPU sees a completion written to memory (CMD_SYNC MSI, VT-d status write, AMD sem). [assumption]"""
    hw_tlbi_ns: int = 50
    """IOMMU executes one invalidation command (any kind, incl. flush-all). [assumption] §0.2"""
    hw_sync_ns: int = 500
    """IOMMU executes a completion command (CMD_SYNC / wait descriptor / COMPLETION_WAIT).
    [assumption] chosen so one strict round trip (cmd + sync + doorbell + poll) lands near the
    1.2 µs derived from Gupta 2025 in §0.2/§7 #2."""
    iotlb_walk_level_ns: int = 100
    """Device-side page-table walk, per level read (4 levels = 400 ns). [assumption] §0.2"""
    virtio_request_ns: int = 10_000
    """virtio-iommu request round trip: VM exit + VMM + host VFIO work. [assumption] §0.2"""
    pte_update_ns: int = 20
    """CPU writes (or clears) one page-table entry. [assumption]"""
    call_ns: int = 50
    """CPU overhead of one IOMMU API call / driver callback. [assumption]"""
    fq_enqueue_ns: int = 30
    """CPU appends one IOVA to the DMA flush queue (queue_iova). [assumption]"""
    ats_inv_ns: int = 2000
    """An ATS invalidation: the IOMMU sends it to the endpoint and waits for the PCIe
    Invalidation Completion before a later sync completes. [assumption] (the spec allows up
    to 60 s; no typical latency is published, reference §0.1)"""

    cacheline_ns: int = 150
    """A shared cacheline another CPU wrote last (a spinlock word, the SMMUv3 ``prod``
    word a ``cmpxchg`` updates) moves to this CPU before it can write it: the cost of lock
    contention that grows with CPUs. [assumption] (cross-core transfer on a large server;
    no per-IOMMU figure is published)"""

    def with_overrides(self, overrides: dict[str, Any] | None) -> Costs:
        """A copy with some costs replaced; unknown names or bad values raise EINVAL."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        for name, value in overrides.items():
            if name not in known:
                raise einval(f"unknown cost parameter {name!r}; known: {', '.join(sorted(known))}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise einval(f"cost {name}={value!r} must be a non-negative number of ns")
        return replace(self, **{k: int(round(v)) for k, v in overrides.items()})


COST_SOURCES: dict[str, str] = {
    f.name: ("derived (§0.2/§7)" if f.name == "hw_sync_ns" else "assumption (§0.2)")
    for f in fields(Costs)
}


def cost_table() -> list[dict[str, Any]]:
    """Rows of (name, default ns, meaning, source) for display in notebooks and the CLI."""
    return [
        {"name": f.name, "default_ns": f.default, "meaning": _DOCS[f.name],
         "source": COST_SOURCES[f.name]}
        for f in fields(Costs)
    ]


_DOCS = {
    "cmd_write_ns": "CPU writes one 16-byte command into the queue (assumption)",
    "mmio_write_ns": "posted MMIO write: doorbell or SMMUv2 TLBI register (assumption)",
    "mmio_read_ns": "MMIO read: polling CONS / TLBSTATUS / queue head (assumption)",
    "mem_poll_ns": "CPU sees a completion written to memory (assumption)",
    "hw_tlbi_ns": "IOMMU executes one invalidation command (assumption)",
    "hw_sync_ns": "IOMMU executes a completion command; set so a strict round trip ≈ 1.2 µs "
                  "(derived from Gupta 2025, reference §0.2)",
    "iotlb_walk_level_ns": "device page-table walk, per level (assumption)",
    "virtio_request_ns": "virtio-iommu request: VM exit + host work (assumption)",
    "pte_update_ns": "CPU writes or clears one PTE (assumption)",
    "call_ns": "CPU overhead of one API call or driver callback (assumption)",
    "fq_enqueue_ns": "CPU queues one IOVA on the DMA flush queue (assumption)",
    "ats_inv_ns": "IOMMU sends one device-TLB (ATS) invalidation and gets its completion "
                  "(assumption)",
    "cacheline_ns": "a lock word or queue pointer another CPU wrote last moves to this CPU "
                    "(assumption)",
}
