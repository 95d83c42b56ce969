"""Speed and scale figures of DESIGN.md §8, printed by ``python -m iommu_lab bench``.

Wall-clock timing lives here only (benchmarks), never in the simulator or unit tests.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

from ..core.iommu import iommu_map, iommu_unmap
from ..drivers.registry import STRATEGIES, iommu_domain_alloc
from ..inputs.workloads import kvm_teardown
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import fmt_size, parse_size
from .bench_engine import run_engine_bench
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


STEPPER_CYCLE = ("map", "unmap_fast", "consume", "sync")   # the actions bench_stepper repeats


def step_cycle(model: Any) -> list[float]:
    """One map / unmap_fast / consume / sync cycle on a stepper (a StepperModel, or the
    widget, which has the same methods); returns the seconds each action took."""
    out = []
    for name in STEPPER_CYCLE:
        args = {"map": ("0x0", "64K"), "unmap_fast": ("0x0", "64K"), "consume": (1,)}
        t0 = time.perf_counter()
        getattr(model, name)(*args.get(name, ()))
        out.append(time.perf_counter() - t0)
        if model.error:
            raise RuntimeError(f"stepper bench: {model.error}")
    return out


def stepper_cost(model: Any, cycles: int = 700) -> tuple[float, float]:
    """ms per action over the first 400 actions and after 2,400 (a long class session)."""
    times = [t for _ in range(cycles) for t in step_cycle(model)]
    late = times[2400:] or times[-400:]
    return 1000 * sum(times[:400]) / 400, 1000 * sum(late) / len(late)


def bench_stepper(cycles: int = 700) -> Iterator[str]:
    """The stepper's model per action, early and late in a session (issue 13: an action
    costs what it changes, not the session's history). The widget with every view:
    ``python -m iommu_lab.ui.bench``."""
    from .stepping import StepperModel

    early, late = stepper_cost(StepperModel("smmuv3-v4.15", cmdq_entries=32), cycles)
    yield (f"stepper model (map/unmap_fast/consume/sync x {cycles}): {early:.2f} ms per action "
           f"over the first 400, {late:.2f} ms after 2,400")


def bench_sweep(points: int = 18, mem: str = "1M") -> Iterator[str]:
    """A sweep of every strategy x caller over a cost grid, serial and on a dask
    LocalCluster of one worker process per core (rows checked identical)."""
    from .callers import DEFAULT_CALLERS
    from .sweep import sweep

    grid = [{"hw_tlbi_ns": t, "hw_sync_ns": s, "iotlb_entries": e}
            for t in (25, 50, 100) for s in (250, 500, 1000) for e in (16, 64)][:points]
    w = kvm_teardown(mem, "4K")
    runs = len(grid) * len(STRATEGIES) * len(DEFAULT_CALLERS)
    t0 = time.perf_counter()
    serial = sweep(w, None, None, grid, progress=False)
    t_serial = time.perf_counter() - t0
    try:
        import distributed
    except ImportError:
        yield (f"sweep of {runs:,} runs ({mem} teardown): serial {t_serial:.1f} s; "
               "dask not installed (pip install -e '.[cluster]') for the cluster figure")
        return
    n = os.cpu_count() or 1
    with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        t0 = time.perf_counter()
        client.run(lambda: __import__("iommu_lab.analysis.sweep"))   # workers warm
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        on_cluster = sweep(w, None, None, grid, client.get_executor(), progress=False)
        t_cluster = time.perf_counter() - t0
    same = "identical rows" if on_cluster.equals(serial) else "ROWS DIFFER"
    yield (f"sweep of {runs:,} runs ({len(STRATEGIES)} strategies x {len(DEFAULT_CALLERS)} "
           f"callers x {len(grid)} cost points, {mem} teardown): serial {t_serial:.1f} s, "
           f"LocalCluster of {n} worker processes {t_cluster:.1f} s (x{t_serial / t_cluster:.2f};"
           f" workers imported iommu_lab in {t_warm:.1f} s before), {same}")


def run_bench(quick: bool = False) -> Iterator[str]:
    """Every figure, one line each."""
    mem = "1G" if quick else "16G"
    yield from bench_pagetable(mem)
    yield from bench_direct(mem)
    yield from bench_teardown(mem)
    yield from bench_step_path()
    yield from run_engine_bench(quick)
    yield from bench_stepper(200 if quick else 700)
    yield from bench_sweep(2 if quick else 18)
    yield ("widget step latency and notebook run times: see `make test` output "
           "(tests/browser prints the click -> update median; nbmake times each notebook); "
           "the stepper widget headless: python -m iommu_lab.ui.bench")


if __name__ == "__main__":  # python -m iommu_lab.analysis.bench [stepper|sweep|engine] [--quick]
    import sys

    quick = "--quick" in sys.argv
    parts = {"stepper": lambda: bench_stepper(200 if quick else 700),
             "sweep": lambda: bench_sweep(2 if quick else 18),
             "engine": lambda: run_engine_bench(quick)}
    chosen = [a for a in sys.argv[1:] if a in parts] or list(parts)
    for part in chosen:
        for line in parts[part]():
            print(line, flush=True)  # noqa: T201 - the benchmark's output
