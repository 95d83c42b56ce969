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

from ..errors import einval
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_1G, SZ_2M, SZ_4K, fmt_size, parse_size
from .ops import Op

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
        """Operations once runs are expanded (a ``map_sg`` is one call)."""
        return sum(1 if op.kind == "map_sg" else op.count for op in self.ops)

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


def _mix(spec: object, what: str) -> tuple[list[int], list[float]]:
    """Sizes and weights from ``{"4K": 0.7, "2M": 0.3}`` or ``["4K", "16K"]``."""
    items = spec.items() if isinstance(spec, dict) else [(s, 1.0) for s in spec]  # type: ignore[attr-defined]
    sizes, weights = [], []
    for size, weight in items:
        n = parse_size(size, what)
        if n == 0 or float(weight) < 0:
            raise einval(f"{what} entry {size!r}: {weight!r} must be a positive size and weight")
        sizes.append(n)
        weights.append(float(weight))
    if not sizes or sum(weights) <= 0:
        raise einval(f"{what} must name at least one size with a positive weight")
    return sizes, weights


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise einval(f"{what} must be a positive integer, not {value!r}")
    return value


def nic_streaming(ring_size: int = 256, buffer_sizes: object = None, packets: int = 4096,
                  packet_rate: float = 1e6, seed: int = 0) -> Workload:
    """A NIC receive ring: map a buffer per descriptor, the device writes a packet into
    it, the driver unmaps it and maps a fresh one (``dma_map_single`` per packet)."""
    ring, count = _positive(ring_size, "ring_size"), _positive(packets, "packets")
    sizes, weights = _mix(buffer_sizes or {"2K": 0.8, "9K": 0.15, "64K": 0.05}, "buffer_sizes")
    if packet_rate <= 0:
        raise einval(f"packet_rate {packet_rate!r} must be positive (packets per second)")
    rng = random.Random(seed)
    gap = max(0, round(1e9 / packet_rate))
    pool = [GUEST_PADDR_BASE + j * 0x10000 for j in range(2 * ring)]
    slots = [(pool[j], rng.choices(sizes, weights)[0]) for j in range(ring)]
    ops = [Op("dma_map", 0, size, paddr) for paddr, size in slots]
    for k in range(count):
        s = k % ring
        paddr, size = slots[s]
        ops.append(Op("access", 0, paddr=paddr, write=True))
        ops.append(Op("dma_unmap", 0, size, paddr))
        new = (pool[(k + ring) % (2 * ring)], rng.choices(sizes, weights)[0])
        slots[s] = new
        ops.append(Op("dma_map", 0, new[1], new[0]))
        if gap:
            ops.append(Op("advance", ns=gap))
    return Workload("nic-streaming", ops,
                    {"ring_size": ring, "packets": count, "packet_rate": packet_rate,
                     "seed": seed},
                    "A NIC RX ring maps each receive buffer with the DMA API, the device writes "
                    "the packet, and the driver unmaps it before handing it up the stack: one "
                    "map and one unmap per packet, the DMA API's hottest path.")


def nvme_io(queue_depth: int = 32, io_sizes: object = None, ios: int = 2048,
            device_ns: int = 10_000, seed: int = 0) -> Workload:
    """NVMe I/O: keep ``queue_depth`` commands in flight; each maps its data buffer, the
    device transfers it, completion unmaps it."""
    qd, count = _positive(queue_depth, "queue_depth"), _positive(ios, "ios")
    sizes, weights = _mix(io_sizes or {"4K": 0.6, "16K": 0.25, "128K": 0.15}, "io_sizes")
    rng = random.Random(seed)
    inflight: list[tuple[int, int, bool]] = []
    ops: list[Op] = []
    for k in range(count + qd):
        if k < count:
            size = rng.choices(sizes, weights)[0]
            paddr = GUEST_PADDR_BASE + (k % (4 * qd)) * 0x100000
            write = rng.random() < 0.3
            ops.append(Op("dma_map", 0, size, paddr))
            inflight.append((paddr, size, write))
        if len(inflight) >= qd or k >= count:
            if not inflight:
                break
            paddr, size, write = inflight.pop(0)
            ops.append(Op("advance", ns=device_ns // qd))
            ops.append(Op("access", 0, paddr=paddr, write=not write))
            ops.append(Op("dma_unmap", 0, size, paddr))
    return Workload("nvme-io", ops, {"queue_depth": qd, "ios": count, "seed": seed},
                    "An NVMe queue maps each command's data buffer (dma_map_sg of one segment), "
                    "the controller transfers it, and the completion path unmaps it; "
                    f"{qd} commands stay in flight.")


def sg_mapping(lists: int = 64, nents: int = 32, entry_size: str | int = "4K",
               contiguity: float = 0.25, seed: int = 0) -> Workload:
    """Scatter-gather lists mapped through ``iommu_map_sg`` at consecutive IOVAs (physically
    contiguous entries coalesce into one ``iommu_map``), then unmapped whole."""
    n_lists, n = _positive(lists, "lists"), _positive(nents, "nents")
    entry = parse_size(entry_size, "entry_size")
    if entry == 0 or entry % SZ_4K:
        raise einval(f"entry_size {fmt_size(entry)} must be a positive multiple of 4K")
    rng = random.Random(seed)
    ops: list[Op] = []
    iova = 0x1000_0000
    for k in range(n_lists):
        stride = entry if rng.random() < contiguity else 2 * entry
        paddr = GUEST_PADDR_BASE + k * 2 * n * entry
        ops.append(Op("map_sg", iova, entry, paddr, count=n, paddr_stride=stride))
        ops.append(Op("access", iova + rng.randrange(n) * entry))
        ops.append(Op("unmap", iova, n * entry))
        iova += n * entry
    return Workload("sg-mapping", ops, {"lists": n_lists, "nents": n,
                                        "entry_size": fmt_size(entry), "seed": seed},
                    "Block and RDMA drivers map whole scatterlists with iommu_map_sg: since "
                    "v5.3 the core coalesces physically contiguous entries, and since v5.15 it "
                    "syncs once per list (iotlb_sync_map) instead of once per entry.")


def mixed_dma(buffers: int = 512, accesses_per_unmap: int = 4, window: int = 16,
              seed: int = 0) -> Workload:
    """Buffers are unmapped while the device keeps DMA-ing into recently used ones — the
    in-flight DMA that lazy mode lets reach freed memory (stale hits)."""
    count = _positive(buffers, "buffers")
    per, win = _positive(accesses_per_unmap, "accesses_per_unmap"), _positive(window, "window")
    rng = random.Random(seed)
    paddrs = [GUEST_PADDR_BASE + j * 0x4000 for j in range(count)]
    ops = [Op("dma_map", 0, SZ_4K, p) for p in paddrs]
    for k, p in enumerate(paddrs):
        ops.append(Op("access", 0, paddr=p, write=True))  # the buffer's own DMA
        ops.append(Op("dma_unmap", 0, SZ_4K, p))
        recent = paddrs[max(0, k - win + 1):k + 1]
        for _ in range(per):
            ops.append(Op("access", 0, paddr=rng.choice(recent), write=rng.random() < 0.5))
        ops.append(Op("advance", ns=2_000))
    return Workload("mixed-dma", ops, {"buffers": count, "accesses_per_unmap": per,
                                       "window": win, "seed": seed},
                    "A device that keeps doing DMA to buffers the driver has just unmapped "
                    "(in-flight DMA, or a malicious device as in Thunderclap): strict mode "
                    "faults them, lazy mode lets them reach freed memory until the flush.")


VICTIM_IOVA = 0x8000_0000  # late_writes' victim: below the IOVAs the top-down allocator uses


def _jittered(n: int, gap_ns: int, jitter: float, seed: int) -> list[int]:
    """``n`` start times ``gap_ns`` apart on average, each gap scaled by 1 ± ``jitter``."""
    if isinstance(gap_ns, bool) or not isinstance(gap_ns, int) or gap_ns < 1:
        raise einval(f"gap_ns must be a positive integer number of ns, not {gap_ns!r}")
    if not 0.0 <= float(jitter) < 1.0:
        raise einval(f"jitter {jitter!r} must be within 0.0 .. <1.0 (a fraction of gap_ns)")
    rng, t, out = random.Random(seed), 0, []
    for _ in range(n):
        t += round(gap_ns * (1 + float(jitter) * (2 * rng.random() - 1)))
        out.append(t)
    return out


def late_writes(unmaps: int = 300, gap_ns: int = 20_000, probes: int = 16,
                probe_every_ns: int = 1_000_000, cpus: int = 1, jitter: float = 0.0,
                seed: int = 0) -> Workload:
    """A device that keeps writing to a buffer after the driver unmapped it.

    At t = 0 the driver DMA-maps the victim (4K at :data:`VICTIM_IOVA`), the device writes
    it (the IOTLB now caches it) and CPU 0 unmaps it. Then the driver maps and unmaps other
    4K buffers, one every ``gap_ns`` (each gap scaled by 1 ± ``jitter``, seeded), dealt
    round-robin over ``cpus`` CPUs; the device never touches those. The device writes the
    victim again ``probes`` times, at (k + ½) · ``probe_every_ns``: strict invalidation
    faults every such write; lazy flushing lets them land in the freed page until a flush
    covers the unmap (CPU 0's queue fills, or 10 ms pass: ``IOVA_FQ_SIZE``,
    ``IOVA_FQ_TIMEOUT``, kernel-api-history §5.2).
    """
    n, k = _positive(unmaps, "unmaps"), _positive(probes, "probes")
    every, ncpu = _positive(probe_every_ns, "probe_every_ns"), _positive(cpus, "cpus")
    times = _jittered(n, gap_ns, jitter, seed)
    victim = GUEST_PADDR_BASE
    timed = [(0, 0, [Op("dma_map", VICTIM_IOVA, SZ_4K, victim, at_ns=0),
                     Op("access", VICTIM_IOVA, write=True),
                     Op("dma_unmap", VICTIM_IOVA, SZ_4K, victim)])]
    for i, t in enumerate(times):
        paddr, cpu = victim + (i + 1) * SZ_4K, (i + 1) % ncpu
        timed.append((t, cpu, [Op("dma_map", 0, SZ_4K, paddr, at_ns=t, cpu=cpu),
                               Op("dma_unmap", 0, SZ_4K, paddr, cpu=cpu)]))
    for j in range(k):
        t = j * every + every // 2
        timed.append((t, 0, [Op("access", VICTIM_IOVA, write=True, at_ns=t)]))
    ops = [op for _, _, group in sorted(timed, key=lambda g: g[0]) for op in group]
    return Workload("late-writes", ops,
                    {"unmaps": n, "gap_ns": gap_ns, "probes": k, "probe_every_ns": every,
                     "cpus": ncpu, "jitter": jitter, "seed": seed},
                    "A buggy or malicious device (Thunderclap, NDSS 2019) keeps writing to a "
                    "buffer after the driver unmapped it, while the driver keeps unmapping "
                    "other buffers: strict mode faults every late write, lazy mode lets them "
                    "reach freed memory until a flush-all covers the unmap.")


def multiqueue_dma(cpus: int = 4, buffers: int = 512, buffer_sizes: object = None,
                   seed: int = 0) -> Workload:
    """One I/O queue per CPU (NVMe with per-CPU submission queues, a NIC with RSS): each
    CPU DMA-maps its buffers, the device transfers them, the same CPU unmaps them. The
    ``buffers`` (sizes drawn from ``buffer_sizes``, seeded) are dealt round-robin, so the
    same work spreads over 1, 2, 4 ... CPUs; nobody idles, to measure contention."""
    n, count = _positive(cpus, "cpus"), _positive(buffers, "buffers")
    sizes, weights = _mix(buffer_sizes or {"4K": 0.7, "16K": 0.2, "64K": 0.1}, "buffer_sizes")
    if max(sizes) > 0x10_0000:
        raise einval(f"buffer_sizes: {fmt_size(max(sizes))} is more than the 1M per buffer "
                     "this workload lays out")
    rng = random.Random(seed)
    ops: list[Op] = []
    for i in range(count):
        size, paddr, cpu = rng.choices(sizes, weights)[0], GUEST_PADDR_BASE + i * 0x10_0000, i % n
        ops += [Op("dma_map", 0, size, paddr, cpu=cpu),
                Op("access", 0, paddr=paddr, write=rng.random() < 0.5, cpu=cpu),
                Op("dma_unmap", 0, size, paddr, cpu=cpu)]
    return Workload("multiqueue-dma", ops, {"cpus": n, "buffers": count, "seed": seed},
                    "Multi-queue devices give each CPU its own queue: every CPU maps, the device "
                    "transfers and the same CPU unmaps, all at once — contention on the "
                    "IOMMU's one command queue (strict) or none on the per-CPU flush queues "
                    "(lazy).")


WORKLOADS = {"kvm-teardown": kvm_teardown, "nic-streaming": nic_streaming,
             "nvme-io": nvme_io, "sg-mapping": sg_mapping, "mixed-dma": mixed_dma}


def scenario(name: str) -> Workload:
    """A bundled default scenario from ``data/scenarios.json`` (see :func:`scenarios`)."""
    table = scenarios()
    if name not in table:
        raise einval(f"unknown scenario {name!r}; known: {', '.join(table)}")
    spec = dict(table[name])
    kind = spec.pop("workload")
    spec.pop("about", None)
    return WORKLOADS[kind](**spec)


def scenarios() -> dict[str, dict[str, object]]:
    """The bundled scenario definitions (name -> workload and parameters)."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "data" / "scenarios.json"
    return json.loads(path.read_text())["scenarios"]
