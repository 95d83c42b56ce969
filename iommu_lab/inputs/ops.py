"""The one operation format every input uses: workloads, trace replay, CSV, the stepper.

A workload is an iterable of :class:`Op`. ``count``/``stride`` express a *run* of
``count`` operations of the same shape (op ``i`` acts on ``iova + i*stride`` and
``paddr + i*paddr_stride``), so a 16 GiB guest teardown is a handful of records
rather than four million.

Kinds:

``map``         map ``size`` bytes at ``iova`` -> ``paddr`` (the caller pattern picks
                ``iommu_map``, ``iommu_map_sync`` or the DMA API)
``unmap``       a region the user wants gone (the caller pattern picks how: ``iommu_unmap``,
                ``iommu_unmap_fast`` + batched sync, flush-all, DMA API strict or lazy)
``unmap_fast``  an explicit ``iommu_unmap_fast`` into the caller's gather
``sync``        an explicit ``iommu_iotlb_sync`` of that gather
``flush_all``   an explicit ``iommu_flush_iotlb_all``
``range_add``   an explicit ``iommu_tlb_range_add`` (the 2017 API / v4.14 callback)
``map_sync``    the 2017 wrapper ``iommu_map_sync`` (map, range_add, sync)
``unmap_sync``  the 2017 wrapper ``iommu_unmap_sync`` (unmap, range_add, sync)
``map_sg``      one ``iommu_map_sg`` call at ``iova`` whose scatterlist has ``count``
                entries of ``size`` bytes at ``paddr + i*paddr_stride`` (not a run)
``dma_map``     ``iommu_dma_map`` of the buffer at ``paddr``; with ``iova == 0`` the DMA
                layer allocates the IOVA (and the buffer is then named by its ``paddr``),
                otherwise the given IOVA is used as if the allocator had chosen it
``dma_unmap``   ``iommu_dma_unmap`` (strict or flush queue, by domain type); ``iova == 0``
                means "the IOVA this ``paddr`` was last mapped at"
``access``      the device reads (or, with ``write``, writes) ``iova`` (``iova == 0`` with
                a ``paddr``: the IOVA last handed to the device for that buffer — it may be
                unmapped by now, which is how in-flight DMA meets a stale IOTLB entry)
``advance``     ``ns`` nanoseconds of simulated time pass (CPU idle)

``at_ns`` (optional) is the simulated time at which the op may start, e.g. from a trace
timestamp; the CPU idles until then if it is early. ``cpu`` is the CPU that issues it: with
several CPUs each runs its own ops in order, all at once on the shared simulated clock
(:func:`spread_over_cpus` assigns them when a workload does not).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

from ..errors import einval
from ..prot import IOMMU_READ, IOMMU_WRITE

OP_KINDS = ("map", "unmap", "unmap_fast", "sync", "flush_all", "range_add", "map_sync",
            "unmap_sync", "map_sg", "dma_map", "dma_unmap", "access", "advance")
NEEDS_SIZE = frozenset({"map", "unmap", "unmap_fast", "range_add", "map_sync", "unmap_sync",
                        "map_sg", "dma_map", "dma_unmap"})
_VALID_EMPTY = frozenset(OP_KINDS) - NEEDS_SIZE   # kinds for which size 0 is fine


@dataclass(frozen=True, slots=True)
class Op:
    """One operation (or a run of ``count`` operations of the same shape)."""

    kind: str
    iova: int = 0
    size: int = 0
    paddr: int = 0
    prot: int = int(IOMMU_READ | IOMMU_WRITE)
    write: bool = False
    ns: int = 0
    count: int = 1
    stride: int = 0
    paddr_stride: int = 0
    at_ns: int | None = None
    cpu: int = 0

    def __post_init__(self) -> None:
        try:  # the usual case, checked at once (the checks below name what is wrong)
            if (self.kind in _VALID_EMPTY or self.kind in NEEDS_SIZE and self.size > 0) and min(
                    self.iova, self.size, self.paddr, self.ns, self.stride, self.paddr_stride,
                    self.cpu) >= 0 and self.count >= 1:
                return
        except TypeError:
            pass
        if self.kind not in OP_KINDS:
            raise einval(f"unknown op kind {self.kind!r}; expected one of {', '.join(OP_KINDS)}")
        for name in ("iova", "size", "paddr", "ns", "stride", "paddr_stride", "cpu"):
            if getattr(self, name) < 0:
                raise einval(f"op {self.kind}: {name} {getattr(self, name)} is negative")
        if self.count < 1:
            raise einval(f"op {self.kind}: count {self.count} must be at least 1")
        if self.kind in NEEDS_SIZE and self.size == 0:
            raise einval(f"op {self.kind} at iova {self.iova:#x}: size 0")

    def expand(self) -> list[Op]:
        """The run as ``count`` single ops (for the step-by-step path and small displays)."""
        return [self.item(i) for i in range(self.count)]

    def item(self, i: int) -> Op:
        """Op number ``i`` of the run, with ``count == 1``."""
        if self.count == 1:
            return self
        return Op(self.kind, self.iova + i * self.stride, self.size,
                  self.paddr + i * self.paddr_stride, self.prot, self.write, self.ns, 1, 0, 0,
                  self.at_ns if i == 0 else None, self.cpu)

    @property
    def total_bytes(self) -> int:
        """Bytes covered by the whole run."""
        return self.size * self.count


OP_FIELDS = tuple(f.name for f in fields(Op))


def spread_over_cpus(ops: Iterable[Op], cpus: int) -> list[Op]:
    """The same work issued by ``cpus`` CPUs at once: each run is cut into ``cpus``
    contiguous slices (CPU ``k`` takes slice ``k``, so a region's map and its unmap land on
    the same CPU); a single op goes to the CPU its buffer hashes to (its IOVA page, or its
    ``paddr`` page when the DMA layer picks the IOVA). Time advances go to CPU 0."""
    out: list[Op] = []
    for op in ops:
        if op.kind == "advance" or cpus == 1:
            out.append(replace(op, cpu=0))
        elif op.count == 1 or op.kind == "map_sg":
            key = op.iova or op.paddr
            out.append(replace(op, cpu=(key >> 12) % cpus))
        else:
            out += _slices(op, cpus)
    return out


def _slices(op: Op, cpus: int) -> list[Op]:
    base, extra = divmod(op.count, cpus)
    out, first = [], 0
    for k in range(cpus):
        n = base + (k < extra)
        if n:
            out.append(replace(op, iova=op.iova + first * op.stride,
                               paddr=op.paddr + first * op.paddr_stride, count=n,
                               at_ns=op.at_ns if first == 0 else None, cpu=k))
        first += n
    return out
