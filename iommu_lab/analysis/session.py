"""Run a workload under one (strategy, caller) pair, step by step or compactly.

A session is a domain plus the caller pattern's own state (its gather, the regions since
the last batched sync, whether a flush-all is owed). ``do(op)`` executes one op through
the op-kind table :data:`OP_KINDS`; ``run(ops)`` executes runs of ops (``Op.count > 1``)
compactly where every item behaves alike (one naturally aligned page each, and the page
table agrees for all of them) through :mod:`iommu_lab.compact`, with the same counts and
times as stepping each item.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

from ..compact import Run, Shift, run_periodic
from ..core.dma_iommu import IovaDomain, fq_advance, fq_check_timer
from ..core.domain import IommuDomain
from ..core.gather import IommuIotlbGather
from ..core.iommu import (
    iommu_flush_iotlb_all,
    iommu_iotlb_sync,
    iommu_map_sg,
    iommu_unmap_fast,
    run_leaves,
)
from ..core.rfc2017 import iommu_map_sync, iommu_tlb_range_add, iommu_unmap_sync
from ..drivers.registry import iommu_domain_alloc
from ..errors import IommuError, einval
from ..inputs.ops import Op, spread_over_cpus
from ..memo import OpMemo
from ..plain import field_repr
from .callers import Caller, get_caller

COMPACT_MIN = 64         # shorter runs are cheaper to step than to analyse
COMPACT_KINDS = frozenset({"map", "unmap", "unmap_fast", "dma_map", "dma_unmap"})
UNMAP_KINDS = frozenset({"unmap", "dma_unmap"})


class CallerState:
    """What a caller keeps between calls, per CPU: its gather and its batch position. (A
    plain class, so that the compiled build makes it an extension type: ``session.pxd``.)"""

    def __init__(self, gather: IommuIotlbGather | None = None, pending_regions: int = 0,
                 unflushed: bool = False) -> None:
        self.gather = IommuIotlbGather() if gather is None else gather
        self.pending_regions = pending_regions  # unmap-fast-batch: regions since the last sync
        self.unflushed = unflushed              # unmap-then-flush-all: unmaps awaiting the flush-all

    def __repr__(self) -> str:
        return field_repr(self, ("gather", "pending_regions", "unflushed"))


class Session:
    """A domain plus the caller pattern's own state, one per CPU (its gather, counters)."""

    def __init__(self, strategy: str, caller: str, params: dict[str, Any] | None = None,
                 compact: bool = True, lenient: bool = False, type: str | None = None,
                 api: str | None = None) -> None:
        self.caller: Caller = get_caller(caller)
        dtype = _choice(self.caller.domain_type, type, "domain type", "UNMANAGED")
        api = _choice(self.caller.api, api, "api", "kernel")
        params = {"compact": compact, **(params or {})}
        self.dom: IommuDomain = iommu_domain_alloc(strategy, type=dtype, api=api, **params)
        self.states = [CallerState() for _ in range(self.dom.cpus.n)]
        self.compact = compact
        self.compacted_items = 0
        self.items = 0
        self.lenient = lenient        # replay: count failing ops instead of raising
        self.op_errors: list[str] = []
        self.handles: dict[int, int] = {}  # buffer paddr -> IOVA the DMA layer gave it
        self.iovad = IovaDomain()     # IOVAs for iova-0 DMA ops on UNMANAGED domains
        self.memo = OpMemo(self)      # recorded outcomes of single maps and unmaps
        self._running = False         # inside run(): counters completed at its end

    @property
    def state(self) -> CallerState:
        """The running CPU's caller state (one CPU: the only one, without asking which runs:
        the op memo, one CPU only, reads it several times per op)."""
        states = self.states
        return states[0] if len(states) == 1 else states[self.dom.cpus.current]

    @property
    def own_gather(self) -> IommuIotlbGather:
        """The running CPU's own gather."""
        return self.state.gather

    @property
    def pending_regions(self) -> int:
        """Regions unmapped since this CPU's last batched sync."""
        return self.state.pending_regions

    @pending_regions.setter
    def pending_regions(self, n: int) -> None:
        self.state.pending_regions = n

    @property
    def unflushed(self) -> bool:
        """Has this CPU unmapped something a flush-all still owes?"""
        return self.state.unflushed

    @unflushed.setter
    def unflushed(self, value: bool) -> None:
        self.state.unflushed = value

    @property
    def gather(self) -> IommuIotlbGather:
        """The gather the caller passes to unmap_fast and sync (the domain's pending
        range on the 2017 API, which has no caller-owned gather)."""
        return self.state.gather if self.dom.api.caller_gather else self.dom.rfc_gather

    # ---- one operation -----------------------------------------------------------
    def do(self, op: Op) -> Any:
        """Execute one single op (``count == 1``) the way the caller pattern would; returns
        what the call returned (e.g. ``"hit"`` for a device access). The counters are
        complete when it returns (outside :meth:`run`, which completes them at its end:
        :meth:`Stats.memo_settle <iommu_lab.stats.Stats.memo_settle>`)."""
        if self._running:
            return self._do(op)
        self.memo.forget()            # the caller may have changed the domain since
        try:
            return self._do(op)
        finally:
            self.dom.stats.memo_settle()

    def _do(self, op: Op) -> Any:
        dom = self.dom
        if dom.cpus.running:          # several CPUs: operations begin in time order
            dom.cpus.sync()
        if op.at_ns is not None and op.at_ns > dom.clock.now:
            fq_advance(dom, op.at_ns - dom.clock.now)
        if dom.fq is not None:
            fq_check_timer(dom)
        if op.kind not in UNMAP_KINDS:
            self._end_stretch()
        self.items += 1
        handler = OP_KINDS[op.kind]
        if not self.lenient:
            return self.memo.do(op, handler)
        try:
            return self.memo.do(op, handler)
        except IommuError as exc:
            self.op_errors.append(f"{op.kind} at {op.iova:#x}: {exc}")
            return None

    # ---- what non-DMA callers do with DMA-API buffers ----------------------------------
    def _dma_span(self, op: Op) -> Op:
        """Non-DMA callers map DMA-API buffers as whole pages, as the DMA layer would."""
        g = self.dom.pgtable.granule
        if op.kind not in ("dma_map", "dma_unmap") or not op.size % g:
            return op
        return Op(op.kind, op.iova, (op.size + g - 1) & ~(g - 1), op.paddr, op.prot, op.write)

    def iommu_target(self, op: Op) -> tuple[Op, int]:
        """(op, IOVA) for an IOMMU-API map: a ``dma_map`` at IOVA 0 gets one allocated."""
        op = self._dma_span(op)
        if op.kind != "dma_map" or op.iova:
            return op, op.iova
        iova = self.iovad.alloc(op.size)
        self.handles[op.paddr] = iova
        return op, iova

    def iommu_unmap_target(self, op: Op) -> Op:
        """The region an IOMMU-API unmap covers (a ``dma_unmap`` by buffer: its IOVA)."""
        if op.kind == "dma_unmap" and not op.iova and op.paddr:
            op = Op(op.kind, self.iova_of(op), op.size, op.paddr)
            self.iovad.release(op.iova)
        return self._dma_span(op)

    def iova_of(self, op: Op) -> int:
        """The op's IOVA, or the one its buffer (``paddr``) was last mapped at."""
        if op.iova or not op.paddr or op.kind not in ("dma_unmap", "access"):
            return op.iova
        if op.paddr not in self.handles:
            raise einval(f"buffer at paddr {op.paddr:#x} was never DMA-mapped")
        return self.handles[op.paddr]

    def finish(self) -> None:
        """End of workload: complete pending batches; let a pending flush-queue timer fire."""
        if self.dom.cpus.n == 1:
            self.caller.end_stretch(self)
        fq = self.dom.fq
        if fq is not None and fq.timer_deadline is not None:
            fq_advance(self.dom, fq.timer_deadline - self.dom.clock.now)
        for q in self.dom.hw.queues:
            q.settle(max(self.dom.clock.now, q.hw_free))

    # ---- a run of operations -------------------------------------------------------
    def run(self, ops: Iterable[Op], progress: Any = None) -> None:
        """Execute every op (runs compactly where possible), then :meth:`finish`.

        With several CPUs each runs its own ops (``Op.cpu``; spread over the CPUs when the
        workload did not say) concurrently on the shared clock, and ends its own batches.
        """
        n = self.dom.cpus.n
        self._running = True
        memo = self.memo
        memo.forget()                  # the caller may have changed the domain since
        try:
            if n == 1:
                for op in ops:         # single ops straight in: no progress, no layers
                    if op.count == 1 and progress is None:
                        self._do(op)   # compiled: a C call (session.pxd)
                    else:
                        memo.forget()  # a run's compact path changes the queues directly
                        self.run_op(op, progress)
                        memo.forget()
            else:
                streams = self._streams(list(ops), n)
                self.dom.cpus.run([self._stream(s, progress) for s in streams])
            self.finish()
        finally:
            self._running = False
            self.dom.stats.memo_settle()

    def _streams(self, ops: list[Op], n: int) -> list[list[Op]]:
        if not any(op.cpu for op in ops):
            ops = spread_over_cpus(ops, n)
        streams: list[list[Op]] = [[] for _ in range(n)]
        for op in ops:
            if op.cpu >= n:
                raise einval(f"op {op.kind} at {op.iova:#x} is for CPU {op.cpu}; the domain "
                             f"has {n} CPU(s) (params cpus=...)")
            streams[op.cpu].append(op)
        return streams

    def _stream(self, ops: list[Op], progress: Any) -> Callable[[], None]:
        def run() -> None:
            for op in ops:
                self.run_op(op, progress)
            self.caller.end_stretch(self)
        return run

    def run_op(self, op: Op, progress: Any = None) -> None:
        """One op record, which may be a run of ``count`` items."""
        tick = progress.update if progress is not None else None
        if op.count == 1 or op.kind == "map_sg":
            self.do(op)
        elif op.kind == "advance":
            self.do(Op("advance", ns=op.ns * op.count, at_ns=op.at_ns))
        elif (self.compact and op.count >= COMPACT_MIN and op.kind in COMPACT_KINDS
              and self._uniform(op)):
            t0 = self.dom.clock.now
            run = Run(op.count, op.iova, op.stride, lambda i: self.do(op.item(i)),
                      lambda i, n: self._bulk(op, i, n), self.dom.quiet)
            n = run_periodic(run, self.dom.clock, [*self.dom.periodic_parts(), self], tick)
            self.items += n
            self.compacted_items += n
            if n:
                self.dom.trace.add(t0, self.dom.clock.now, self.dom.cpu_lane(),
                                   f"{op.kind} x{op.count} (compact)", op.iova,
                                   op.total_bytes, f"{n} extrapolated")
            return
        else:
            for i in range(op.count):
                self.do(op.item(i))
                if tick is not None:
                    tick(1)
            return
        if tick is not None:
            tick(op.count)

    # ---- compact runs: the session's own part, and the run's page-table effect ----------
    def signature(self, next_iova: int) -> Hashable:
        """The caller's state: its gather, the batch position, a flush-all owed (one CPU:
        compact runs are only taken with one)."""
        return (self.own_gather.signature(next_iova), self.pending_regions, self.unflushed)

    # ---- the op memo (iommu_lab.memo; one CPU) ------------------------------------------
    def memo_caller(self, anchor: int) -> Hashable | None:
        """The caller's own state, exactly, relative to ``anchor`` (an op's IOVA, or where
        a sync's range starts): its gather, the 2017 API's pending range (the gather a
        caller passes on that API), the batch position, a flush-all owed; None if the memo
        cannot move it."""
        state = self.state
        gather = state.gather.memo_state(anchor)
        pending = self.dom.rfc_gather.memo_state(anchor)
        if gather is None or pending is None:
            return None
        return gather, pending, state.pending_regions, state.unflushed

    def memo_caller_change(self, before: Any, after: Any) -> Any:
        """What :meth:`memo_set_caller` sets to turn the :meth:`memo_caller` ``before`` an
        op into the one ``after`` it (None: nothing changed). A gather the op left as it
        was (equal relative to the op's anchor, so equal outright) is None there, and a
        replay leaves it alone: most ops change one gather at most. (``before`` is the
        state the op's key was formed with: never None.)"""
        if after == before:
            return None
        gather, pending, regions, unflushed = after
        return (None if gather == before[0] else gather,
                None if pending == before[1] else pending, regions, unflushed)

    def memo_set_caller(self, caller: Any, anchor: int) -> None:
        """Take a :meth:`memo_caller_change` recorded for an op, for one at ``anchor``."""
        state = self.state
        gather, pending, state.pending_regions, state.unflushed = caller
        if gather is not None:
            state.gather.memo_restore(gather, anchor)
        if pending is not None:
            self.dom.rfc_gather.memo_restore(pending, anchor)

    def memo_anchor(self) -> int:
        """Where the caller's pending sync would invalidate from (the start of the gather
        it passes: its own, or the 2017 API's pending range)."""
        gather = self.gather          # typed in session.pxd: a C call
        return gather.memo_anchor()

    def end_stretch(self) -> None:
        """The caller ends a stretch of unmaps: a sync or flush-all owed goes through the op
        memo (which replays it when it has seen its like); with nothing owed, it is the
        caller's call itself, which then does nothing."""
        self.memo.forget()            # the caller may have changed the domain since
        self._end_stretch()

    def _end_stretch(self) -> None:
        """:meth:`end_stretch` between two ops of a run (the last replay's state known)."""
        state = self.state
        if state.pending_regions or state.unflushed:
            self.memo.stretch(self.caller.end_stretch)
        else:
            self.caller.end_stretch(self)

    def mark(self) -> None:
        """Nothing to remember (the gather shifts by the IOVA advance alone)."""

    def repeat(self, mark: None, reps: int, shift: Shift) -> None:
        """The caller's gather moves on with the run."""
        self.own_gather.repeat(None, reps, shift)

    def _leaves(self, op: Op, first: int, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        return run_leaves(self.dom, op.iova + first * op.stride,
                          op.paddr + first * op.paddr_stride, op.size, n, op.stride,
                          op.paddr_stride)

    def _bulk(self, op: Op, first: int, n: int) -> None:
        """Apply items ``first .. first+n-1`` to the page table in one go."""
        iovas, paddrs, leaf = self._leaves(op, first, n)
        pt = self.dom.pgtable
        ok = (pt.map_bulk(iovas, paddrs, leaf, op.prot) if op.kind in ("map", "dma_map")
              else pt.unmap_bulk(iovas, leaf))
        assert ok, "uniform run changed shape during compact execution"

    def _uniform(self, op: Op) -> bool:
        """Do all items of the run behave alike (one aligned page each, table agrees)?"""
        dom, size = self.dom, op.size
        if size & (size - 1) or not size & dom.pgsize_bitmap or op.stride < size:
            return False
        if (op.iova | op.stride) % size or (op.kind in ("map", "dma_map")
                                            and (op.paddr | op.paddr_stride) % size):
            return False
        last = op.iova + (op.count - 1) * op.stride + size
        if last > 1 << dom.pgtable.cfg.ias:
            return False
        iovas, _, leaf = self._leaves(op, 0, op.count)
        if op.kind not in ("map", "dma_map"):
            return dom.pgtable.can_unmap_bulk(iovas, leaf)
        fq = dom.fq
        if fq is not None and any(e.iova < last and op.iova < e.iova + e.size
                                  for e in fq.all_entries()):
            return False
        return dom.pgtable.can_map_bulk(iovas, leaf)


def _choice(fixed: str | None, asked: str | None, what: str, default: str) -> str:
    """The caller's fixed domain type / API, or the session's choice for open callers."""
    if fixed is None:
        return asked or default
    if asked not in (None, fixed):
        raise einval(f"this caller needs {what} {fixed!r}, not {asked!r}")
    return fixed


# ---- the op-kind table (ops.py documents each kind) ---------------------------------------

def _map(s: Session, op: Op) -> None:
    s.caller.map(s, op)


def _unmap(s: Session, op: Op) -> None:
    s.caller.unmap(s, op)


def _unmap_fast(s: Session, op: Op) -> None:
    iommu_unmap_fast(s.dom, op.iova, op.size, s.gather)


def _sync(s: Session, op: Op) -> None:
    iommu_iotlb_sync(s.dom, s.gather)


def _flush_all(s: Session, op: Op) -> None:
    iommu_flush_iotlb_all(s.dom)


def _range_add(s: Session, op: Op) -> None:
    iommu_tlb_range_add(s.dom, op.iova, op.size)


def _map_sync(s: Session, op: Op) -> None:
    iommu_map_sync(s.dom, op.iova, op.paddr, op.size, op.prot)


def _unmap_sync(s: Session, op: Op) -> None:
    iommu_unmap_sync(s.dom, op.iova, op.size)


def _map_sg(s: Session, op: Op) -> None:
    sg = [(op.paddr + i * op.paddr_stride, op.size) for i in range(op.count)]
    iommu_map_sg(s.dom, op.iova, sg, op.prot)


def _access(s: Session, op: Op) -> str:
    return s.dom.dma_access(s.iova_of(op), op.write)


def _advance(s: Session, op: Op) -> None:
    fq_advance(s.dom, op.ns)


OP_KINDS: dict[str, Callable[[Session, Op], Any]] = {
    "map": _map, "dma_map": _map, "unmap": _unmap, "dma_unmap": _unmap,
    "unmap_fast": _unmap_fast, "sync": _sync, "flush_all": _flush_all,
    "range_add": _range_add, "map_sync": _map_sync, "unmap_sync": _unmap_sync,
    "map_sg": _map_sg, "access": _access, "advance": _advance,
}
