"""Speed and scale figures of DESIGN.md §8, printed by ``python -m iommu_lab bench``.

Wall-clock timing lives here only (benchmarks), never in the simulator or unit tests.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator

from ..core.iommu import iommu_map, iommu_unmap
from ..drivers.registry import STRATEGIES, iommu_domain_alloc
from ..inputs.workloads import kvm_teardown
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import fmt_size, parse_size
from .callers import DEFAULT_CALLERS
from .session import Session


def bench_pagetable(guest_mem: str) -> Iterator[str]:
    """Map then unmap a guest of 4 KiB pages through the IOMMU API; time and bytes/page."""
    w = kvm_teardown(guest_mem, "4K")
    maps = [op for op in w.ops if op.kind == "map"]
    unmaps = [op for op in w.ops if op.kind == "unmap"]
    pages = sum(op.count for op in maps)
    tracemalloc.start()
    s = Session("smmuv3-v5.4", "unmap-each")
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    for op in maps:
        s.run_op(op)
    t_map = time.perf_counter() - t0
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    t0 = time.perf_counter()
    for op in unmaps:
        s.run_op(op)
    t_unmap = time.perf_counter() - t0
    yield (f"page table: {pages:,} x 4 KiB pages ({fmt_size(parse_size(guest_mem))}): "
           f"map {t_map:.2f} s, unmap {t_unmap:.2f} s, "
           f"{held / pages:.1f} bytes per mapped page (limit 64; a PTE is 8)")


def bench_direct(guest_mem: str) -> Iterator[str]:
    """One direct ``iommu_map`` of the whole range in 4 KiB pages, then one ``iommu_unmap``."""
    size = parse_size(guest_mem)
    dom = iommu_domain_alloc("smmuv3-v5.4")
    t0 = time.perf_counter()
    iommu_map(dom, 0, 0x1000, size, IOMMU_READ | IOMMU_WRITE)
    t_map = time.perf_counter() - t0
    iommu_unmap(dom, 0, size)
    t_all = time.perf_counter() - t0
    st = dom.stats()
    yield (f"direct API, smmuv3-v5.4: iommu_map(d, 0, 0x1000, {fmt_size(size)}) + iommu_unmap: "
           f"map {t_map:.2f} s, total {t_all:.2f} s (limit 5 s); {st['driver_callbacks']:,} "
           f"driver calls, {st['inv_cmds']:,} TLBIs")


def bench_teardown(guest_mem: str) -> Iterator[str]:
    """A full kvm-teardown (map + unmap) per strategy under every caller pattern."""
    w = kvm_teardown(guest_mem, "4K")
    yield f"{guest_mem} guest teardown, 4 KiB pages, per strategy (seconds; limit 4 s each):"
    for name in STRATEGIES:
        times = []
        for caller in DEFAULT_CALLERS:
            t0 = time.perf_counter()
            Session(name, caller).run(w)
            times.append(time.perf_counter() - t0)
        yield (f"  {name:14s} slowest caller {max(times):5.2f} s   all six callers "
               f"{sum(times):5.2f} s")


def bench_step_path(n: int = 20_000) -> Iterator[str]:
    """Throughput of the step-by-step path (used where runs are not uniform)."""
    w = kvm_teardown(f"{n * 4}K", "4K", contiguity=0.5, seed=1)
    t0 = time.perf_counter()
    s = Session("smmuv3-v5.4", "unmap-fast-batch")
    s.run(w)
    dt = time.perf_counter() - t0
    yield (f"step-by-step path: {s.items:,} operations (contiguity 0.5) in {dt:.2f} s = "
           f"{s.items / dt:,.0f} ops/s")


def run_bench(quick: bool = False) -> Iterator[str]:
    """Every figure, one line each."""
    mem = "1G" if quick else "16G"
    yield from bench_pagetable(mem)
    yield from bench_direct(mem)
    yield from bench_teardown(mem)
    yield from bench_step_path()
    yield ("widget step latency and notebook run times: see `make test` output "
           "(tests/browser prints the click -> update median; nbmake times each notebook)")
