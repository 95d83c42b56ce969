"""Rates of the step-by-step engine (DESIGN.md §8, issue 13 item 3), for ``python -m
iommu_lab bench``: invalidation commands per second with one TLBI + sync per unmap, device
translations per second on IOTLB hits and on misses (page walks), and the seconds and
memory a 1,000,000-event trace replay takes per (strategy, caller) pair.

Each rate drives the same path a real trace or a random workload takes — :class:`Session`
``run(ops)``, which does one op at a time, or :func:`dma_access` — with compaction off and
the trace recorder full (``trace_limit=0``), so what is timed is the engine, not its
bookkeeping.
The command rate is given twice: every op stepped through the layers (``memo`` off), and
as replays run it, with the op memo (:mod:`iommu_lab.memo`) replaying recorded outcomes.
Each rate is the best of :data:`REPEATS` runs. Wall-clock timing lives here only
(benchmarks), never in the simulator or unit tests.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .. import native
from ..core.domain import IommuDomain
from ..core.iommu import iommu_map
from ..drivers.registry import iommu_domain_alloc
from ..hw.cmdq import CmdRun
from ..hw.commands import INV, SYNC, Command
from ..inputs.ops import Op
from ..inputs.trace.bench import bench_ops
from ..inputs.trace.synth import make_synthetic_trace
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..stats import Stats
from .replay import replay
from .session import Session

COMMAND_STRATEGIES = ("smmuv3-v5.4", "vtd-psi", "amd-range")
PAGE = 0x1000
BASE = 0x100000            # first IOVA used (page aligned, clear of IOVA 0)
PADDR = 1 << 32
ENGINE = {"compact": False, "trace_limit": 0}   # step by step, nothing recorded


REPEATS = 3
"""Each rate is the best of this many runs, each on fresh state (as ``timeit`` advises: on
a shared machine a slower run measures the neighbours, not the engine)."""


REPLAY_REPEATS = 2
"""Each single-pair replay time is the best of this many (each in a fresh process); the
others are printed beside it."""


def best_of(run: Callable[[], tuple[float, int]], repeats: int = REPEATS) -> tuple[float, int]:
    """(seconds, work) of the fastest of ``repeats`` calls of ``run`` (each times itself)."""
    return min(run() for _ in range(repeats))


def bench_commands(strategy: str, n: int = 20_000, memo: bool = True) -> tuple[float, float]:
    """(commands/s, unmaps/s): ``n`` single-page ``iommu_unmap`` calls (caller
    ``unmap-each``), each one TLBI + one sync for the strategies of :data:`COMMAND_STRATEGIES`;
    ``memo`` off: every one stepped through the layers."""
    def run() -> tuple[float, int]:
        s = Session(strategy, "unmap-each", params={**ENGINE, "memo": memo})
        s.run([Op("map", BASE, PAGE, PADDR, count=n, stride=PAGE, paddr_stride=PAGE)])
        ops = [Op("unmap", BASE + i * PAGE, PAGE) for i in range(n)]
        before = s.dom.stats()
        t0 = time.perf_counter()
        s.run(ops)          # as a trace replay or a workload runs them: one op at a time
        dt = time.perf_counter() - t0
        after = s.dom.stats()
        return dt, sum(after[k] - before[k] for k in ("inv_cmds", "sync_cmds", "atc_inv_cmds"))

    dt, commands = best_of(run)
    return commands / dt, n / dt


def bench_floor(n: int = 100_000) -> float:
    """Commands/s of the bare state changes one strict single-page unmap makes on
    smmuv3-v5.4 — clear the PTE, two :class:`CmdRun` records (TLBI, CMD_SYNC), the counters,
    the clock — fused in one function, with no kernel layers, checks, gather or IOTLB.

    Not the engine: a yardstick for it. CPython cannot run the modelled unmap faster than
    this, so it bounds what any rearrangement of the layers could gain."""
    st = Stats()
    st["cmd:CMD_TLBI_NH_VA"] = st["cmd:CMD_SYNC"] = 0
    table = np.ones(512, dtype=np.uint64)
    tables = {(3, 0): table}
    runs: list[CmdRun] = []
    sync = Command("CMD_SYNC", fields=(("CS", 1),))
    prod = now = 0

    def unmap(iova: int) -> None:
        nonlocal prod, now
        tbl, idx = tables[(3, iova >> 21)], (iova >> 12) & 511
        if tbl.item(idx):
            tbl[idx] = 0
        for key, n_ in (("unmap_calls", 1), ("bytes_unmapped", PAGE), ("pages_unmapped", 1),
                        ("driver_callbacks", 1), ("inv_cmds", 1), ("cmd:CMD_TLBI_NH_VA", 1),
                        ("sync_cmds", 1), ("cmd:CMD_SYNC", 1), ("doorbells", 1)):
            st[key] += n_
        tlbi = Command("CMD_TLBI_NH_VA", 1, iova, PAGE, PAGE, (("ASID", 1), ("Leaf", 1)))
        start = now + 300
        runs.append(CmdRun(tlbi, 1, prod, 50, start, 1, kind=INV))
        runs.append(CmdRun(sync, 1, prod + 1, 200, start + 50, 1, kind=SYNC))
        prod += 2
        st["iommu_ns"] += 250
        st["spin_ns"] += 200
        st["cpu_ns"] += 510
        now = start + 260
        if len(runs) > 256:
            del runs[:128]

    def run() -> tuple[float, int]:
        t0 = time.perf_counter()
        for k in range(n):
            unmap((k & 511) << 12)
        return time.perf_counter() - t0, 2 * n

    dt, commands = best_of(run)
    return commands / dt


def _device_domain(pages: int, strategy: str) -> IommuDomain:
    dom = iommu_domain_alloc(strategy, trace_limit=0)
    iommu_map(dom, BASE, PADDR, pages * PAGE, IOMMU_READ | IOMMU_WRITE)
    return dom


def _accesses(pages: int, n: int, strategy: str, counter: str, warm: bool) -> float:
    """Device accesses per second: ``n`` of them over ``pages`` mapped pages in turn (after
    one pass to fill the IOTLB if ``warm``), every one counted in ``counter``."""
    def run() -> tuple[float, int]:
        dom = _device_domain(pages, strategy)
        for i in range(pages if warm else 0):
            dom.dma_access(BASE + i * PAGE)
        before = dom.stats()[counter]
        t0 = time.perf_counter()
        for i in range(n):
            dom.dma_access(BASE + (i % pages) * PAGE)
        dt = time.perf_counter() - t0
        assert dom.stats()[counter] - before == n, f"not every access counted in {counter}"
        return dt, n

    dt, _ = best_of(run)
    return n / dt


def bench_translations(n: int = 100_000, strategy: str = "smmuv3-v5.4") -> float:
    """Device translations per second that hit the IOTLB (64 pages, a 64-entry IOTLB)."""
    return _accesses(64, n, strategy, "iotlb_hits", warm=True)


def bench_walks(n: int = 50_000, strategy: str = "smmuv3-v5.4") -> float:
    """Device translations per second that miss the IOTLB and walk the table (4,096 pages
    touched in turn, so LRU evicts each before it comes round again)."""
    return _accesses(4096, n, strategy, "iotlb_misses", warm=False)


def peak_rss_kb() -> int:
    """This process's peak resident set in KiB: ``VmHWM`` (Linux; it starts afresh in a
    spawned process, while ``ru_maxrss`` keeps the peak of the process that spawned it),
    else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _timed_replay(path: str, strategies: list[str], callers: list[str]) -> tuple[Any, float, float]:
    """(rows, seconds, MB of peak RSS growth) of one ``replay()`` of ``path``; run in a
    fresh process (:func:`bench_replay`), so the peak is the replay's own (a parser
    process parsing ahead holds one block of ops besides)."""
    rss0 = peak_rss_kb()
    t0 = time.perf_counter()
    rows = replay(path, strategies, callers)
    dt = time.perf_counter() - t0
    return rows, dt, (peak_rss_kb() - rss0) / 1024


def replay_pair(path: str, strategy: str, caller: str) -> tuple[float, float, int, int]:
    """Replay the trace at ``path`` under one pair: (seconds, MB of peak RSS growth during
    the replay, ops run, ops the memo replayed)."""
    rows, dt, mb = _timed_replay(path, [strategy], [caller])
    ops = int(rows["map_calls"].iloc[0] + rows["unmap_calls"].iloc[0]
              + rows["dma_accesses"].iloc[0] + rows["op_errors"].iloc[0])
    return dt, mb, ops, int(rows["memo_items"].iloc[0])


SHARED = (("smmuv3-v5.4", "vtd-psi", "amd-range"), ("unmap-each",))
"""The pairs of the several-pair replay (one parse, then each pair reads the ops back):
strict ones, like the single pair timed before it, so the per-pair times compare."""


def replay_shared(path: str, strategies: tuple[str, ...],
                  callers: tuple[str, ...]) -> tuple[float, float]:
    """(seconds, MB of peak RSS growth) of one ``replay()`` of ``path`` under every pair of
    ``strategies`` x ``callers`` (the text parsed once: :class:`OpSpill`)."""
    _, dt, mb = _timed_replay(path, list(strategies), list(callers))
    return dt, mb


def bench_replay(events: int = 1_000_000, pairs: tuple[tuple[str, str], ...] = (
        ("smmuv3-v5.4", "unmap-each"), ("vtd-psi", "unmap-fast-batch"),
        ("vtd-psi", "dma-lazy"))) -> Iterator[str]:
    """A synthetic ``events``-line trace written to a file, then replayed (streamed from
    the file, parsed ahead in a second process: :mod:`~iommu_lab.inputs.trace.ahead`) per
    pair, each in its own process: seconds and peak memory growth; then under the
    :data:`SHARED` pairs at once (one parse)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-trace.txt"
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(make_synthetic_trace(events, seed=1))
        ctx = multiprocessing.get_context("spawn")
        for strategy, caller in pairs:
            runs = []
            for _ in range(REPLAY_REPEATS):
                with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                    runs.append(pool.submit(replay_pair, str(path), strategy,
                                            caller).result())
            dt, mb, ops, memo = min(runs)
            others = ", ".join(f"{r[0]:.1f}" for r in sorted(runs)[1:])
            yield (f"  {strategy} / {caller}: {events:,}-line trace ({ops:,} ops) replayed "
                   f"in {dt:.1f} s (limit 10 s; best of {len(runs)}, the other"
                   f"{'s' if len(runs) > 2 else ''}: {others} s), peak memory +{mb:.0f} MB; "
                   f"{memo / max(ops, 1):.0%} of the ops from the memo")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            dt, mb = pool.submit(replay_shared, str(path), *SHARED).result()
        n = len(SHARED[0]) * len(SHARED[1])
        yield (f"  {n} pairs ({', '.join(SHARED[0])} x {', '.join(SHARED[1])}) in one replay, "
               f"the text parsed once: {dt:.1f} s, {dt / n:.1f} s per pair, peak memory "
               f"+{mb:.0f} MB")


def interpreter() -> str:
    """Which Python runs the bench: the rates depend on its build as much as on the engine
    (Debian's python3 runs it ~20% faster than pyenv's default build on the same machine;
    the Makefile makes .venv from the former when it can)."""
    base = getattr(sys, "_base_executable", sys.executable)
    return (f"{platform.python_implementation()} {platform.python_version()} "
            f"({os.path.realpath(base)}, {platform.python_compiler()})")


def run_engine_bench(quick: bool = False) -> Iterator[str]:
    """Every engine figure, one line each (``quick``: smaller runs)."""
    n = 5_000 if quick else 20_000
    yield f"step-by-step engine (compaction off, nothing traced), on {interpreter()}:"
    yield f"  {native.summary()}"
    for strategy in COMMAND_STRATEGIES:
        step, _ = bench_commands(strategy, n, memo=False)
        cmds, unmaps = bench_commands(strategy, n)
        yield (f"  {strategy:12s} one TLBI + sync per unmap: {cmds:10,.0f} commands/s "
               f"({unmaps:,.0f} unmaps/s; target 200,000 commands/s); every op stepped "
               f"through the layers (memo off): {step:,.0f} commands/s")
    yield (f"  yardstick: the bare state changes of one such unmap fused in one function "
           f"(no layers): {bench_floor(5 * n):10,.0f} commands/s")
    yield (f"  IOTLB-hit translations: {bench_translations(5 * n):10,.0f}/s "
           "(target 500,000/s)")
    yield f"  page walks (IOTLB misses): {bench_walks(2 * n):10,.0f}/s"
    lines = 100_000 if quick else 1_000_000
    parse = bench_ops(lines)
    yield (f"  trace text -> ops: {lines:,} lines in {parse['fast']:.1f} s "
           f"(the per-line reference path: {parse['per_line']:.1f} s)")
    yield from bench_replay(lines)
