"""``compare()``: one tidy DataFrame row per (strategy, caller) over a workload (DESIGN §5)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from typing import Any

from ..drivers.registry import STRATEGIES, get_strategy
from ..inputs.ops import Op
from ..stats import COUNTERS
from .callers import CALLERS, DEFAULT_CALLERS, get_caller
from .session import Session
from .stepping import ActionModel


def run_one(job: tuple[str, str], ops: Sequence[Op], params: dict[str, Any] | None = None,
            progress: bool = False) -> dict[str, Any]:
    """Run ``ops`` under one (strategy, caller); returns the row (picklable for executors)."""
    strategy, caller = job
    session = Session(strategy, caller, params)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(op.count for op in ops), desc=f"{strategy} × {caller}",
                   unit="op", leave=False)
    try:
        session.run(ops, bar)
    finally:
        if bar is not None:
            bar.close()
    return row(session)


def row(session: Session) -> dict[str, Any]:
    """The tidy row for a finished session: identity, every counter, end time, notes."""
    dom = session.dom
    st = dom.stats()
    strat = dom.strategy
    end = max([dom.clock.now] + [q.hw_free for q in dom.hw.queues])
    out: dict[str, Any] = {"strategy": strat.name, "caller": session.caller.name,
                           "hardware": strat.hardware, "kernel": strat.kernel,
                           "api": dom.api.name, "domain_type": dom.type}
    out.update({k: st.get(k, 0) for k in COUNTERS})
    out["end_ns"] = end
    out["cpus"] = dom.cpus.n
    out["iommus"] = len(dom.iommus)
    out["per_iommu"] = dom.per_iommu()
    out["unmaps_per_s"] = round(st["unmap_calls"] * 1e9 / end) if end else 0
    out["items"] = session.items
    out["compacted_items"] = session.compacted_items
    out["memo_items"] = session.memo.hits     # ops whose recorded outcome was replayed
    out["commands"] = {k[4:]: v for k, v in st.items() if k.startswith("cmd:")}
    out["notes"] = "; ".join(dom.notes)
    return out


def resolve_jobs(strategies: Sequence[str] | None,
                 callers: Sequence[str] | None) -> list[tuple[str, str]]:
    """Every (strategy, caller) pair, defaults filled in; unknown names raise EINVAL first."""
    strategies = list(STRATEGIES) if strategies is None else list(strategies)
    callers = list(DEFAULT_CALLERS) if callers is None else list(callers)
    for s in strategies:
        get_strategy(s)
    for c in callers:
        get_caller(c)
    return [(s, c) for s in strategies for c in callers]


def compare(workload: Iterable[Op], strategies: Sequence[str] | None = None,
            callers: Sequence[str] | None = None, params: dict[str, Any] | None = None,
            executor: Executor | None = None, progress: bool = False) -> Any:
    """Run ``workload`` under every (strategy, caller); one DataFrame row each.

    ``executor`` (any ``concurrent.futures.Executor``, e.g. a process pool or a Dask/Ray
    executor) runs the pairs in parallel; rows come back in the same order.
    """
    import pandas as pd

    ops = list(workload)
    params = with_cpus(ops, params)
    jobs = resolve_jobs(strategies, callers)
    if executor is None:
        rows = [run_one(j, ops, params, progress) for j in jobs]
    else:
        futures = [executor.submit(run_one, j, ops, params, False) for j in jobs]
        rows = [f.result() for f in futures]
    df = pd.DataFrame(rows)
    df.attrs["workload"] = getattr(workload, "name", "ops")
    return df




def with_cpus(ops: Sequence[Op], params: dict[str, Any] | None) -> dict[str, Any] | None:
    """A workload issued by several CPUs (``Op.cpu``) needs a domain with that many."""
    n = max((op.cpu for op in ops), default=0) + 1
    if n == 1:
        return params
    return {**(params or {}), "cpus": max(n, (params or {}).get("cpus", 1))}


class CompareModel(ActionModel):
    """The comparison dashboard without widgets: settings, ``run()``, the result.

    A bad setting (no strategy, an unknown caller, a guest size that is not a page
    multiple) sets :attr:`error` and keeps the previous settings and result.
    """

    def __init__(self, strategies: Sequence[str], callers: Sequence[str],
                 guest_mem: str = "256M", page_size: str = "4K", contiguity: float = 0.0,
                 metric: str = "inv_cmds", log: bool = True) -> None:
        super().__init__()
        self.settings: dict[str, Any] = {
            "strategies": tuple(strategies), "callers": tuple(callers),
            "guest_mem": guest_mem, "page_size": page_size, "contiguity": contiguity}
        self.metric, self.log_scale = metric, log
        self.df: Any = None
        self.description = ""

    def _state(self) -> Any:
        return dict(self.settings), self.df, self.description

    def _restore(self, state: Any) -> None:
        self.settings, self.df, self.description = state

    def run(self, **changes: Any) -> Any:
        """Run ``compare()`` on a KVM/VFIO teardown with the settings (changed by
        ``changes``: strategies, callers, guest_mem, page_size, contiguity)."""
        def go() -> Any:
            from ..inputs.workloads import kvm_teardown

            unknown = set(changes) - set(self.settings)
            if unknown:
                raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}")
            self.settings.update({k: tuple(v) if k in ("strategies", "callers") else v
                                  for k, v in changes.items()})
            st = self.settings
            if not st["strategies"] or not st["callers"]:
                raise ValueError("pick at least one strategy and one caller")
            work = kvm_teardown(st["guest_mem"], st["page_size"], st["contiguity"], seed=0)
            self.df = compare(work, st["strategies"], st["callers"])
            self.description = work.describe()
            return f"{len(self.df)} runs"
        self._act("compare", go)
        return self.df if self.error is None else None

    def set_metric(self, metric: str, log: bool | None = None) -> None:
        """Show another counter (and optionally switch the log scale) without re-running."""
        def go() -> str:
            if self.df is not None and metric not in self.df.columns:
                raise ValueError(f"no column {metric!r} in the comparison")
            self.metric = metric
            if log is not None:
                self.log_scale = bool(log)
            return metric
        self._act("metric", go)


__all__ = ["CALLERS", "DEFAULT_CALLERS", "CompareModel", "compare", "run_one"]
