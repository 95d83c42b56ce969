"""How a teardown's unmap throughput scales with CPUs, and what device TLBs (ATS) cost.

The figures behind issue 11's closing table (``python -m iommu_lab scaling``): a guest's
memory is mapped by one CPU (VFIO maps from one thread), then ``cpus`` CPUs unmap it
concurrently, each a contiguous slice (:func:`spread_over_cpus`), one ``iommu_unmap`` per
4K page (caller ``unmap-each``). Throughput is unmaps per simulated second of the unmap
phase alone, so the map phase never dilutes it. What each CPU does to get its commands in
is each driver's own code: SMMUv3 v4.15 ``cmdq->lock``, v5.4 lock-free slot claiming
(``arm_smmu_cmdq_issue_cmdlist``), VT-d ``qi->q_lock``, AMD ``iommu->lock``
(:mod:`iommu_lab.hw.cpus`, :mod:`iommu_lab.drivers.arm_smmu_cmdq`). The costs are the
named defaults of :mod:`iommu_lab.hw.costs` (``cacheline_ns`` is an assumption).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import einval
from ..inputs.workloads import kvm_teardown
from .session import Session

SCALING_STRATEGIES = ("smmuv3-v4.15", "smmuv3-v5.4", "vtd-psi", "amd-range")
SCALING_CPUS = (1, 2, 4, 8, 16, 32, 64)
ATS_STRATEGIES = ("smmuv3-v5.4", "vtd-psi", "amd-range")   # SMMUv3 ATS arrived in v5.2


def teardown_run(strategy: str, cpus: int = 1, size: str = "1G", page_size: str = "4K",
                 params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One teardown: map ``size`` on CPU 0, then unmap it from ``cpus`` CPUs at once.

    Returns the unmap phase's figures: unmaps per simulated second, lock wait and spin
    time, queue-full stalls, commands, and the phase's simulated duration.
    """
    ops = kvm_teardown(size, page_size).ops
    maps = [op for op in ops if op.kind == "map"]
    unmaps = [op for op in ops if op.kind == "unmap"]
    session = Session(strategy, "unmap-each", {**(params or {}), "cpus": cpus})
    for op in maps:                 # one CPU maps, as VFIO does (no stream scheduler)
        session.run_op(op)
    session.finish()
    dom = session.dom
    before, t0 = dict(dom.stats()), _end(dom)
    session.run(unmaps)
    after, t1 = dom.stats(), _end(dom)
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    ns = t1 - t0
    return {"strategy": strategy, "cpus": cpus, "size": size, "ats": dom.hw.atc is not None,
            "unmaps": d["unmap_calls"], "unmap_phase_ms": ns / 1e6,
            "unmaps_per_s": round(d["unmap_calls"] * 1e9 / ns) if ns else 0,
            "lock_wait_ms": d["lock_wait_ns"] / 1e6, "spin_ms": d["spin_ns"] / 1e6,
            "cmdq_full_stalls": d["cmdq_full_stalls"], "inv_cmds": d["inv_cmds"],
            "sync_cmds": d["sync_cmds"], "atc_inv_cmds": d["atc_inv_cmds"],
            "doorbells": d["doorbells"]}


def _end(dom: Any) -> int:
    """When the CPUs and every queue of the domain are done."""
    return max([dom.clock.now] + [q.hw_free for q in dom.hw.queues])


def check_cpus(cpus: Sequence[int]) -> None:
    """EINVAL unless ``cpus`` is a non-empty list of CPU counts within 1 .. 256."""
    if not cpus or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 256
                       for n in cpus):
        raise einval(f"cpus {list(cpus)!r} must be integers within 1 .. 256")


def cpu_scaling(size: str = "1G", strategies: Sequence[str] = SCALING_STRATEGIES,
                cpus: Sequence[int] = SCALING_CPUS, executor: Any = None,
                params: dict[str, Any] | None = None) -> Any:
    """Throughput and lock wait of a ``size`` teardown against ``cpus``, per strategy: a
    DataFrame with ``speedup`` against the first ``cpus`` value of each strategy."""
    import pandas as pd

    return pd.DataFrame(list(scaling_rows(size, strategies, cpus, params, executor)))


def scaling_rows(size: str, strategies: Sequence[str], cpus: Sequence[int],
                 params: dict[str, Any] | None = None, executor: Any = None
                 ) -> Iterator[dict[str, Any]]:
    """:func:`teardown_run` per (strategy, cpus), each row as it is ready, with ``speedup``
    against the strategy's first ``cpus`` value (``executor`` runs them in parallel)."""
    check_cpus(cpus)
    jobs = [(s, n) for s in strategies for n in cpus]
    if executor is None:
        runs = (teardown_run(s, n, size, params=params) for s, n in jobs)
    else:
        runs = (f.result() for f in [executor.submit(teardown_run, s, n, size, "4K", params)
                                     for s, n in jobs])
    base: dict[str, int] = {}
    for r in runs:
        first = base.setdefault(r["strategy"], r["unmaps_per_s"])
        yield {**r, "speedup": round(r["unmaps_per_s"] / first, 2) if first else 0.0}


def ats_cost(size: str = "1G", strategies: Sequence[str] = ATS_STRATEGIES,
             cpus: int = 1, params: dict[str, Any] | None = None) -> Any:
    """The same teardown without and with a device TLB (ATS): the unmap phase's time, the
    ATC invalidations it added and the slowdown."""
    import pandas as pd

    rows = []
    for s in strategies:
        off = teardown_run(s, cpus, size, params=params)
        on = teardown_run(s, cpus, size, params={**(params or {}), "ats": True})
        rows.append({"strategy": s, "cpus": cpus, "size": size,
                     "unmap_phase_ms": off["unmap_phase_ms"],
                     "ats_unmap_phase_ms": on["unmap_phase_ms"],
                     "atc_inv_cmds": on["atc_inv_cmds"],
                     "slowdown": round(on["unmap_phase_ms"] / off["unmap_phase_ms"], 2)})
    return pd.DataFrame(rows)
