"""Measurements the lessons 05 (gather, batches, range TLBIs, several CPUs) and 06 (other
hardware) make, as plain rows: each function builds its own domain, runs the kernel mirror
and reports what it did. The views (``iommu_lab.views.gather`` / ``views.hardware``) turn
the rows into tables and figures; the exercises of 05/06 reuse them to compute answers.

Sources: kernel-api-history.md §4 (the gather), hardware-invalidation.md §1.4–§1.6
(SMMUv3 batches, the lock-free queue, RIL), §2–§5 (SMMUv2, VT-d, AMD-Vi, virtio-iommu).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.dma_iommu import iommu_dma_map, iommu_dma_unmap
from ..core.domain import IommuDomain
from ..core.gather import GATHER_V5_4, GATHER_V5_10, GATHER_V5_15, GatherRules, IommuIotlbGather
from ..core.iommu import iommu_map, iommu_unmap
from ..drivers.arm_smmu_v3 import ArmSmmuV3, ArmSmmuV3Early, ArmSmmuV3Ril
from ..drivers.registry import iommu_domain_alloc
from ..errors import einval
from ..hw.commands import ATC_INV, INV, MAP_SIDE, SYNC, Command
from ..inputs.ops import Op
from ..inputs.workloads import kvm_teardown
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..stats import COUNTERS, MAX_COUNTERS
from ..units import SZ_4K, parse_size
from .session import Session

RW = int(IOMMU_READ | IOMMU_WRITE)
PADDR_OFFSET = 0x4000_0000          # paddr = iova + 1 GiB: keeps every alignment
GATHER_ERAS: tuple[GatherRules, ...] = (GATHER_V5_4, GATHER_V5_10, GATHER_V5_15)
MAP_KINDS = frozenset({"map", "dma_map", "map_sg", "map_sync"})   # the map phase


# ---- the gather: one merge rule per era (kernel-api-history §4.2) --------------------------

def gather_walk(pages: Iterable[tuple[int, int]],
                eras: Sequence[GatherRules] = GATHER_ERAS) -> list[dict[str, Any]]:
    """Add ``(iova, size)`` pages to a gather one by one under each era's
    ``iommu_iotlb_gather_add_page``; one row per page.

    Per era: ``<era> action`` (``start`` / ``merge`` / ``sync, then restart``), the range an
    early sync flushed, and the gather's ``start``/``end`` afterwards as that era stores
    them (``end`` exclusive in v5.4, inclusive from v5.10). The last column is AMD's v5.15
    bare-metal rule, ``iommu_iotlb_gather_add_range`` only: never sync, just widen.
    """
    gathers = [IommuIotlbGather() for _ in eras]
    amd = IommuIotlbGather()
    rows = []
    for iova, size in pages:
        row: dict[str, Any] = {"iova": iova, "size": size}
        for rules, g in zip(eras, gathers):
            flushed: list[tuple[int, int]] = []
            had = g.pgsize
            early = rules.add_page(g, iova, size, lambda gg, r=rules, f=flushed:
                                   (f.append(r.span(gg)), gg.init()))
            row[f"{rules.era} action"] = ("sync, then restart" if early
                                          else "merge" if had else "start")
            row[f"{rules.era} flushed"] = flushed[0] if flushed else None
            row[f"{rules.era} start"], row[f"{rules.era} end"] = g.start, g.end
        GATHER_V5_15.add_range(amd, iova, size)
        row["AMD v5.15 start"], row["AMD v5.15 end"] = amd.start, amd.end
        rows.append(row)
    return rows


# ---- SMMUv3 (v5.4+): what one iommu_unmap puts in the queue -------------------------------

def lockfree_smmuv3(dom: IommuDomain) -> Any:
    """The domain's lock-free command queue (SMMUv3 v5.4+), or EINVAL for other drivers."""
    drv = dom.driver
    if not isinstance(drv, ArmSmmuV3) or isinstance(drv, ArmSmmuV3Early):
        raise einval(f"{dom.strategy.name} does not insert through the v5.4 lock-free "
                     "command queue (arm_smmu_cmdq_issue_cmdlist): pick smmuv3-v5.4 or "
                     "smmuv3-ril")
    return drv.cmdq


def sync_batches(strategy: str, size: int | str, iova: int = 0, granule: int | str = SZ_4K,
                 **params: Any) -> list[dict[str, Any]]:
    """Map ``size`` bytes at ``iova`` as leaves of ``granule`` (4K pages by default: the
    physical address is offset so that no larger block fits), ``iommu_unmap`` it, and list
    every ``arm_smmu_cmdq_issue_cmdlist`` call the unmap made: its slots, how many
    commands, the first and last command, and whether it ended with the CMD_SYNC it waited
    for.

    v5.4 ``arm_smmu_tlb_inv_range`` builds one TLBI per granule into a local batch of
    ``CMDQ_BATCH_ENTRIES`` (64) and issues each full batch without sync, the last with one.
    """
    size, granule = parse_size(size), parse_size(granule, "granule")
    if not size or size % granule or iova % granule or granule & (granule - 1):
        raise einval(f"iova {iova:#x} and size {size:#x} must be non-zero multiples of the "
                     f"granule {granule:#x} (a power of two)")
    dom = iommu_domain_alloc(strategy, **params)
    cmdq = lockfree_smmuv3(dom)
    iommu_map(dom, iova, iova + PADDR_OFFSET + granule, size, RW)
    cmdq.log = []
    iommu_unmap(dom, iova, size)
    by_pos = {s.pos: s.cmd for s in dom.driver.q.slots()}
    rows = []
    for n, ins in enumerate(cmdq.log, 1):
        first, last = by_pos[ins.start], by_pos[ins.end - 1]
        rows.append({"call": n, "slots": f"{ins.start}..{ins.end - 1}",
                     "commands": ins.end - ins.start, "first": first.describe(),
                     "last": last.describe(), "ends with CMD_SYNC": last.kind == SYNC,
                     "doorbell (owner)": ins.owner})
    return rows


def ril_commands(size: int | str, granule: int | str = SZ_4K, iova: int = 0,
                 leaf: bool = True) -> list[dict[str, Any]]:
    """The SMMUv3.2 range TLBIs ``arm_smmu_tlb_inv_range`` (v5.10, ``FEAT_RANGE_INV``)
    builds for ``size`` bytes unmapped at ``granule``: one row per command with its
    encoded fields (NUM = number of units - 1, SCALE, TG, TTL) and what it covers,
    ``(NUM+1) * 2^SCALE`` pages of the 4 KiB translation granule (Arm IHI 0070 §4.4.1)."""
    size, granule = parse_size(size), parse_size(granule, "granule")
    if not size or size % granule or granule & (granule - 1) or granule < SZ_4K:
        raise einval(f"size {size:#x} must be a non-zero multiple of the granule "
                     f"{granule:#x} (a power of two, at least 4K)")
    dom = iommu_domain_alloc("smmuv3-ril")
    drv = dom.driver
    assert isinstance(drv, ArmSmmuV3Ril)
    rows = []
    for cmd in drv.ril_commands(iova, size, granule, leaf):
        f = dict(cmd.fields)
        pages = (f["NUM"] + 1) << f["SCALE"]
        rows.append({"command": cmd.name, "addr": cmd.iova, "NUM": f["NUM"],
                     "SCALE": f["SCALE"], "TG": f["TG"], "TTL": f["TTL"], "Leaf": f["Leaf"],
                     "pages": pages, "bytes": cmd.size})
    return rows


# ---- phases: a workload's map phase and unmap phase, measured apart -------------------------

PHASE_COUNTERS = ("map_calls", "unmap_calls", "sync_calls", "inv_cmds", "inv_all_cmds",
                  "sync_cmds", "doorbells", "mmio_reads", "requests", "request_waits",
                  "atc_inv_cmds", "needless_inv_cmds", "needless_sync_cmds",
                  "cmdq_full_stalls", "lock_wait_ns", "spin_ns", "cacheline_ns", "cpu_ns",
                  "iommu_ns")


@dataclass
class Phase:
    """One phase's measurements: counter deltas, its wall time on the simulated clock."""

    strategy: str
    caller: str
    phase: str
    cpus: int
    counters: dict[str, int]
    duration_ns: int
    per_iommu: list[dict[str, int]] = field(default_factory=list)
    gathered: int | None = None     # v5.4+ SMMUv3: insertions another CPU's doorbell published

    def row(self) -> dict[str, Any]:
        """Flat dict: identity, counters, duration, calls per second of this phase."""
        calls = self.counters["unmap_calls"] if self.phase == "unmap" else \
            self.counters["map_calls"]
        out: dict[str, Any] = {"strategy": self.strategy, "caller": self.caller,
                               "phase": self.phase, "cpus": self.cpus}
        out.update(self.counters)
        out["duration_ns"] = self.duration_ns
        out["calls_per_s"] = round(calls * 1e9 / self.duration_ns) if self.duration_ns else 0
        out["gathered"] = self.gathered
        out["per_iommu"] = self.per_iommu
        return out


def _busy_until(dom: IommuDomain) -> int:
    return max([dom.clock.now] + [q.hw_free for q in dom.hw.queues])


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in PHASE_COUNTERS
            if k in COUNTERS and k not in MAX_COUNTERS}


def _queue_tallies(dom: IommuDomain) -> list[dict[str, int]]:
    return [dict(t) for t in dom.per_iommu()]


def run_phases(ops: Iterable[Op], strategy: str, caller: str,
               params: dict[str, Any] | None = None) -> list[Phase]:
    """Run the ``map`` ops, then everything else, in one session: a :class:`Phase` each.

    The unmap phase starts when the map phase has finished on every CPU *and* on the
    IOMMU, so its duration is the teardown's own (``calls_per_s`` = unmaps per second).
    """
    ops = list(ops)
    maps = [op for op in ops if op.kind in MAP_KINDS]
    rest = [op for op in ops if op.kind not in MAP_KINDS]
    session = Session(strategy, caller, params)
    dom = session.dom
    log = None
    drv = dom.driver
    if isinstance(drv, ArmSmmuV3) and not isinstance(drv, ArmSmmuV3Early):
        log = drv.cmdq.log = []
    out = []
    for name, part in (("map", maps), ("unmap", rest)):
        t0, before, tally0 = _busy_until(dom), dom.stats(), _queue_tallies(dom)
        n_log = len(log) if log is not None else 0
        session.run(part)
        tally1 = _queue_tallies(dom)
        per = [{k: b[k] - a.get(k, 0) for k in b} for a, b in zip(tally0, tally1)]
        gathered = (sum(1 for ins in log[n_log:] if not ins.owner)
                    if log is not None else None)
        out.append(Phase(strategy, caller, name, dom.cpus.n, _delta(before, dom.stats()),
                         _busy_until(dom) - t0, per, gathered))
    return out


def phases(workload: Iterable[Op], strategies: Sequence[str], callers: Sequence[str],
           params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """:func:`run_phases` for every (strategy, caller): two rows each (map, unmap)."""
    ops = list(workload)
    return [p.row() for s in strategies for c in callers for p in run_phases(ops, s, c, params)]


def cpu_scaling(strategies: Sequence[str], cpus: Sequence[int] = (1, 2, 4, 8),
                guest_mem: str = "4M", page_size: str = "4K", caller: str = "unmap-each",
                costs: dict[str, int] | None = None, phase: str = "unmap",
                **params: Any) -> list[dict[str, Any]]:
    """A small KVM/VFIO guest mapped, then torn down, by 1, 2, 4, 8 CPUs at once: a row per
    (strategy, cpus) for the ``phase`` asked (``"unmap"``, ``"map"`` or ``"both"``) — lock
    waits, spinning, cacheline transfers, doorbells, how many insertions an owner's
    doorbell published for another CPU, calls per second."""
    if phase not in ("map", "unmap", "both"):
        raise einval(f"phase {phase!r} must be 'map', 'unmap' or 'both'")
    work = list(kvm_teardown(guest_mem, page_size))
    rows = []
    for s in strategies:
        for n in cpus:
            p = {**params, "cpus": n, **({"costs": costs} if costs else {})}
            rows += [ph.row() for ph in run_phases(work, s, caller, p)
                     if phase in ("both", ph.phase)]
    return rows


# The figures published for Will Deacon's lock-free command queue (hardware-invalidation.md
# §1.5 and §7 #3–#5; iommu-list replies, Jul 2019 and May 2020). None is a per-command cost.
PUBLISHED_CMDQ: tuple[dict[str, str], ...] = (
    {"who": "John Garry (Huawei D05, 8× SAS, fio)", "before": "839K IOPS",
     "after (lock-free)": "835K IOPS", "note": "no IOMMU: ≈918K IOPS",
     "source": "iommu-list reply, 24 Jul 2019"},
    {"who": "John Garry (Huawei D05, 1× NVMe, fio)", "before": "454K IOPS",
     "after (lock-free)": "472K IOPS", "note": "+4%",
     "source": "iommu-list reply, 24 Jul 2019"},
    {"who": "John Garry (Huawei D06, 1× NVMe, fio)", "before": "442K IOPS",
     "after (lock-free)": "459K IOPS", "note": "+4%; unmap share of the profile 5.64% → 2.75%",
     "source": "iommu-list reply, 24 Jul 2019"},
    {"who": "Ganapatrao Kulkarni (ThunderX2, iperf -P 64)",
     "before": "cmdq helpers 15–20% of CPU", "after (lock-free)": "1–2% of CPU",
     "note": "\"no measurable performance improvement in iperf\"",
     "source": "iommu-list reply, 19 Jul 2019"},
    {"who": "John Garry (96-CPU Huawei, NVMe, 2020)", "before": "—",
     "after (lock-free)": "arm_smmu_cmdq_issue_cmdlist 75.91% of the I/O CPU's samples",
     "note": "the single queue is still the bottleneck",
     "source": "\"arm-smmu-v3 high cpu usage for NVMe\", 22 May 2020"},
)


# ---- other hardware: what one unmap issues, and what the device sees afterwards -------------

@dataclass
class UnmapProbe:
    """What one unmap did on one strategy: its commands (per IOMMU), counter deltas, how
    long it took, and what the device's reads of the unmapped pages return afterwards."""

    strategy: str
    iova: int
    size: int
    commands: list[dict[str, Any]]
    counters: dict[str, int]
    time_ns: int
    after: list[str]
    per_iommu: list[dict[str, int]]


def _issued(dom: IommuDomain, since: list[int]) -> list[dict[str, Any]]:
    rows = []
    for i, (q, first) in enumerate(zip(dom.driver.queues, since)):
        for s in q.slots():
            if s.pos >= first:
                rows.append(_command_row(i, s.cmd))
    return rows


def _command_row(iommu: int, cmd: Command) -> dict[str, Any]:
    covers = (cmd.iova, cmd.iova + cmd.size) if cmd.kind in (INV, ATC_INV) and cmd.size \
        else None
    return {"iommu": iommu, "command": cmd.name, "kind": cmd.kind, "fields": cmd.describe(),
            "covers": covers, "map side": cmd.reason == MAP_SIDE}


def unmap_probe(strategy: str, iova: int, size: int | str, *, type: str = "UNMANAGED",
                window: tuple[int, int | str] | None = None, warm: bool = True,
                **params: Any) -> UnmapProbe:
    """Map, let the device read, unmap ``[iova, iova+size)`` once, then read it again.

    ``window`` (iova, size) is what is mapped and read before the unmap (default: the
    unmapped range itself), so an invalidation wider than the unmap shows up as
    ``over_invalidated`` valid entries. ``type="DMA"`` maps and unmaps one DMA-API buffer
    (``iommu_dma_map`` / ``iommu_dma_unmap``: VT-d ≤ v5.10 uses its own ``intel_unmap``,
    one PSI for the whole buffer). ``params`` go to :func:`iommu_domain_alloc` (``ats``,
    ``iommus``, ``cap_max_amask_val``, ``np_cache``...).
    """
    size = parse_size(size)
    w_iova, w_size = (iova, size) if window is None else (window[0], parse_size(window[1]))
    if not (w_iova <= iova and iova + size <= w_iova + w_size):
        raise einval(f"window {w_iova:#x}+{w_size:#x} must contain the unmap "
                     f"{iova:#x}+{size:#x}")
    dom = iommu_domain_alloc(strategy, type=type, **params)
    dma = dom.dtype.dma_api
    if dma:
        if window is not None:
            raise einval("a DMA-API probe maps exactly the buffer it unmaps (no window)")
        iommu_dma_map(dom, iova + PADDR_OFFSET, size, RW, iova=iova)
    else:
        iommu_map(dom, w_iova, w_iova + PADDR_OFFSET, w_size, RW)
    if warm:
        for a in range(w_iova, w_iova + w_size, SZ_4K):
            dom.dma_access(a)
    dom.hw.settle()
    since = [q.prod for q in dom.driver.queues]
    before, tally0 = dom.stats(), _queue_tallies(dom)
    t0 = _busy_until(dom)
    if dma:
        iommu_dma_unmap(dom, iova, size)
    else:
        iommu_unmap(dom, iova, size)
    t1 = _busy_until(dom)
    commands = _issued(dom, since)
    counters = {k: v - before.get(k, 0) for k, v in dom.stats().items()
                if k not in MAX_COUNTERS and v - before.get(k, 0)}
    per = [{k: b[k] - a.get(k, 0) for k in b} for a, b in zip(tally0, _queue_tallies(dom))]
    dom.clock.idle_until(t1)
    after = [dom.dma_access(a) for a in range(iova, iova + size, SZ_4K)]
    return UnmapProbe(strategy, iova, size, commands, counters, t1 - t0, after, per)


@dataclass
class MapProbe:
    """Sync on map: the device touches an IOVA before it is mapped (``before``), the
    kernel maps it, the device reads it again (``after``); what the map issued."""

    strategy: str
    before: str
    after: str
    counters: dict[str, int]
    commands: list[dict[str, Any]]


def map_probe(strategy: str, iova: int = 0x10_0000, size: int | str = SZ_4K,
              touch: bool = True, **params: Any) -> MapProbe:
    """Does this IOMMU need an invalidation after *map*? With an IOMMU that caches
    not-present entries (VT-d caching mode, AMD NpCache, or ``cache_non_present=True``)
    the device's earlier fault (``touch``: the device reads ``iova`` before the map) is
    cached, and only a map-side flush makes the new mapping visible; without that earlier
    access a map-side flush finds nothing to drop (``needless_inv_cmds``)."""
    size = parse_size(size)
    dom = iommu_domain_alloc(strategy, **params)
    first = dom.dma_access(iova) if touch else "(no access)"
    since = [q.prod for q in dom.driver.queues]
    before = dom.stats()
    iommu_map(dom, iova, iova + PADDR_OFFSET, size, RW)
    dom.hw.settle()
    then = dom.dma_access(iova)
    counters = {k: v - before.get(k, 0) for k, v in dom.stats().items()
                if k not in MAX_COUNTERS and v - before.get(k, 0)}
    return MapProbe(strategy, first, then, counters, _issued(dom, since))


__all__ = ["GATHER_ERAS", "PHASE_COUNTERS", "PUBLISHED_CMDQ", "MapProbe", "Phase",
           "UnmapProbe", "cpu_scaling", "gather_walk", "lockfree_smmuv3", "map_probe",
           "phases", "ril_commands", "run_phases", "sync_batches", "unmap_probe"]
