"""The DMA API on DMA / DMA_FQ domains (drivers/iommu/dma-iommu.c, iova.c).

- IOVA allocation (``alloc_iova_fast``): size rounded up to a power of two and aligned to
  it, top-down below 4 GiB first (the "SAC address" preference), with per-size caches that
  hand back the most recently freed IOVA first — which is why reuse must wait for a flush.
- Strict (DMA): ``iommu_unmap_fast`` + ``iommu_iotlb_sync``, then the IOVA is free.
- Lazy (DMA_FQ): ``gather.queued`` is set so drivers/io-pgtable skip leaf invalidation;
  the IOVA goes on the per-CPU flush queue (``IOVA_FQ_SIZE`` 256 entries, ring capacity
  255, ``IOVA_FQ_TIMEOUT`` 10 ms). ``queue_iova`` frees entries whose counter is below
  ``fq_flush_finish_cnt``, flushes when full; a timer flushes 10 ms after arming. An IOVA is
  reused only after a flush that *started after* it was queued (kernel-api-history §5.2).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

from ..compact import Shift
from ..errors import ENOSPC, IommuError, einval
from ..plain import field_repr
from ..units import fmt_size
from .domain import IommuDomain
from .gather import IommuIotlbGather
from .iommu import check_int, iommu_map, iommu_unmap_fast, iotlb_sync_gather

_tuple_new = tuple.__new__

IOVA_FQ_SIZE = 256
IOVA_FQ_TIMEOUT_MS = 10
FQ_CHUNK_SHIFT = 21     # FlushQueue.index: queued entries by 2 MiB chunk


def _cpu0() -> int:
    """The running CPU of a flush queue told nothing else: CPU 0."""
    return 0


def _chunks(iova: int, size: int) -> range:
    """The index chunks ``[iova, iova + size)`` covers."""
    return range(iova >> FQ_CHUNK_SHIFT, ((iova + size - 1) >> FQ_CHUNK_SHIFT) + 1)


@dataclass
class IovaDomain:
    """A small ``struct iova_domain``: top-down allocation plus per-size free caches."""

    limit: int = 1 << 32
    floor: int = 1 << 12
    next_top: int = 1 << 32
    cache: dict[int, list[int]] = field(default_factory=dict)
    allocated: dict[int, int] = field(default_factory=dict)

    def alloc(self, size: int) -> int:
        """An IOVA for ``size`` bytes (power-of-two rounded and aligned)."""
        size = 1 << (size - 1).bit_length()
        free = self.cache.get(size)
        if free:
            iova = free.pop()
        else:
            iova = (self.next_top - size) & ~(size - 1)
            if iova < self.floor:
                raise IommuError(ENOSPC, f"IOVA space below {self.limit:#x} exhausted "
                                 f"allocating {fmt_size(size)}")
            self.next_top = iova
        self.allocated[iova] = size
        return iova

    def release(self, iova: int) -> None:
        """Return ``iova`` to its size's cache if this allocator handed it out (most
        recently freed is handed out first); workload-chosen IOVAs are not tracked."""
        size = self.allocated.pop(iova, None)
        if size is not None:
            self.cache.setdefault(size, []).append(iova)


class FqEntry(NamedTuple):
    """One flush-queue slot: IOVA, size, ``counter`` = ``fq_flush_start_cnt`` at enqueue.
    A value (a named tuple): the ring and :attr:`FlushQueue.index` share it."""

    iova: int
    size: int
    counter: int
    queued_ns: int


class FqMark(NamedTuple):
    """The flush queue before a memoised op (:meth:`FlushQueue.memo_mark`)."""

    n: int
    head: FqEntry | None
    started: int
    finished: int
    deadline: int | None


class FqDelta(NamedTuple):
    """What one memoised op did to the flush queue (:meth:`FlushQueue.memo_delta`): the
    entries it queued (IOVA relative to the op's anchor, size, counter relative to the flush
    count, time relative to the op's start) and the timer it armed (relative to the start)."""

    queued: tuple[tuple[int, int, int, int], ...]
    deadline: int | None


class FlushQueue:
    """The flush queue of one domain: a ring per CPU (``struct iova_fq``), with the
    domain-wide flush counters and the one timer (``iova_domain``, v5.10 iova.c).

    A plain class (its fields in :meth:`__init__`), so that the compiled build can make it
    an extension type (``dma_iommu.pxd``): the memo reads and queues on it every lazy op.
    """

    def __init__(self, size: int = IOVA_FQ_SIZE,
                 timeout_ns: int = IOVA_FQ_TIMEOUT_MS * 1_000_000, ncpus: int = 1,
                 fq_flush_start_cnt: int = 0, fq_flush_finish_cnt: int = 0,
                 timer_deadline: int | None = None,
                 current: Callable[[], int] = _cpu0,
                 rings: list[deque[FqEntry]] | None = None) -> None:
        self.size = size
        self.timeout_ns = timeout_ns
        self.ncpus = ncpus
        self.fq_flush_start_cnt = fq_flush_start_cnt
        self.fq_flush_finish_cnt = fq_flush_finish_cnt
        self.timer_deadline = timer_deadline
        self.current = current        # the running CPU's number
        self.rings = rings or [deque() for _ in range(ncpus)]
        # every queued entry by the 2 MiB chunks it covers, oldest first: a map with an
        # IOVA of its own asks whether a queued one overlaps it (overlaps), and the memo
        # asks per op
        self.index: dict[int, deque[FqEntry]] = {}
        self._reindex()

    def __repr__(self) -> str:
        return field_repr(self, ("size", "timeout_ns", "ncpus", "fq_flush_start_cnt",
                                 "fq_flush_finish_cnt", "timer_deadline", "rings"))

    def _reindex(self) -> None:
        """Build :attr:`index` afresh from the rings."""
        self.index = {}
        for ring in self.rings:
            for e in ring:
                self._add(e)

    def _add(self, entry: FqEntry) -> None:
        index = self.index
        for c in _chunks(entry[0], entry[1]):
            chunk = index.get(c)
            if chunk is None:
                index[c] = deque((entry,))
            else:
                chunk.append(entry)

    def push(self, ring: deque[FqEntry], entry: FqEntry) -> None:
        """Queue ``entry`` on ``ring`` (one CPU's)."""
        ring.append(entry)
        self._add(entry)

    def pop(self, ring: deque[FqEntry]) -> FqEntry:
        """Take the oldest entry off ``ring``."""
        entry = ring.popleft()
        index = self.index
        for c in _chunks(entry[0], entry[1]):
            chunk = index[c]
            if chunk[0] is entry:       # one CPU: the oldest in every chunk it covers
                chunk.popleft()
            else:
                chunk.remove(entry)
            if not chunk:
                del index[c]
        return entry

    @property
    def entries(self) -> deque[FqEntry]:
        """The running CPU's ring (``raw_cpu_ptr(iovad->fq)``)."""
        return self.rings[self.current()]

    def all_entries(self) -> list[FqEntry]:
        """Every CPU's queued entries."""
        return [e for ring in self.rings for e in ring]

    @property
    def full(self) -> bool:
        """``fq_full``: ``(tail + 1) % size == head`` -> capacity is ``size - 1``."""
        return len(self.entries) >= self.size - 1

    # ---- compact runs (iommu_lab.compact; one CPU) -------------------------------------
    def signature(self, next_iova: int) -> Hashable:
        """Queued IOVAs relative to the next item, flushes in flight, timer armed or not."""
        start = self.fq_flush_start_cnt
        return (tuple((e.iova - next_iova, e.size, start - e.counter)
                      for e in self.all_entries()),
                start - self.fq_flush_finish_cnt, self.timer_deadline is not None)

    # ---- the op memo (iommu_lab.memo; one CPU) ----------------------------------------
    def memo_key(self, iova: int, size: int) -> Hashable | None:
        """What a DMA-API op on ``[iova, iova + size)`` depends on here, if nothing waits to
        be freed or is being flushed: would ``queue_iova`` find the ring full (and flush),
        is the timer armed, does a queued IOVA overlap the range (a map waits for a flush:
        ``_wait_for_reuse``; ``size`` 0: an op that maps nothing, which does not look).
        Where entries are queued does not matter to an op, only that they are: this is what
        lets lazy unmaps repeat. (The timer cannot fire inside an op: the DMA API checks it
        when the call begins, as the session does before.)"""
        if len(self.rings) != 1:
            return None
        ring = self.rings[0]
        if self.fq_flush_start_cnt != self.fq_flush_finish_cnt or (
                ring and ring[0].counter < self.fq_flush_finish_cnt):
            return None
        return (len(ring) >= self.size - 1, self.timer_deadline is not None,
                bool(size) and self.overlaps(iova, size))

    def overlaps(self, iova: int, size: int) -> bool:
        """Does an IOVA still queued on any CPU overlap ``[iova, iova + size)``?"""
        end = iova + size
        index = self.index
        if not index:
            return False
        for c in _chunks(iova, size):
            chunk = index.get(c)
            if chunk is not None:
                for e in chunk:
                    if e[0] < end and iova < e[0] + e[1]:
                        return True
        return False

    def memo_mark(self) -> FqMark:
        """Entries queued (and the first), flushes started and finished, the timer."""
        ring = self.entries
        return FqMark(len(ring), ring[0] if ring else None, self.fq_flush_start_cnt,
                      self.fq_flush_finish_cnt, self.timer_deadline)

    def memo_delta(self, mark: FqMark, t0: int, anchor: int) -> FqDelta | None:
        """What the op that began at ``t0`` (at ``anchor``) changed: entries it queued and
        a timer it armed; None if it flushed, freed entries or moved an armed timer."""
        ring, deadline = self.entries, self.timer_deadline
        if ((mark.started, mark.finished) != (self.fq_flush_start_cnt, self.fq_flush_finish_cnt)
                or len(ring) < mark.n or (mark.n and ring[0] is not mark.head)
                or (mark.deadline is not None and deadline != mark.deadline)):
            return None
        queued = tuple((e.iova - anchor, e.size, e.counter - mark.started, e.queued_ns - t0)
                       for e in islice(ring, mark.n, None))
        armed = deadline - t0 if mark.deadline is None and deadline is not None else None
        return FqDelta(queued, armed)

    def memo_apply(self, delta: FqDelta, t0: int, anchor: int) -> None:
        """Queue what ``delta`` queued, for an op at ``anchor`` that began at ``t0``."""
        ring, started = self.entries, self.fq_flush_start_cnt
        for diova, size, dcounter, dns in delta.queued:
            # a bare tuple: the named tuple's generated __new__ is an interpreted frame
            self.push(ring, _tuple_new(FqEntry, (anchor + diova, size, started + dcounter,
                                                 t0 + dns)))
        if delta.deadline is not None:
            self.timer_deadline = t0 + delta.deadline

    def mark(self) -> tuple[int, int | None]:
        """Flushes started so far and the timer deadline."""
        return self.fq_flush_start_cnt, self.timer_deadline

    def limit(self, mark: tuple[int, int | None], dt: int, now: int) -> int:
        """Never extrapolate across a timer expiry (``fq_flush_timeout``)."""
        if self.timer_deadline is None:
            return 1 << 62
        if self.timer_deadline != mark[1] or dt <= 0:
            return 0  # the timer fired (and was re-armed) inside the period
        return (self.timer_deadline - now) // dt

    def repeat(self, mark: tuple[int, int | None], reps: int, shift: Shift) -> None:
        """Queued entries move on with the run; flush counters advance by whole flushes."""
        dfq = (self.fq_flush_start_cnt - mark[0]) * reps
        for ring in self.rings:
            moved = [FqEntry(e.iova + shift.diova, e.size, e.counter + dfq, e.queued_ns + shift.dt)
                     for e in ring]
            ring.clear()
            ring.extend(moved)
        self._reindex()
        self.fq_flush_start_cnt += dfq
        self.fq_flush_finish_cnt += dfq


@dataclass(frozen=True)
class DmaOps:
    """The DMA layer of a DMA/DMA_FQ domain, chosen once at ``iommu_domain_alloc``.

    ``unmap(domain, iova, size, gather)`` removes a buffer's pages and, unless
    ``gather.queued``, invalidates them before returning; ``flush_cb(domain)`` is what a
    flush-queue flush calls (``iovad->flush_cb``). The generic one is dma-iommu's; a driver
    may bring its own (VT-d up to v5.10: ``intel_dma_ops``).
    """

    name: str
    unmap: Callable[[IommuDomain, int, int, IommuIotlbGather], int]
    flush_cb: Callable[[IommuDomain], None]
    source: str


def iommu_dma_unmap_pages(domain: IommuDomain, iova: int, size: int,
                          gather: IommuIotlbGather) -> int:
    """``__iommu_dma_unmap``: ``iommu_unmap_fast``; ``iommu_iotlb_sync`` unless queued."""
    unmapped = iommu_unmap_fast(domain, iova, size, gather)
    if not gather.queued:
        iotlb_sync_gather(domain, gather)
    return unmapped


def iommu_dma_flush_iotlb_all(domain: IommuDomain) -> None:
    """``iommu_dma_flush_iotlb_all``: the domain's ``->flush_iotlb_all`` (if any)."""
    if domain.ops.flush_iotlb_all is not None:
        domain.ops.flush_iotlb_all(domain)


IOMMU_DMA_OPS = DmaOps("iommu-dma", iommu_dma_unmap_pages, iommu_dma_flush_iotlb_all,
                       "drivers/iommu/dma-iommu.c (__iommu_dma_unmap, flush queue callback)")


def iommu_dma_map(domain: IommuDomain, paddr: int, size: int, prot: int,
                  iova: int | None = None) -> int:
    """``iommu_dma_map_page``: allocate an IOVA (unless given) and map; returns the IOVA."""
    _require_dma(domain)
    fq_check_timer(domain)
    paddr, size = check_int(paddr, "paddr"), check_int(size, "size")
    if size == 0:
        raise einval("size 0: nothing to map")
    g = domain.pgtable.granule
    offset = paddr & (g - 1)
    span = (offset + size + g - 1) & ~(g - 1)
    if iova is None:
        base = domain.iovad.alloc(span)
        try:
            iommu_map(domain, base, paddr - offset, span, prot)
        except IommuError:
            domain.iovad.release(base)
            raise
        return base + offset
    iova = check_int(iova, "iova")  # chosen by the workload, not tracked by the allocator
    _wait_for_reuse(domain, iova, span)
    iommu_map(domain, iova - offset, paddr - offset, span, prot)
    return iova


def iommu_dma_unmap(domain: IommuDomain, iova: int, size: int) -> None:
    """``iommu_dma_unmap_page``: strict invalidation on DMA, the flush queue on DMA_FQ."""
    _require_dma(domain)
    fq_check_timer(domain)
    iova, size = check_int(iova, "iova"), check_int(size, "size")
    g = domain.pgtable.granule
    base = iova & ~(g - 1)
    span = (iova - base + size + g - 1) & ~(g - 1)
    _require_mapped(domain, base, span)
    gather = IommuIotlbGather()
    gather.queued = domain.fq is not None
    domain.dma_ops.unmap(domain, base, span, gather)
    if gather.queued:
        queue_iova(domain, base, span)
    else:
        domain.iovad.release(base)


def _require_mapped(domain: IommuDomain, iova: int, size: int) -> None:
    """EINVAL (nothing changed) unless [iova, iova+size) is mapped throughout."""
    at = iova
    for l_iova, l_size, _, _ in domain.pgtable.leaves(iova, iova + size):
        if l_iova > at:
            break
        at = l_iova + l_size
    if at < iova + size:
        raise einval(f"iommu_dma_unmap: {fmt_size(size)} at {iova:#x} was not mapped "
                     f"throughout (hole at {at:#x}); nothing was unmapped")


def _require_dma(domain: IommuDomain) -> None:
    if not domain.dtype.dma_api:
        raise einval(f"the DMA API needs a DMA or DMA_FQ domain, this one is {domain.type}")


def queue_iova(domain: IommuDomain, iova: int, size: int) -> None:
    """``queue_iova``: free what finished flushes cover; flush if still full; enqueue."""
    fq: FlushQueue = domain.fq
    domain.clock.busy(domain.costs.fq_enqueue_ns)
    fq_ring_free(domain)
    if fq.full:
        fq_flush_iotlb(domain)
        fq_ring_free(domain)
    fq.push(fq.entries, FqEntry(iova, size, fq.fq_flush_start_cnt, domain.clock.now))
    domain.stats["fq_queued"] += 1
    if fq.timer_deadline is None:
        fq.timer_deadline = domain.clock.now + fq.timeout_ns


def fq_ring_free(domain: IommuDomain, ring: deque[FqEntry] | None = None) -> None:
    """``fq_ring_free``: release entries whose flush has finished (counter < finish_cnt);
    the running CPU's ring unless told otherwise."""
    fq: FlushQueue = domain.fq
    ring = fq.entries if ring is None else ring
    while ring and ring[0].counter < fq.fq_flush_finish_cnt:
        domain.iovad.release(fq.pop(ring).iova)


def fq_flush_iotlb(domain: IommuDomain) -> None:
    """``fq_flush_iotlb``: start_cnt++, ``flush_iotlb_all``, finish_cnt++."""
    fq: FlushQueue = domain.fq
    fq.fq_flush_start_cnt += 1
    domain.stats["fq_flushes"] += 1
    domain.dma_ops.flush_cb(domain)
    fq.fq_flush_finish_cnt += 1
    domain.trace.add(domain.clock.now, domain.clock.now, domain.cpu_lane(), "fq_flush_iotlb")


def fq_check_timer(domain: IommuDomain) -> None:
    """Run ``fq_flush_timeout`` if the 10 ms timer has expired by now."""
    fq = domain.fq
    if fq is not None and fq.timer_deadline is not None and fq.timer_deadline <= domain.clock.now:
        fq_flush_timeout(domain)


def fq_flush_timeout(domain: IommuDomain) -> None:
    """Timer: one flush-all for the domain, then free every CPU's finished entries."""
    fq: FlushQueue = domain.fq
    fq.timer_deadline = None
    domain.stats["fq_timer_flushes"] += 1
    fq_flush_iotlb(domain)
    for ring in fq.rings:
        fq_ring_free(domain, ring)


def fq_advance(domain: IommuDomain, ns: int) -> None:
    """Let ``ns`` of idle time pass, firing the flush-queue timer on time."""
    end = domain.clock.now + ns
    fq = domain.fq
    while fq is not None and fq.timer_deadline is not None and fq.timer_deadline <= end:
        domain.clock.idle_until(fq.timer_deadline)
        fq_flush_timeout(domain)
    domain.clock.idle_until(end)


def _wait_for_reuse(domain: IommuDomain, iova: int, size: int) -> None:
    """An explicit IOVA still in the flush queue: flush first (the allocator could not
    hand it out before then)."""
    fq = domain.fq
    if fq is None:
        return
    if fq.overlaps(iova, size):
        fq_flush_iotlb(domain)
        for ring in fq.rings:
            fq_ring_free(domain, ring)
