"""Example user-defined strategies: three plausible-looking unsafe ones and a safe one.

None is registered at import (``strategies()`` and ``compare()``'s defaults list only the
kernel's); :func:`register_example` registers one under its name. Each unsafe one is the
kind of idea a reviewer brings to the 2017 debate, with the bug a real driver could have:

=================  ===========  =====================================================
name               built on     the idea, and the bug ``check_strategy`` finds
=================  ===========  =====================================================
sync-every-k       smmuv3-v5.4  TLBIs at every ``iotlb_sync``, but wait for a CMD_SYNC
                                only every k-th time ("the queue is in order anyway"):
                                ``iommu_unmap`` returns before the invalidation is done
range-off-by-one   smmuv3-ril   one range TLBI over ``[gather.start, gather.end)``; but
                                from v5.10 ``end`` is the last byte (inclusive), so the
                                last page of every unmap is never invalidated
fq-no-wait         smmuv3-v5.4  the flush queue's flush-all is issued but not waited for
                                ("it runs from a timer"); dma-iommu then frees the IOVAs
                                and hands them out before the flush has completed
range-or-all       smmuv3-v5.4  safe: above ``flush_all_above`` pages, one TLBI_NH_ASID +
                                CMD_SYNC instead of a TLBI per page
=================  ===========  =====================================================
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.domain import IommuDomain
from ..core.gather import IommuIotlbGather
from ..errors import einval
from .arm_smmu_v3 import CMDQ_BATCH_ENTRIES, ArmSmmuV3, ArmSmmuV3Ril
from .base import Driver
from .registry import Strategy
from .user import gather_span, register_strategy


def _positive_param(drv: Driver, key: str) -> int:
    value = drv.p[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise einval(f"{key} must be a positive integer, not {value!r}")
    return value


class SyncEveryK(ArmSmmuV3):
    """Wait for CMD_SYNC only at every k-th ``iotlb_sync`` (``sync_every``, default 4).

    Every sync still publishes its TLBIs; only the k-th adds a CMD_SYNC and waits. It looks
    safe — the SMMU executes its queue in order, so that wait covers every earlier TLBI —
    and saves k-1 of k round trips. The bug: ``iommu_unmap`` returns (and the caller frees
    the pages) while the TLBIs may still be queued.
    """

    params: ClassVar[dict[str, Any]] = {**ArmSmmuV3.params, "sync_every": 4}

    def __init__(self, dom: IommuDomain, params: dict[str, Any]) -> None:
        super().__init__(dom, params)
        self.k = _positive_param(self, "sync_every")
        self.syncs = 0

    def must_wait(self) -> bool:
        """The idea (and the bug): only every k-th sync waits."""
        self.syncs += 1
        return self.syncs % self.k == 0

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """The k-th sync is v5.4's (TLBIs + CMD_SYNC, wait); the others only publish TLBIs."""
        if self.must_wait():
            super().iotlb_sync(dom, gather)
            return
        start, size = gather_span(dom, gather)
        n, g = size // gather.pgsize if size else 0, gather.pgsize
        for k in range(0, n, CMDQ_BATCH_ENTRIES):
            self.issue([(self.tlbi(start + k * g, g, True, g), min(CMDQ_BATCH_ENTRIES, n - k))])


class RangeOffByOne(ArmSmmuV3Ril):
    """Range TLBIs over ``[gather.start, gather.end)`` — but ``end`` is inclusive from v5.10.

    ``end - start`` is then one byte short; rounded down to whole pages it drops the last
    page of every unmap, whose IOTLB entry survives the sync (cf. AMD v5.15's one-byte-short
    ``domain_flush_pages`` size, harmless there only because of natural alignment).
    """

    def range_of(self, dom: IommuDomain, gather: IommuIotlbGather) -> tuple[int, int]:
        """The bug: (start, end - start) rounded to pages; the fix: ``gather_span``."""
        return gather.start, (gather.end - gather.start) & ~(gather.pgsize - 1)

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """Range TLBIs for :meth:`range_of` + CMD_SYNC (a lone CMD_SYNC when it is empty)."""
        start, size = self.range_of(dom, gather) if gather.pgsize else (0, 0)
        if size:
            self.tlb_inv_range(start, size, gather.pgsize, leaf=True)
        else:
            self.issue([(self.cmd_sync(), 1)], wait=True)


class FlushQueueNoWait(ArmSmmuV3):
    """``flush_iotlb_all`` publishes TLBI_NH_ASID + CMD_SYNC and returns without waiting.

    "The flush queue calls it from a timer; nobody there needs the answer." But dma-iommu
    counts the flush as finished (``fq_flush_finish_cnt``) as soon as it returns and hands
    the queued IOVAs out again, while the SMMU may not have invalidated them yet.
    """

    def flush_iotlb_all(self, dom: IommuDomain) -> None:
        """One doorbell for TLBI_NH_ASID + CMD_SYNC; no wait (the bug)."""
        self.issue([(self.tlbi_asid(), 1), (self.cmd_sync(), 1)])


class RangeOrAll(ArmSmmuV3):
    """Above ``flush_all_above`` pages (default 16), one TLBI_NH_ASID + CMD_SYNC instead of
    a TLBI per page: fewer commands for big unmaps, at the price of refilling the IOTLB."""

    params: ClassVar[dict[str, Any]] = {**ArmSmmuV3.params, "flush_all_above": 16}

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """v5.4's sync, or the whole ASID when the gathered range is big."""
        above = _positive_param(self, "flush_all_above")
        if gather_span(dom, gather)[1] > above * dom.pgtable.granule:
            self.tlb_flush_all()
        else:
            super().iotlb_sync(dom, gather)


@dataclass(frozen=True)
class Example:
    """One example strategy: its driver class, whether it is safe, its bug and the fix."""

    name: str
    driver: type[Driver]
    safe: bool
    bug: str
    fix: str


EXAMPLES: dict[str, Example] = {e.name: e for e in (
    Example("sync-every-k", SyncEveryK, False,
            "iommu_unmap returns before its TLBIs have completed (only every k-th sync waits)",
            "wait at every iotlb_sync: the caller frees the pages as soon as it returns"),
    Example("range-off-by-one", RangeOffByOne, False,
            "the last page of every unmap is never invalidated (inclusive gather.end)",
            "size = gather.end - gather.start + 1 (or il.gather_span(dom, gather))"),
    Example("fq-no-wait", FlushQueueNoWait, False,
            "the flush queue frees IOVAs before the flush-all has completed",
            "wait for the CMD_SYNC (self.tlb_flush_all() does)"),
    Example("range-or-all", RangeOrAll, True, "", ""),
)}


def register_example(name: str) -> Strategy:
    """Register example ``name`` (see :data:`EXAMPLES`) as a user-defined strategy."""
    if name not in EXAMPLES:
        raise einval(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")
    ex = EXAMPLES[name]
    return register_strategy(name, ex.driver, replace=True,
                             source=f"iommu_lab.drivers.examples.{ex.driver.__name__} "
                                    f"({'safe' if ex.safe else 'unsafe'} example)")


def source(name: str) -> str:
    """The Python source of example ``name``'s driver class, to read in a notebook."""
    if name not in EXAMPLES:
        raise einval(f"unknown example {name!r}; known: {', '.join(EXAMPLES)}")
    return inspect.getsource(EXAMPLES[name].driver)


__all__ = ["EXAMPLES", "FlushQueueNoWait", "RangeOffByOne", "RangeOrAll", "SyncEveryK",
           "register_example", "source"]
