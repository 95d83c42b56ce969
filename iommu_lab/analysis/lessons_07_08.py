"""Measurements lessons 07 (strict vs lazy: the flush queue and the stale window) and 08 (the
strategy shoot-out) make, as plain rows; ``iommu_lab.views.lazy`` and ``views.shootout``
draw them, and the exercises of 07/08 reuse them for their answers.

Lesson 07 follows the DMA API's flush queue (drivers/iommu/iova.c v4.14–v5.16,
dma-iommu.c from v5.17; kernel-api-history §5.2): an unmapped IOVA waits in its CPU's ring
(``IOVA_FQ_SIZE`` 256 entries, 255 usable) until a flush-all — the ring is full, or the
10 ms timer (``IOVA_FQ_TIMEOUT``) fires — and its IOTLB entry may serve the device until
then. Published figures are in :data:`MEASURED_LAZY` (hardware-invalidation.md §7).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..core.dma_iommu import fq_advance, fq_check_timer, iommu_dma_map, iommu_dma_unmap
from ..core.domain import IommuDomain
from ..core.iommu import iommu_map, iommu_unmap
from ..drivers.registry import iommu_domain_alloc
from ..inputs.ops import Op
from ..inputs.workloads import VICTIM_IOVA, late_writes, multiqueue_dma
from ..prot import IOMMU_READ, IOMMU_WRITE
from ..units import SZ_4K
from .compare import compare, with_cpus
from .session import Session

RW = int(IOMMU_READ | IOMMU_WRITE)
MAP_KINDS = frozenset({"map", "dma_map", "map_sg", "map_sync"})
UNMAP_KINDS = frozenset({"unmap", "dma_unmap", "unmap_fast", "unmap_sync"})
UNMAP_EVENTS = frozenset({"iommu_unmap_fast", "iommu_unmap"})   # trace ops of an unmap call
FLUSH_EVENT = "fq_flush_iotlb"                                # dma_iommu.fq_flush_iotlb


# ---- running a workload and keeping the domain --------------------------------------------

def run(workload: Iterable[Op], strategy: str, caller: str,
        params: dict[str, Any] | None = None) -> Session:
    """Run ``workload`` under (strategy, caller) and return the session, to look inside its
    domain afterwards (``session.dom``: trace, flush queue, counters)."""
    ops = list(workload)
    session = Session(strategy, caller, with_cpus(ops, params))   # as many CPUs as the ops name
    session.run(ops)
    return session


def _one_cpu_trace(dom: IommuDomain) -> list[Any]:
    if dom.cpus.n != 1:
        raise ValueError(f"this measurement follows one CPU's trace; the domain has "
                         f"{dom.cpus.n} CPUs (measure several CPUs with probes instead)")
    if dom.trace.dropped:
        raise ValueError(f"the trace dropped {dom.trace.dropped:,} records (trace_limit); "
                         "use a smaller workload")
    return list(dom.trace.events)


# ---- the stale window -------------------------------------------------------------------------

def stale_windows(dom: IommuDomain) -> list[dict[str, Any]]:
    """For every unmap call of a one-CPU run: how long the unmapped IOVA stayed
    translatable — from the call's return to the end of the flush-all that first followed
    it (``fq_flush_iotlb``), or 0 on a strict domain (invalidated before the return).

    That is the exposure if the device had the translation cached: the **stale window**.
    ``flush`` numbers the covering flush (1 = the first of the run); None if none came.
    """
    events = _one_cpu_trace(dom)
    flushes = [e.t1 for e in events if e.op == FLUSH_EVENT]
    lazy = dom.fq is not None
    rows, k = [], 0
    for e in events:
        if e.actor != "CPU" or e.op not in UNMAP_EVENTS:
            continue
        while k < len(flushes) and flushes[k] < e.t1:
            k += 1
        covered = (flushes[k] if k < len(flushes) else None) if lazy else e.t1
        rows.append({"iova": e.iova, "size": e.size, "unmapped_ns": e.t1,
                     "covered_ns": covered, "flush": (k + 1 if covered is not None else None)
                     if lazy else 0,
                     "window_ns": None if covered is None else covered - e.t1})
    return rows


def device_accesses(dom: IommuDomain, iova: int = VICTIM_IOVA) -> list[dict[str, Any]]:
    """The device's accesses to ``iova`` (from the trace): when, read or write, the result
    (``hit`` / ``walk`` / ``fault`` / ``stale``) and the time since ``iova`` was first
    unmapped (None before that). Any CPU's unmap counts: on several CPUs the trace's actors
    are "CPU 0", "CPU 1", … (``IommuDomain`` names them), on one CPU just "CPU"."""
    unmapped = next((e.t1 for e in dom.trace.events
                     if e.actor.startswith("CPU") and e.op in UNMAP_EVENTS
                     and e.iova <= iova < e.iova + e.size), None)
    return [{"t_ns": e.t0, "access": e.op, "result": e.detail,
             "after_unmap_ns": None if unmapped is None or e.t0 < unmapped else e.t0 - unmapped}
            for e in dom.trace.events if e.actor == "device" and e.iova == iova]


def unflushed_series(dom: IommuDomain) -> list[dict[str, Any]]:
    """How many unmapped IOVAs had not yet been covered by a flush-all, after every unmap
    and every flush of a one-CPU lazy run (the step line of lesson 07's queue figure)."""
    n, rows = 0, [{"t_ns": 0, "unflushed": 0, "event": "start"}]
    for e in _one_cpu_trace(dom):
        if e.actor == "CPU" and e.op in UNMAP_EVENTS:
            n += 1
            rows.append({"t_ns": e.t1, "unflushed": n, "event": "unmap"})
        elif e.op == FLUSH_EVENT:
            n = 0
            rows.append({"t_ns": e.t1, "unflushed": 0, "event": "flush-all"})
    return rows


def window_vs_gap(gaps_ns: Sequence[int], strategy: str = "smmuv3-v5.4", unmaps: int = 300,
                  params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The victim's stale window of :func:`~iommu_lab.inputs.workloads.late_writes` under
    ``dma-lazy`` on one CPU, for each gap between unmaps: which flush ends it first, the
    ring filling (255 entries after the victim's) or the 10 ms timer?"""
    rows = []
    for gap in gaps_ns:
        s = run(late_writes(unmaps, gap, probes=1), strategy, "dma-lazy", params)
        victim = next(r for r in stale_windows(s.dom) if r["iova"] == VICTIM_IOVA)
        timeout = s.dom.fq.timeout_ns
        w = victim["window_ns"]
        rows.append({"gap_ns": gap, "unmaps_per_s": round(1e9 / gap), "window_ns": w,
                     "ended_by": "10 ms timer" if w is not None and w >= timeout
                     else "ring full"})
    return rows


# ---- the IOVA is held too: what reuse before the flush would do ------------------------------

def reuse_hazard(strategy: str = "smmuv3-v5.4") -> list[dict[str, Any]]:
    """Buffer A is DMA-mapped, written by the device and unmapped; buffer B is mapped next
    and the device writes B. Where does B's data land? Three cases, one row each:

    - strict (``DMA``): A's IOVA was invalidated before it was freed; B may reuse it;
    - lazy (``DMA_FQ``), the kernel: A's IOVA waits in the flush queue, B gets another;
    - lazy, **hypothetical**: A's IOVA handed to B at once (a flush queue that held only
      the TLB entry, not the IOVA): B's DMA hits A's stale entry and lands in A's page.
    """
    page_a, page_b = 0x4000_0000, 0x8000_0000
    rows = []
    for case, dtype, early in (("strict (DMA)", "DMA", False),
                               ("lazy (DMA_FQ), as the kernel does", "DMA_FQ", False),
                               ("lazy, hypothetical: IOVA reused before the flush", "DMA_FQ",
                                True)):
        dom = iommu_domain_alloc(strategy, type=dtype)
        iova_a = iommu_dma_map(dom, page_a, SZ_4K, RW)
        dom.dma_access(iova_a, True)
        iommu_dma_unmap(dom, iova_a, SZ_4K)
        if early:
            iova_b = iova_a
            iommu_map(dom, iova_b, page_b, SZ_4K, RW)
        else:
            iova_b = iommu_dma_map(dom, page_b, SZ_4K, RW)
        result = dom.dma_access(iova_b, True)
        rows.append({"case": case, "A's IOVA": iova_a, "B's IOVA": iova_b,
                     "device writes B": result, "lands in": _landed(dom, iova_b),
                     "A's page": page_a, "B's page": page_b,
                     "flushes so far": dom.stats()["fq_flushes"]})
    return rows


def _landed(dom: IommuDomain, iova: int) -> int | None:
    """The physical page the device's last access to ``iova`` reached: the IOTLB entry
    that served it (stale or not), else what the page table maps."""
    for view in dom.iotlb_entries():
        e = view.entry
        if view.cache == "IOTLB" and not e.negative and e.iova <= iova < e.iova + e.pgsize:
            return e.paddr + (iova - e.iova)
    return dom.pgtable.iova_to_phys(iova) or None


# ---- what strict and lazy cost: modelled per phase, and measured -----------------------------

def phase_costs(workload: Iterable[Op], strategy: str, caller: str,
                params: dict[str, Any] | None = None) -> dict[str, Any]:
    """CPU time of a one-CPU run split into its map phase and its unmap phase (each
    unmap's own work plus every flush-all, also the ones the timer fires later), per call;
    ``per_io_ns`` = one map + one unmap (what one DMA buffer costs the CPU).
    """
    s = Session(strategy, caller, params)
    dom = s.dom
    if dom.cpus.n != 1:
        raise ValueError("phase_costs splits one CPU's time; use params without cpus")
    spent = {"map": 0, "unmap": 0}
    calls = {"map": 0, "unmap": 0}

    def charge(phase: str, fn: Any) -> None:
        before = dom.stats()["cpu_ns"]
        fn()
        spent[phase] += dom.stats()["cpu_ns"] - before

    for op in workload:
        if op.at_ns is not None and op.at_ns > dom.clock.now:
            charge("unmap", lambda o=op: fq_advance(dom, o.at_ns - dom.clock.now))
        charge("unmap", lambda: fq_check_timer(dom))     # a timer flush is unmap work
        phase = "map" if op.kind in MAP_KINDS else "unmap"
        calls[phase] += op.count if op.kind in MAP_KINDS | UNMAP_KINDS else 0
        charge(phase, lambda o=op: s.run_op(o))
    charge("unmap", s.finish)
    st = dom.stats()
    return {"strategy": strategy, "caller": caller, "domain_type": dom.type,
            "map_calls": calls["map"], "unmap_calls": calls["unmap"],
            "map_ns_per_call": spent["map"] / max(1, calls["map"]),
            "unmap_ns_per_call": spent["unmap"] / max(1, calls["unmap"]),
            "per_io_ns": (spent["map"] / max(1, calls["map"])
                          + spent["unmap"] / max(1, calls["unmap"])),
            "inv_cmds": st["inv_cmds"], "inv_all_cmds": st["inv_all_cmds"],
            "sync_cmds": st["sync_cmds"], "fq_flushes": st["fq_flushes"],
            "stale_hits": st["stale_hits"]}


# hardware-invalidation.md §7 (figures #1, #2, #6, #7): what lazy flushing bought, measured.
GUPTA_KIOPS = {"strict": 570, "lazy": 1930, "passthrough": 5010}
MEASURED_LAZY: tuple[dict[str, str], ...] = (
    {"figure": "strict 570 KIOPS · lazy 1.93 MIOPS · passthrough 5.01 MIOPS",
     "setup": "fio t/io_uring, one Intel Optane SSD, Linux 2025",
     "source": "Anuj Gupta, \"[RFC v2 00/11] Add dmabuf read/write via io_uring\", "
               "linux-nvme, 24 Nov 2025 (reference §7 #1)"},
    {"figure": "non-strict (lazy) arm64: +25% fio reads",
     "setup": "one NVMe SSD, arm64",
     "source": "Ubuntu SRU \"Support non-strict iommu mode on arm64\" (2018/19) (§7 #6)"},
    {"figure": "deferred flushing recovers 15–20% of the IOMMU's loss",
     "setup": "netperf UDP, small packets, VT-d, 2008",
     "source": "Mark Gross, commit \"PCI: iommu: iotlb flushing\" (2008) (§7 #7)"},
)


def measured_per_io() -> list[dict[str, Any]]:
    """Gupta 2025 as time per I/O (1 / IOPS) and the IOMMU's share of it (minus
    passthrough), the arithmetic of hardware-invalidation.md §0.2 / §7 #2 [derived]."""
    per_io = {mode: 1e6 / k for mode, k in GUPTA_KIOPS.items()}     # ns per I/O
    return [{"mode": mode, "kiops": GUPTA_KIOPS[mode], "ns_per_io": per_io[mode],
             "iommu_ns_per_io": per_io[mode] - per_io["passthrough"]}
            for mode in GUPTA_KIOPS]


def strict_vs_lazy(workload: Iterable[Op], strategies: Sequence[str],
                   callers: Sequence[str] = ("dma-strict", "dma-lazy"),
                   params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """:func:`phase_costs` for every (strategy, caller) on one workload."""
    ops = list(workload)
    return [phase_costs(ops, s, c, params) for s in strategies for c in callers]




# ---- lesson 08: the shoot-out ------------------------------------------------------------------

def shootout(workloads: Mapping[str, Iterable[Op]], strategies: Sequence[str],
             callers: Mapping[str, Sequence[str]],
             params: dict[str, Any] | None = None) -> Any:
    """``compare()`` of every workload under its own callers (``callers[name]``) and every
    strategy, in one DataFrame with a ``workload`` column first; ``cpu_per_unmap_ns`` is the
    CPU time (busy and spinning, not idle) per unmap call: comparable across callers, lazy
    ones included (``end_ns`` of a lazy run waits for the last 10 ms timer)."""
    import pandas as pd

    frames = []
    for name, work in workloads.items():
        df = compare(work, strategies, callers[name], params)
        df.insert(0, "workload", name)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["commands"] = out["inv_cmds"] + out["sync_cmds"] + out["requests"]
    out["cpu_per_unmap_ns"] = out["cpu_ns"] / out["unmap_calls"].clip(lower=1)
    return out


def _busy_until(dom: IommuDomain) -> int:
    return max([dom.clock.now] + [q.hw_free for q in dom.hw.queues])


def unmap_vs_size(strategies: Sequence[str], pages: Sequence[int] = (1, 4, 16, 64, 256, 1024),
                  costs: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """One strict ``iommu_unmap`` of ``n`` contiguous 4K pages (mapped as 4K pages: the
    physical address is not 2M-congruent), per strategy and size: the unmap phase's commands
    and its time, from the call to the hardware's last completion. The map phase is run
    first and left out."""
    rows = []
    for s in strategies:
        for n in pages:
            dom = iommu_domain_alloc(s, **({"costs": costs} if costs else {}))
            iova, size = 0x4000_0000, n * SZ_4K
            iommu_map(dom, iova, 0x8000_1000, size, RW)
            t0, before = _busy_until(dom), dom.stats()
            iommu_unmap(dom, iova, size)
            st = dom.stats()
            d = {k: st[k] - before[k] for k in ("inv_cmds", "sync_cmds", "requests",
                                                "doorbells", "mmio_reads")}
            rows.append({"strategy": s, "pages": n, **d,
                         "commands": d["inv_cmds"] + d["sync_cmds"] + d["requests"],
                         "unmap_ns": _busy_until(dom) - t0})
    return rows


def run_timed(workload: Iterable[Op], strategy: str, caller: str,
              params: dict[str, Any] | None = None) -> tuple[Session, int]:
    """Run like ``Session.run`` and also return ``api_end_ns``: when the last CPU returned
    from its last call (every op names its CPU, ``Op.cpu``). ``compare()``'s ``end_ns`` is
    later on a lazy domain: it includes idling until the flush queue's last timer fires."""
    ops = list(workload)
    session = Session(strategy, caller, with_cpus(ops, params))
    n = session.dom.cpus.n             # at least 1 + the highest Op.cpu (with_cpus)

    def stream(mine: list[Op]) -> Any:
        def go() -> None:
            for op in mine:
                session.run_op(op)
            session.caller.end_stretch(session)
        return go

    session.dom.cpus.run([stream([op for op in ops if op.cpu == k]) for k in range(n)])
    api_end = _busy_until(session.dom)
    session.finish()
    return session, api_end


def dma_scaling(strategies: Sequence[str], callers: Sequence[str] = ("dma-strict", "dma-lazy"),
                cpus: Sequence[int] = (1, 2, 4, 8), buffers: int = 256,
                params: dict[str, Any] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """:func:`~iommu_lab.inputs.workloads.multiqueue_dma` (the same ``buffers`` dealt over
    1, 2, 4, 8 CPUs) per (strategy, caller): unmaps per second until the last call returned,
    lock waits, spinning, cacheline transfers, syncs, doorbells, flush-queue flushes."""
    rows = []
    for s in strategies:
        for c in callers:
            for n in cpus:
                session, api_end = run_timed(multiqueue_dma(n, buffers, seed=seed), s, c,
                                             params)
                st = session.dom.stats()
                rows.append({"strategy": s, "caller": c, "cpus": n,
                             "domain_type": session.dom.type,
                             "unmap_calls": st["unmap_calls"], "api_end_ns": api_end,
                             "unmaps_per_s": round(st["unmap_calls"] * 1e9 / max(1, api_end)),
                             **{k: st[k] for k in ("lock_wait_ns", "spin_ns", "cacheline_ns",
                                                   "sync_cmds", "doorbells", "fq_flushes",
                                                   "cpu_ns")}})
    return rows


def winners(df: Any, by: Sequence[str], metric: str) -> dict[tuple[Any, ...], str]:
    """For each group of ``by`` columns: the strategy with the smallest ``metric`` ("tie: a,
    b" when several share it)."""
    out = {}
    for key, g in df.groupby(list(by), sort=False):
        best = g[metric].min()
        names = list(dict.fromkeys(g.loc[g[metric] == best, "strategy"]))
        out[key if isinstance(key, tuple) else (key,)] = (
            names[0] if len(names) == 1 else "tie: " + ", ".join(names))
    return out


def verdicts(df: Any, key: str, metrics: Sequence[str],
             by: Sequence[str] = ("caller",)) -> list[dict[str, Any]]:
    """A sweep over ``key``: per metric (and caller), the winner at every grid value and
    whether it **holds** (one winner throughout) or **flips** (and where first)."""
    rows = []
    for group, g in df.groupby(list(by), sort=False):
        for m in metrics:
            w = winners(g, [key], m)
            order = list(dict.fromkeys(g[key]))
            seq = [w[(v,)] for v in order]
            flip = next((v for v, a, b in zip(order[1:], seq, seq[1:]) if a != b), None)
            rows.append({**dict(zip(by, group if isinstance(group, tuple) else (group,))),
                         "metric": m, "winners": dict(zip(order, seq)),
                         "verdict": "holds" if flip is None else f"flips at {key} = {flip}"})
    return rows


def crossover(df: Any, key: str, a: str, b: str, metric: str = "end_ns") -> Any:
    """The first grid value of ``key`` (in the sweep's order) at which strategy ``a`` has a
    smaller ``metric`` than ``b`` (None if it never does)."""
    for v in dict.fromkeys(df[key]):
        g = df[df[key] == v].set_index("strategy")[metric]
        if g[a] < g[b]:
            return v
    return None


__all__ = ["MEASURED_LAZY", "crossover", "device_accesses", "dma_scaling", "measured_per_io",
           "phase_costs", "reuse_hazard", "run", "run_timed", "shootout", "stale_windows",
           "strict_vs_lazy", "unflushed_series", "unmap_vs_size", "verdicts", "window_vs_gap",
           "winners"]
