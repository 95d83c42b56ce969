"""Run a workload under one (strategy, caller) pair, step by step or compactly.

The compact path (issue: "represent runs of identical commands compactly") works on runs
(``Op.count > 1``) whose items all behave alike: every item is one naturally aligned page
and the page table agrees for all of them (all empty for map, all exactly that leaf for
unmap). Items are executed one by one while a *signature* of the timing state relative
to the CPU clock (queue contents, gathers, caller batch position, flush queue) is recorded;
as soon as a signature repeats, the state is periodic, so the remaining whole periods
are applied at once: counters by ``delta × repetitions``, all absolute times and queue
positions shifted, the page table updated with numpy. Counts and times are exactly those
of the step-by-step path (a test checks this). It is only used while the IOTLB holds no
entry of the domain (nothing there could observe the order) and never across a
flush-queue timer expiry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..core.dma_iommu import (
    IovaDomain,
    fq_advance,
    fq_check_timer,
    iommu_dma_map,
    iommu_dma_unmap,
)
from ..core.domain import IommuDomain
from ..core.gather import IommuIotlbGather
from ..core.iommu import (
    iommu_flush_iotlb_all,
    iommu_iotlb_sync,
    iommu_map,
    iommu_map_sg,
    iommu_map_sync,
    iommu_unmap,
    iommu_unmap_fast,
    iommu_unmap_sync,
)
from ..drivers.registry import iommu_domain_alloc
from ..errors import IommuError
from ..inputs.ops import Op
from .callers import VFIO_IOMMU_TLB_SYNC_MAX, Caller, get_caller

SEEN_LIMIT = 5000        # items to watch for a repeating state before giving up on a run
COMPACT_MIN = 64         # shorter runs are cheaper to step than to analyse
COMPACT_KINDS = frozenset({"map", "unmap", "unmap_fast", "dma_map", "dma_unmap"})


class Session:
    """A domain plus the caller pattern's own state (its gather, batch counters)."""

    def __init__(self, strategy: str, caller: str, params: dict[str, Any] | None = None,
                 compact: bool = True, lenient: bool = False) -> None:
        self.caller: Caller = get_caller(caller)
        self.dom: IommuDomain = iommu_domain_alloc(strategy, type=self.caller.domain_type,
                                                   api=self.caller.api, **(params or {}))
        self.gather = IommuIotlbGather()
        self.pending_regions = 0      # unmap-fast-batch: regions since the last sync
        self.unflushed = False        # unmap-then-flush-all: unmaps awaiting the flush-all
        self.compact = compact
        self.compacted_items = 0
        self.items = 0
        self.lenient = lenient        # replay: count failing ops instead of raising
        self.op_errors: list[str] = []
        self.handles: dict[int, int] = {}  # buffer paddr -> IOVA the DMA layer gave it
        self.iovad = IovaDomain()     # IOVAs for iova-0 DMA ops on UNMANAGED domains

    # ---- one operation -----------------------------------------------------------
    def do(self, op: Op) -> None:
        """Execute one single op (``count == 1``) the way the caller pattern would."""
        dom = self.dom
        if op.at_ns is not None and op.at_ns > dom.clock.now:
            fq_advance(dom, op.at_ns - dom.clock.now)
        fq_check_timer(dom)
        kind = op.kind
        if kind not in ("unmap", "dma_unmap") or self.caller.name.startswith("dma"):
            self._end_unmap_stretch()
        self.items += 1
        if not self.lenient:
            getattr(self, "_op_" + kind)(op)
            return
        try:
            getattr(self, "_op_" + kind)(op)
        except IommuError as exc:
            self.op_errors.append(f"{kind} at {op.iova:#x}: {exc}")

    def _dma_span(self, op: Op) -> Op:
        """Non-DMA callers map DMA-API buffers as whole pages, as the DMA layer would."""
        g = self.dom.pgtable.granule
        if op.kind not in ("dma_map", "dma_unmap") or not op.size % g:
            return op
        return Op(op.kind, op.iova, (op.size + g - 1) & ~(g - 1), op.paddr, op.prot, op.write)

    def _op_map(self, op: Op) -> None:
        name, dom = self.caller.name, self.dom
        if not name.startswith("dma"):
            op = self._dma_span(op)
        iova = op.iova
        chosen = op.kind == "dma_map" and not op.iova  # the DMA layer picks the IOVA
        if name.startswith("dma"):
            iova = iommu_dma_map(dom, op.paddr, op.size, op.prot, iova=None if chosen else iova)
        else:
            if chosen:
                iova = self.iovad.alloc(op.size)
            if name == "rfc-2017-wrappers":
                iommu_map_sync(dom, iova, op.paddr, op.size, op.prot)
            else:
                iommu_map(dom, iova, op.paddr, op.size, op.prot)
        if chosen:
            self.handles[op.paddr] = iova

    _op_dma_map = _op_map

    def _iova_of(self, op: Op) -> int:
        """The op's IOVA, or the one its buffer (``paddr``) was last mapped at."""
        if op.iova or not op.paddr or op.kind not in ("dma_unmap", "access"):
            return op.iova
        if op.paddr not in self.handles:
            raise IommuError(22, f"buffer at paddr {op.paddr:#x} was never DMA-mapped")
        return self.handles[op.paddr]

    def _op_map_sg(self, op: Op) -> None:
        sg = [(op.paddr + i * op.paddr_stride, op.size) for i in range(op.count)]
        iommu_map_sg(self.dom, op.iova, sg, op.prot)

    def _op_unmap(self, op: Op) -> None:
        name, dom = self.caller.name, self.dom
        if op.kind == "dma_unmap" and not op.iova and op.paddr:
            op = Op(op.kind, self._iova_of(op), op.size, op.paddr)
            if not name.startswith("dma"):
                self.iovad.release(op.iova)
        if not name.startswith("dma"):
            op = self._dma_span(op)
        if name.startswith("dma"):
            iommu_dma_unmap(dom, op.iova, op.size)
        elif name == "unmap-each":
            iommu_unmap(dom, op.iova, op.size)
        elif name == "rfc-2017-wrappers":
            iommu_unmap_sync(dom, op.iova, op.size)
        elif name == "unmap-then-flush-all":
            iommu_unmap(dom, op.iova, op.size)  # 2017 API: never syncs
            self.unflushed = True
        else:  # unmap-fast-batch
            iommu_unmap_fast(dom, op.iova, op.size, self.gather)
            self.pending_regions += 1
            if self.pending_regions >= VFIO_IOMMU_TLB_SYNC_MAX:
                self._batch_sync()

    _op_dma_unmap = _op_unmap

    def _op_unmap_fast(self, op: Op) -> None:
        iommu_unmap_fast(self.dom, op.iova, op.size, self.gather)

    def _op_sync(self, op: Op) -> None:
        iommu_iotlb_sync(self.dom, None if self.caller.api == "rfc-2017" else self.gather)

    def _op_flush_all(self, op: Op) -> None:
        iommu_flush_iotlb_all(self.dom)

    def _op_access(self, op: Op) -> None:
        self.dom.dma_access(self._iova_of(op), op.write)

    def _op_advance(self, op: Op) -> None:
        fq_advance(self.dom, op.ns)

    def _batch_sync(self) -> None:
        iommu_iotlb_sync(self.dom, self.gather)
        self.pending_regions = 0

    def _end_unmap_stretch(self) -> None:
        """A stretch of unmaps ended: sync the batch / issue the flush-all it awaits."""
        if self.pending_regions:
            self._batch_sync()
        if self.unflushed:
            iommu_flush_iotlb_all(self.dom)
            self.unflushed = False

    def finish(self) -> None:
        """End of workload: complete pending batches; let a pending flush-queue timer fire."""
        self._end_unmap_stretch()
        fq = self.dom.fq
        if fq is not None and fq.timer_deadline is not None:
            fq_advance(self.dom, fq.timer_deadline - self.dom.clock.now)
        for q in self.dom.hw.queues:
            q.settle(max(self.dom.clock.now, q.hw_free))

    # ---- a run of operations -------------------------------------------------------
    def run(self, ops: Iterable[Op], progress: Any = None) -> None:
        """Execute every op (runs compactly where possible), then :meth:`finish`."""
        for op in ops:
            self.run_op(op, progress)
        self.finish()

    def run_op(self, op: Op, progress: Any = None) -> None:
        """One op record, which may be a run of ``count`` items."""
        if op.count == 1 or op.kind == "map_sg":
            self.do(op)
        elif op.kind == "advance":
            self.do(Op("advance", ns=op.ns * op.count, at_ns=op.at_ns))
        elif (self.compact and op.count >= COMPACT_MIN and op.kind in COMPACT_KINDS
              and self._uniform(op)):
            self._run_compact(op, progress)
            return
        else:
            for i in range(op.count):
                self.do(op.item(i))
                if progress is not None and i % 4096 == 4095:
                    progress.update(4096)
            if progress is not None:
                progress.update(op.count % 4096)
            return
        if progress is not None:
            progress.update(op.count)

    def _leaf_layout(self, op: Op) -> tuple[int, int] | None:
        """(leaf size, leaves per item) when every item is one aligned page, else None."""
        dom, size = self.dom, op.size
        if size & (size - 1) or not size & dom.pgsize_bitmap or op.stride < size:
            return None
        if (op.iova | op.stride) % size:
            return None
        if op.kind in ("map", "dma_map") and (op.paddr | op.paddr_stride) % size:
            return None
        leaf = max(s for s in dom.pgtable.leaf_sizes if s <= size)
        return leaf, size // leaf

    def _leaf_arrays(self, op: Op, first: int, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        leaf, per = self._leaf_layout(op)  # type: ignore[misc]
        idx = np.arange(first, first + n, dtype=np.uint64)
        off = np.arange(per, dtype=np.uint64) * np.uint64(leaf)
        iovas = (np.uint64(op.iova) + idx * np.uint64(op.stride))[:, None] + off
        paddrs = (np.uint64(op.paddr) + idx * np.uint64(op.paddr_stride))[:, None] + off
        return iovas.ravel(), paddrs.ravel(), leaf

    def _uniform(self, op: Op) -> bool:
        """Do all items of the run behave alike (same chunks, page table agrees)?"""
        if self._leaf_layout(op) is None:
            return False
        iovas, _, leaf = self._leaf_arrays(op, 0, op.count)
        pt = self.dom.pgtable
        last = op.iova + (op.count - 1) * op.stride + op.size
        if last > 1 << pt.cfg.ias:
            return False
        if op.kind in ("map", "dma_map"):
            fq = self.dom.fq
            if fq is not None and any(e.iova < last and op.iova < e.iova + e.size
                                      for e in fq.entries):
                return False
            return pt.can_map_bulk(iovas, leaf)
        return pt.can_unmap_bulk(iovas, leaf)

    def signature(self, next_iova: int) -> tuple:
        """Everything that decides future timing and counts, relative to now and ``next_iova``."""
        dom = self.dom
        qs = tuple(q.signature() for q in dom.hw.queues)
        fq = dom.fq
        fqs = None
        if fq is not None:
            fqs = (tuple((e.iova - next_iova, e.size, fq.fq_flush_start_cnt - e.counter)
                         for e in fq.entries),
                   fq.fq_flush_start_cnt - fq.fq_flush_finish_cnt, fq.timer_deadline is not None)
        return (qs, _gsig(self.gather, next_iova), _gsig(dom.rfc_gather, next_iova),
                self.pending_regions, self.unflushed, fqs)

    def _can_extrapolate(self) -> bool:
        dom = self.dom
        return dom.hw.iotlb.count(dom.asid) == 0 and not any(q.paused for q in dom.hw.queues)

    def _run_compact(self, op: Op, progress: Any) -> None:
        dom, i, seen = self.dom, 0, {}
        while i < op.count:
            if self._can_extrapolate() and len(seen) < SEEN_LIMIT:
                nxt = op.iova + i * op.stride
                sig = self.signature(nxt)
                hit = seen.get(sig)
                if hit is not None:
                    reps = self._repetitions(op, i, hit)
                    if reps:
                        self._extrapolate(op, i, hit, reps)
                        i += reps * (i - hit[0])
                        seen.clear()
                        if progress is not None:
                            progress.update(reps * (i - hit[0]))
                        continue
                seen[sig] = (i, dom.stats.snapshot(), dom.clock.now, self._positions())
            self.do(op.item(i))
            i += 1
            if progress is not None:
                progress.update(1)

    def _positions(self) -> tuple[tuple[tuple[int, int], ...], int, int | None]:
        fq = self.dom.fq
        return (tuple((q.prod, q.inv_since_sync) for q in self.dom.hw.queues),
                fq.fq_flush_start_cnt if fq is not None else 0,
                fq.timer_deadline if fq is not None else None)

    def _repetitions(self, op: Op, i: int, hit: tuple) -> int:
        j, _, t, (_, _, deadline) = hit
        period, dt = i - j, self.dom.clock.now - t
        reps = (op.count - i) // period
        fq = self.dom.fq
        if fq is not None and fq.timer_deadline is not None:
            if fq.timer_deadline != deadline or dt <= 0:
                return 0  # the timer fired (and was re-armed) inside the period
            reps = min(reps, (fq.timer_deadline - self.dom.clock.now) // dt)
        return max(0, reps)

    def _extrapolate(self, op: Op, i: int, hit: tuple, reps: int) -> None:
        """Apply ``reps`` more periods: page table in bulk, counters and times by delta."""
        dom = self.dom
        j, snap, t, (prods, fq_cnt, _) = hit
        period = i - j
        n = reps * period
        iovas, paddrs, leaf = self._leaf_arrays(op, i, n)
        if op.kind in ("map", "dma_map"):
            ok = dom.pgtable.map_bulk(iovas, paddrs, leaf, op.prot)
        else:
            ok = dom.pgtable.unmap_bulk(iovas, leaf)
        assert ok, "uniform run changed shape during compact execution"
        t0 = dom.clock.now
        dt = (dom.clock.now - t) * reps
        dom.stats.extrapolate(snap, dom.stats.snapshot(), reps)
        dpos = [((q.prod - p) * reps, (q.inv_since_sync - inv) * reps)
                for q, (p, inv) in zip(dom.hw.queues, prods)]
        diova = op.stride * n
        fq = dom.fq
        dfq = (fq.fq_flush_start_cnt - fq_cnt) * reps if fq is not None else 0
        _shift(self, dt, dpos, diova, dfq, op.iova + i * op.stride)
        self.items += n
        self.compacted_items += n
        dom.trace.add(t0, dom.clock.now, "CPU", f"{op.kind} x{n} (compact)", op.iova + i * op.stride,
                      op.size * n, f"{reps} repetitions of a {period}-item period")


def _gsig(g: IommuIotlbGather, nxt: int) -> tuple:
    """A gather relative to the next item. Items ascend, so once the next item lies at or
    above ``start`` only ``end`` decides merging; ``start`` then stays put (a growing gather)."""
    if not g.pgsize:
        return (0, g.queued)
    if nxt >= g.start:
        return (g.pgsize, "grow", g.end - nxt, g.queued)
    return (g.pgsize, g.start - nxt, g.end - nxt, g.queued)


def _shift(s: Session, dt: int, dpos: list[tuple[int, int]], diova: int, dfq: int,
           nxt: int) -> None:
    """Move every absolute time, queue position and pending IOVA forward."""
    dom = s.dom
    dom.clock.now += dt
    for q, (dp, dinv) in zip(dom.hw.queues, dpos):
        q.inv_since_sync += dinv
        q.hw_free += dt
        for run in q.runs:
            run.pos += dp
            if run.start is not None:
                run.start += dt
        q.prod += dp
        q.published += dp
    for g in (s.gather, dom.rfc_gather):
        if g.pgsize:
            if nxt < g.start:  # a growing gather keeps its start (see _gsig)
                g.start += diova
            g.end += diova
    fq = dom.fq
    if fq is not None:
        for e in fq.entries:
            e.iova += diova
            e.counter += dfq
            e.queued_ns += dt
        fq.fq_flush_start_cnt += dfq
        fq.fq_flush_finish_cnt += dfq
