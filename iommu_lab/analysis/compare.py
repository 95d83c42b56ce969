"""``compare()``: one tidy DataFrame row per (strategy, caller) over a workload (DESIGN §5)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from typing import Any

from ..drivers.registry import STRATEGIES, get_strategy
from ..inputs.ops import Op
from ..stats import COUNTERS
from .callers import CALLERS, get_caller
from .session import Session

DEFAULT_CALLERS = ("unmap-each", "unmap-fast-batch", "unmap-then-flush-all",
                   "rfc-2017-wrappers", "dma-strict", "dma-lazy")


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
                           "api": dom.api, "domain_type": dom.type}
    out.update({k: st.get(k, 0) for k in COUNTERS})
    out["end_ns"] = end
    out["items"] = session.items
    out["compacted_items"] = session.compacted_items
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
    jobs = resolve_jobs(strategies, callers)
    if executor is None:
        rows = [run_one(j, ops, params, progress) for j in jobs]
    else:
        futures = [executor.submit(run_one, j, ops, params, False) for j in jobs]
        rows = [f.result() for f in futures]
    df = pd.DataFrame(rows)
    df.attrs["workload"] = getattr(workload, "name", "ops")
    return df


__all__ = ["CALLERS", "compare", "run_one"]
