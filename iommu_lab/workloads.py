"""Seeded workload generators (layer 3, inputs). A workload is an iterable of :class:`Op`.

``kvm_teardown`` is the 2017 motivating case: a VFIO/KVM guest whose memory is mapped
chunk by chunk as VFIO pins it (one ``iommu_map`` per physically contiguous chunk,
``vfio_pin_map_dma``) and unmapped the same way at teardown (``vfio_unmap_unpin`` looks
for the largest physically contiguous chunk and unmaps it with one call) — "thousands of
unnecessary TLB flushes" (Joerg Roedel, Aug 2017).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import einval
from .ops import Op
from .prot import IOMMU_READ, IOMMU_WRITE
from .units import SZ_1G, SZ_2M, SZ_4K, fmt_size, parse_size

GUEST_PADDR_BASE = 0x10_0000_0000  # host physical memory backing the guest (64 GiB mark)
PAGE_SIZES = (SZ_4K, SZ_2M, SZ_1G)


@dataclass
class Workload:
    """A named, described list of ops; iterate it to get the ops."""

    name: str
    ops: list[Op]
    params: dict[str, object] = field(default_factory=dict)
    basis: str = ""

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    @property
    def items(self) -> int:
        """Operations once runs are expanded."""
        return sum(op.count for op in self.ops)

    def describe(self) -> str:
        """One paragraph for display: what, how big, and the real-world basis."""
        p = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (f"{self.name} ({p}): {self.items:,} operations in {len(self.ops):,} records. "
                f"{self.basis}")


def _chunk_lengths(pages: int, contiguity: float, seed: int) -> list[int]:
    """Physically contiguous chunk lengths (in backing pages) for ``pages`` pages.

    ``contiguity`` is the chance that the next backing page directly follows the previous
    one in physical memory (0: never, so every page is its own chunk; 1: one chunk).
    """
    if contiguity <= 0.0:
        return [1] * pages
    if contiguity >= 1.0:
        return [pages]
    rng = random.Random(seed)
    out, run = [], 1
    for _ in range(pages - 1):
        if rng.random() < contiguity:
            run += 1
        else:
            out.append(run)
            run = 1
    out.append(run)
    return out


def _runs(lengths: list[int]) -> Iterator[tuple[int, int, int]]:
    """(first chunk index, chunk length, how many consecutive chunks of that length)."""
    i = 0
    while i < len(lengths):
        j = i
        while j < len(lengths) and lengths[j] == lengths[i]:
            j += 1
        yield i, lengths[i], j - i
        i = j


def kvm_teardown(guest_mem: int | str = "16G", page_size: int | str = "4K",
                 contiguity: float = 0.0, seed: int = 0, iova_base: int = 0,
                 map_phase: bool = True) -> Workload:
    """Map a guest's memory chunk by chunk, then tear it down chunk by chunk.

    ``page_size`` is the backing page size (4K, 2M hugetlbfs, 1G); ``contiguity`` the
    chance that consecutive backing pages are physically adjacent (seeded). Chunks are
    separated by a one-page physical gap, so adjacent chunks never merge.
    """
    mem = parse_size(guest_mem, "guest_mem")
    page = parse_size(page_size, "page_size")
    if page not in PAGE_SIZES:
        raise einval(f"page_size {fmt_size(page)} must be 4K, 2M or 1G")
    if mem == 0 or mem % page:
        raise einval(f"guest_mem {fmt_size(mem)} must be a positive multiple of {fmt_size(page)}")
    if not 0.0 <= float(contiguity) <= 1.0:
        raise einval(f"contiguity {contiguity!r} must be within 0.0 .. 1.0")
    lengths = _chunk_lengths(mem // page, float(contiguity), seed)
    maps, unmaps = [], []
    iova, paddr = iova_base, GUEST_PADDR_BASE
    prot = int(IOMMU_READ | IOMMU_WRITE)
    for _, length, n in _runs(lengths):
        size = length * page
        maps.append(Op("map", iova, size, paddr, prot, count=n, stride=size,
                       paddr_stride=size + page))
        unmaps.append(Op("unmap", iova, size, count=n, stride=size))
        iova += n * size
        paddr += n * (size + page)
    params = {"guest_mem": fmt_size(mem), "page_size": fmt_size(page),
              "contiguity": contiguity, "seed": seed}
    basis = ("VFIO type1 maps each physically contiguous chunk of pinned guest memory with "
             "one iommu_map (vfio_pin_map_dma) and unmaps it the same way at teardown "
             "(vfio_unmap_unpin); the caller pattern decides how TLB flushes are batched.")
    return Workload("kvm-teardown", (maps if map_phase else []) + unmaps, params, basis)


WORKLOADS = {"kvm-teardown": kvm_teardown}
