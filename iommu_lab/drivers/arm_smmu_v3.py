"""ARM SMMUv3 (drivers/iommu/arm-smmu-v3.c; arm/arm-smmu-v3/ from v5.9), five eras.

=================  =======  ==========================================================
strategy           kernel   per-unmap behaviour (hardware-invalidation.md §1.4, §1.6)
=================  =======  ==========================================================
smmuv3-v4.14       v4.14    io-pgtable issues one TLBI per granule (each its own
                            ``arm_smmu_cmdq_issue_cmd``: lock + write + doorbell) and
                            syncs at the end of every ``->unmap`` (CMD_SYNC + drain)
smmuv3-v4.15       v4.15    TLBIs still issued inside ``->unmap`` (early, asynchronous);
                            one CMD_SYNC in ``->iotlb_sync`` — Will Deacon's design;
                            ``flush_iotlb_all`` is that same CMD_SYNC
smmuv3-v4.20       v4.20    as v4.15, plus non-strict (lazy) DMA domains
                            (``IO_PGTABLE_QUIRK_NON_STRICT``) and a ``flush_iotlb_all``
                            that is TLBI_NH_ASID + CMD_SYNC: early TLBIs before it are
                            wasted on a merged kernel
smmuv3-v5.4        v5.4     ``->unmap`` only gathers; ``->iotlb_sync`` builds one TLBI per
                            granule in batches of ``CMDQ_BATCH_ENTRIES`` (64), the last
                            with CMD_SYNC
smmuv3-ril         v5.10    as v5.4 with SMMUv3.2 range invalidation (NUM/SCALE/TG/TTL)
=================  =======  ==========================================================

CMD_SYNC completion (``msi_sync`` parameter): from v4.15 a coherent SMMU with MSIs
completes a CMD_SYNC by an MSI write to memory that the CPU polls (CS=IRQ; Robin Murphy,
37de98f8f1cf; v4.15 ``arm-smmu-v3.c:1045-1049``); otherwise (and always in v4.14) CS=SEV and
the CPU reads ``CMDQ_CONS`` over MMIO until the sync has passed. The default is the MSI
path from v4.15 on (a coherent server SMMU), the CONS poll in v4.14.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core.domain import IommuDomain, IommuDomainOps
from ..core.gather import ULONG_MAX, IommuIotlbGather
from ..core.iommu import iommu_iotlb_gather_add_page
from ..errors import einval
from ..hw.commands import Command
from ..hw.cpus import SpinLock
from .arm_smmu_cmdq import LockFreeCmdq
from .base import Batch, Driver

CMDQ_BATCH_ENTRIES = 64        # BITS_PER_LONG (arm-smmu-v3.c @v5.4.6)
CMDQ_TLBI_RANGE_NUM_MAX = 31   # @v5.10.89
CMDQ_SYNC_0_CS_IRQ, CMDQ_SYNC_0_CS_SEV = 1, 2
CMD_SYNC = {cs: Command("CMD_SYNC", fields=(("CS", cs),))
            for cs in (CMDQ_SYNC_0_CS_IRQ, CMDQ_SYNC_0_CS_SEV)}   # built once: every sync is one


class ArmSmmuV3(Driver):
    """v5.4: gather in ``->unmap``; batched TLBIs + one CMD_SYNC in ``->iotlb_sync``."""

    name = "smmuv3-v5.4"
    cmdq_entries = 1 << 10   # [assumption] IDR1.CMDQS = 10; Linux v5.4 allows up to 2^18
    sync_empty_gather = True  # v5.4: an empty gather still issues a lone CMD_SYNC (derived)
    pow2_entries = True
    min_entries = 2 * CMDQ_BATCH_ENTRIES  # v6.18: max_n_shift must exceed ilog2(64)
    msi_sync_supported = True
    one_iommu = "an SMMUv3 domain belongs to one SMMU (smmu_domain->smmu)"

    params: ClassVar[dict[str, Any]] = {"stage": 1, "msi_sync": None}

    def __init__(self, dom: IommuDomain, params: dict[str, Any]) -> None:
        msi = params.get("msi_sync")
        if msi is None:
            params = {**params, "msi_sync": self.msi_sync_supported}
        elif msi and not self.msi_sync_supported:
            raise einval(f"{self.name} has no CMD_SYNC MSI completion (it arrived in v4.15, "
                         "37de98f8f1cf): msi_sync must be False")
        super().__init__(dom, params)
        self.cmdq = LockFreeCmdq(self.q, self.cpus)
        # fixed at probe time: looked up once, not per command (the hot unmap path)
        self.mem_poll = bool(self.p["msi_sync"])
        self.stage2 = self.p.get("stage", 1) == 2
        self.sync_cmd = CMD_SYNC[CMDQ_SYNC_0_CS_IRQ if self.mem_poll else CMDQ_SYNC_0_CS_SEV]

    def issue(self, batch: Batch, wait: bool = False) -> None:
        """``arm_smmu_cmdq_issue_cmdlist(cmds, n, sync=wait)``: lock-free insertion (v5.4+);
        the owner's doorbell publishes every CPU's gathered commands; a CMD_SYNC waits for
        itself (MSI word or CONS)."""
        pos = self.cmdq.issue_cmdlist(batch, wait)
        self.trace_doorbell(batch)
        if wait:
            self.wait(pos)

    # ``mem_poll``: CMD_SYNC completion seen in memory (MSI write) rather than by reading
    # CONS; ``stage2``: a stage-2 domain (tagged by VMID: TLBI_S2_IPA / TLBI_S12_VMALL).
    # Both are set once in ``__init__`` from the parameters.

    # ---- commands ------------------------------------------------------------
    def tlbi(self, iova: int, granule: int, leaf: bool, step: int = 0,
             extra: tuple[tuple[str, int], ...] = ()) -> Command:
        """``CMD_TLBI_NH_VA`` (stage 1, by ASID) or ``CMD_TLBI_S2_IPA`` (stage 2, by VMID)."""
        name, tag = ("CMD_TLBI_S2_IPA", "VMID") if self.stage2 else ("CMD_TLBI_NH_VA", "ASID")
        asid = self.dom.asid
        return Command(name, asid, iova, granule, step, ((tag, asid), ("Leaf", int(leaf))) + extra)

    def tlbi_asid(self) -> Command:
        """``CMD_TLBI_NH_ASID`` (stage 1) / ``CMD_TLBI_S12_VMALL`` (stage 2): the whole context."""
        if self.stage2:
            return Command("CMD_TLBI_S12_VMALL", self.asid, fields=(("VMID", self.asid),))
        return Command("CMD_TLBI_NH_ASID", self.asid, fields=(("ASID", self.asid),))

    def cmd_sync(self) -> Command:
        """``CMD_SYNC``: CS=IRQ with an MSI write to memory, or CS=SEV (poll ``CMDQ_CONS``)."""
        return self.sync_cmd

    # ---- ops table -----------------------------------------------------------
    def domain_ops(self) -> IommuDomainOps:
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages,
                              iotlb_sync=self.iotlb_sync, flush_iotlb_all=self.flush_iotlb_all)

    def tlb_add_page(self, gather: Any, iova: int, granule: int) -> None:
        """``arm_smmu_tlb_inv_page_nosync``: only ``iommu_iotlb_gather_add_page``."""
        iommu_iotlb_gather_add_page(self.dom, gather, iova, granule)

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None:
        """``arm_smmu_tlb_inv_walk``: synchronous non-leaf invalidation of the range."""
        self.dom.stats["walk_flushes"] += 1
        self.tlb_inv_range(iova, size, granule, leaf=False)

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """``arm_smmu_iotlb_sync``: invalidate the gathered range, then CMD_SYNC."""
        rules = dom.core.gather or dom.core.gather_rules()   # (EINVAL before v5.4)
        if gather.pgsize == 0:
            if self.sync_empty_gather:  # start=ULONG_MAX, end=0: size wraps to 1, no TLBI
                self.issue([(self.cmd_sync(), 1)], wait=True)
                self.atc_inv_domain(ULONG_MAX, 1)
            return
        start, size = rules.span(gather)
        self.tlb_inv_range(start, size, gather.pgsize, leaf=True)

    def flush_iotlb_all(self, dom: IommuDomain) -> None:
        """``.flush_iotlb_all = arm_smmu_flush_iotlb_all`` → ``arm_smmu_tlb_inv_context``."""
        self.tlb_flush_all()

    def tlb_flush_all(self) -> None:
        """``arm_smmu_tlb_inv_context``: TLBI_NH_ASID, then a separately issued CMD_SYNC;
        then every ATS endpoint's whole ATC (``arm_smmu_atc_inv_domain(.., 0, 0)``)."""
        self.issue([(self.tlbi_asid(), 1)])
        self.issue([(self.cmd_sync(), 1)], wait=True)
        self.atc_inv_domain(0, 0)

    # ---- ATS (v5.2+) -------------------------------------------------------------------
    def atc_inv_domain(self, iova: int, size: int) -> None:
        """``arm_smmu_atc_inv_domain`` (v5.4): per ATS master, a ``CMD_ATC_INV`` per SID via
        ``arm_smmu_cmdq_issue_cmd`` and then ``arm_smmu_cmdq_issue_sync``: the CMD_SYNC
        completes only when the endpoint has answered (``ats_inv_ns``)."""
        if self.ats:
            self.issue([(self.atc_inv(iova, size), 1)])
            self.issue([(self.cmd_sync(), 1)], wait=True)

    def atc_inv(self, iova: int, size: int) -> Command:
        """``arm_smmu_atc_inv_to_cmd``: one naturally aligned power-of-two span of 4 KiB
        pages covering the range ("grossly over-invalidating"); size 0: the whole ATC."""
        if not size:
            return Command("CMD_ATC_INV", self.asid, fields=(("SID", 0), ("Size", 52)))
        first, last = iova >> 12, ((iova + size - 1) & ((1 << 64) - 1)) >> 12
        log2_span = (first ^ last).bit_length()
        first &= ~((1 << log2_span) - 1)
        return Command("CMD_ATC_INV", self.asid, first << 12, 4096 << log2_span, 0,
                       (("SID", 0), ("Size", log2_span)))

    def tlb_inv_range(self, iova: int, size: int, granule: int, leaf: bool) -> None:
        """``arm_smmu_tlb_inv_range``: one TLBI per granule, 64 per batch, last with sync."""
        n = size // granule
        full = max(0, (n - 1) // CMDQ_BATCH_ENTRIES)  # batches before the one with the sync
        span = CMDQ_BATCH_ENTRIES * granule
        if full:
            self.issue_repeated(lambda k: [(self.tlbi(iova + k * span, granule, leaf, granule),
                                            CMDQ_BATCH_ENTRIES)], full, span)
        done = full * CMDQ_BATCH_ENTRIES
        sync = (self.sync_cmd, 1)   # self.cmd_sync()
        batch = ([(self.tlbi(iova + done * granule, granule, leaf, granule), n - done), sync]
                 if n - done else [sync])
        self.issue(batch, wait=True)
        self.atc_inv_domain(iova, size)  # "can't be leaf-only since we may have zapped a table"


class ArmSmmuV3Ril(ArmSmmuV3):
    """v5.10 with ``ARM_SMMU_FEAT_RANGE_INV``: range TLBIs (NUM/SCALE) instead of per granule."""

    name = "smmuv3-ril"
    # v5.10 arm_smmu_iotlb_sync has no ``!gather->pgsize`` return (it first appears in the
    # v5.15 tree): end - start + 1 wraps to 2, no TLBI is built, batch_submit still syncs
    sync_empty_gather = True

    def tlb_inv_range(self, iova: int, size: int, granule: int, leaf: bool) -> None:
        """``arm_smmu_tlb_inv_range`` @v5.10.89 with RIL: 5-bit NUM chunks, batch of 64."""
        cmds = self.ril_commands(iova, size, granule, leaf)
        while len(cmds) > CMDQ_BATCH_ENTRIES:
            self.issue([(c, 1) for c in cmds[:CMDQ_BATCH_ENTRIES]])
            cmds = cmds[CMDQ_BATCH_ENTRIES:]
        self.issue([(c, 1) for c in cmds] + [(self.cmd_sync(), 1)], wait=True)
        self.atc_inv_domain(iova, size)

    def atc_inv_domain(self, iova: int, size: int) -> None:
        """v5.10: the ATC commands of every master go into one ``arm_smmu_cmdq_batch``,
        submitted with its CMD_SYNC (``arm_smmu_cmdq_batch_submit``)."""
        if self.ats:
            self.issue([(self.atc_inv(iova, size), 1), (self.cmd_sync(), 1)], wait=True)

    def ril_commands(self, iova: int, size: int, granule: int, leaf: bool) -> list[Command]:
        """One ``CMD_TLBI_NH_VA`` per 5-bit group of the page count (§1.6 worked example)."""
        tg = self.dom.pgtable.granule.bit_length() - 1
        num_pages = size >> tg
        tg_field = (tg - 10) // 2
        ttl = 4 - ((granule.bit_length() - 1 - 3) // (tg - 3))
        out = []
        while num_pages:
            scale = (num_pages & -num_pages).bit_length() - 1
            num = (num_pages >> scale) & CMDQ_TLBI_RANGE_NUM_MAX
            span = num << (scale + tg)
            out.append(self.tlbi(iova, span, leaf, 0, (("NUM", num - 1), ("SCALE", scale),
                                                       ("TG", tg_field), ("TTL", ttl))))
            iova += span
            num_pages -= num << scale
        return out


class ArmSmmuV3Early(ArmSmmuV3):
    """v4.15: TLBIs issued inside ``->unmap`` as pages are cleared; CMD_SYNC in ``->iotlb_sync``.

    ``.flush_iotlb_all = arm_smmu_iotlb_sync`` in v4.15 (a CMD_SYNC: the TLBIs are already
    queued). Under the 2017 proposal's semantics (``api="rfc-2017"``), flush-all must drop
    everything, so it is TLBI_NH_ASID + CMD_SYNC — and the early TLBIs are wasted.
    """

    name = "smmuv3-v4.15"
    cmdq_entries = 1 << 8    # CMDQ_MAX_SZ_SHIFT 8 (v4.14 .. v5.3)
    min_entries = 2          # one command at a time, plus a CMD_SYNC
    no_ats = "SMMUv3 ATS support (CMD_ATC_INV) arrived in v5.2"

    def __init__(self, dom: IommuDomain, params: dict[str, Any]) -> None:
        super().__init__(dom, params)
        self.cmdq_lock = SpinLock(self.cpus, "cmdq->lock")

    def issue(self, batch: Batch, wait: bool = False) -> None:
        """``arm_smmu_cmdq_issue_cmd`` under ``cmdq->lock`` (v4.14–v5.3): insert and ring the
        doorbell holding the lock. A CMD_SYNC polled through CONS is waited for under the
        lock (v4.14 drains the queue so); with MSI completion (v4.15+) the CPU drops the lock
        and polls memory — "outside the lock" (Robin Murphy, 37de98f8f1cf)."""
        self.cmdq_lock.acquire()
        pos = self.submit(batch)
        if wait and not self.mem_poll:
            self.wait(pos)
        self.cmdq_lock.release()
        if wait and self.mem_poll:
            self.wait(pos)

    def issue_cmd(self, cmd: Command, n: int = 1) -> None:
        """``arm_smmu_cmdq_issue_cmd``: each command is its own lock + write + doorbell."""
        self.issue_repeated(lambda k: [(cmd.at(k), 1)], n, cmd.step)

    def tlb_add_page(self, gather: Any, iova: int, granule: int) -> None:
        """``tlb_add_flush(iova, size, size, leaf)`` → ``arm_smmu_tlb_inv_range_nosync``."""
        self.issue_cmd(self.tlbi(iova, granule, True, granule))

    def tlb_flush_walk(self, iova: int, size: int, granule: int) -> None:
        """Table freed: ``tlb_add_flush(leaf=false)`` per granule, then ``tlb_sync``."""
        self.dom.stats["walk_flushes"] += 1
        self.issue_cmd(self.tlbi(iova, granule, False, granule), size // granule)
        self.tlb_sync()

    def tlb_sync(self) -> None:
        """``__arm_smmu_tlb_sync``: CMD_SYNC, then poll CMDQ_CONS until it has passed."""
        self.issue([(self.cmd_sync(), 1)], wait=True)

    def iotlb_sync(self, dom: IommuDomain, gather: IommuIotlbGather) -> None:
        """``arm_smmu_iotlb_sync`` (v4.15): a CMD_SYNC; the TLBIs went out in ``->unmap``."""
        self.tlb_sync()

    def flush_iotlb_all(self, dom: IommuDomain) -> None:
        """``.flush_iotlb_all = arm_smmu_iotlb_sync`` (v4.15 .. v4.19): just a CMD_SYNC."""
        self.tlb_sync()

    def rfc2017_flush_all(self, dom: IommuDomain) -> None:
        """*Reconstruction*, not kernel code: Will Deacon's reading of a 2017-API
        ``iommu_flush_tlb_all`` ("one invalidate-all + SYNC"): it must drop the whole
        context, so the TLBIs already queued by ``->unmap`` are wasted (seed mail)."""
        self.tlb_flush_all()


class ArmSmmuV3NonStrict(ArmSmmuV3Early):
    """v4.20: non-strict DMA domains and a ``flush_iotlb_all`` that drops the context.

    ``arm_smmu_flush_iotlb_all`` → ``arm_smmu_tlb_inv_context`` (v4.20 arm-smmu-v3.c:1779-1784);
    with ``IO_PGTABLE_QUIRK_NON_STRICT`` a leaf unmap issues no TLBI (only ``smp_wmb()``),
    walk invalidations stay synchronous; the flush queue's callback is this flush-all.
    """

    name = "smmuv3-v4.20"
    rfc2017_flush_all = None  # its merged flush_iotlb_all already drops the context

    def flush_iotlb_all(self, dom: IommuDomain) -> None:
        """``arm_smmu_flush_iotlb_all``: TLBI_NH_ASID + CMD_SYNC."""
        self.tlb_flush_all()


class ArmSmmuV3Strict(ArmSmmuV3Early):
    """v4.14: no ``iotlb_sync``/``flush_iotlb_all``; io-pgtable syncs inside every ``->unmap``."""

    name = "smmuv3-v4.14"
    msi_sync_supported = False  # CMD_SYNC always CS=SEV, drained by polling CONS (v4.14.5)
    rfc2017_flush_all = None    # no flush_iotlb_all op in v4.14: the 2017 call reaches nothing

    def domain_ops(self) -> IommuDomainOps:
        return IommuDomainOps(map=self.map_pages, unmap=self.unmap_pages)

