"""``race()``: rank strategies on a workload — safe ones first, then by modelled time.

One call runs the workload under every (strategy, caller) with :func:`compare`, checks each
strategy with :func:`~iommu_lab.analysis.check.check_strategy` under those callers' patterns,
and ranks the rows: **safe** first (no counterexample under that caller's pattern), then
modelled time (``end_ns``: when the CPU and the IOMMU are both done), then ``commands``
(invalidations + completions + requests the hardware executed), then the stale window
(``max_stale_ns``: the longest time a stale IOTLB entry served DMA — 0 when no DMA reached
an unmapped buffer). An unsafe strategy that "wins" on time ranks below every safe one, and
its row says which invariant it breaks. The result has ``compare()``'s columns, so the
dashboard's views draw it: ``views.compare_figure(df, "end_ns")``,
``views.compare_table(df, RACE_METRICS)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..drivers.registry import get_strategy
from ..inputs.ops import Op
from ..inputs.workloads import Workload, kvm_teardown, nic_streaming
from .check import DEFAULT_EXAMPLES, PATTERNS, CheckResult, check_strategy
from .compare import compare

RACE_METRICS = ("rank", "safe", "end_ns", "commands", "max_stale_ns", "inv_cmds", "sync_cmds",
                "unsafe_because")
SORT_KEYS = ("safe", "end_ns", "commands", "max_stale_ns", "strategy", "caller")
BASELINE = "smmuv3-v5.4"

# The challenge of notebook 10 (a table: name -> (workload factory, caller)): a NIC receive
# ring on the strict DMA API (one dma_unmap, one sync per packet; mostly 2K buffers) and a
# 16 MiB guest torn down by VFIO (iommu_unmap_fast, one sync per 512 regions), its backing
# memory mostly contiguous. Small enough for a notebook cell (about a second each).
CHALLENGE: dict[str, tuple[Callable[[], Workload], str]] = {
    "nic": (lambda: nic_streaming(packets=128), "dma-strict"),
    "teardown": (lambda: kvm_teardown("16M", "4K", contiguity=0.9), "unmap-fast-batch"),
}


def race(workload: Iterable[Op], strategies: Sequence[str], callers: Sequence[str] | None = None,
         params: dict[str, Any] | None = None, examples: int = DEFAULT_EXAMPLES // 2,
         seed: Any = 0, checks: Mapping[str, CheckResult] | None = None) -> Any:
    """Rank ``strategies`` (shipped or user-defined) on ``workload``: one row per (strategy,
    caller), safe first, then ``end_ns``, ``commands``, ``max_stale_ns``.

    ``examples`` / ``seed``: for the safety check of each strategy (``checks`` may supply
    results already computed, by strategy name). Unknown names raise EINVAL first.
    """
    names = list(dict.fromkeys(strategies))
    for name in names:
        get_strategy(name)
    df = compare(list(workload), names, callers, params)
    patterns = _patterns(df["caller"].unique())
    done = dict(checks or {})
    for name in names:
        if name not in done:
            done[name] = check_strategy(name, examples=examples, seed=seed, callers=patterns,
                                        params=params)
    safety = [_safety(done[s], c) for s, c in zip(df["strategy"], df["caller"])]
    df["safe"] = [ok for ok, _ in safety]
    df["unsafe_because"] = [why for _, why in safety]
    df["commands"] = df["inv_cmds"] + df["sync_cmds"] + df["requests"]
    df["user_defined"] = [get_strategy(s).user_defined for s in df["strategy"]]
    df = df.sort_values(list(SORT_KEYS), ascending=[False] + [True] * (len(SORT_KEYS) - 1),
                        kind="stable").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    df.attrs["workload"] = getattr(workload, "name", "ops")
    df.attrs["note"] = (f"safety: check_strategy(examples={examples}, seed={seed!r}) under each "
                        "row's caller pattern; rank: safe first, then end_ns, commands, "
                        "max_stale_ns")
    return df


def challenge(strategy: str, baseline: str = BASELINE, examples: int = DEFAULT_EXAMPLES // 4,
              seed: Any = 0, params: dict[str, Any] | None = None) -> Any:
    """Race ``strategy`` against ``baseline`` on each :data:`CHALLENGE` workload (its
    caller): their :func:`race` rows, a ``workload`` column first, and ``beats``: True on a
    row of ``strategy`` that is safe and finishes before ``baseline`` on that workload.

    Each strategy is checked once, under every challenge caller (``examples``, ``seed``).
    """
    names = list(dict.fromkeys([strategy, baseline]))
    for name in names:
        get_strategy(name)
    callers = sorted({caller for _, caller in CHALLENGE.values()})
    checks = {n: check_strategy(n, examples=examples, seed=seed, callers=callers, params=params)
              for n in names}
    frames = []
    for label, (make, caller) in CHALLENGE.items():
        df = race(make(), names, [caller], params, examples, seed, checks)
        base_ns = df.loc[df["strategy"] == baseline, "end_ns"].min()
        df["beats"] = (df["strategy"] == strategy) & df["safe"] & (df["end_ns"] < base_ns) \
            & (strategy != baseline)
        df.insert(0, "workload", label)
        frames.append(df)
    import pandas as pd

    out = pd.concat(frames, ignore_index=True)
    out.attrs["workload"] = " and ".join(CHALLENGE)
    out.attrs["note"] = frames[0].attrs["note"]
    return out


def _patterns(callers: Iterable[str]) -> list[str] | None:
    """The check patterns of the race's callers (None: all, if one has no pattern)."""
    out = list(callers)
    return out if all(c in PATTERNS for c in out) else None


def _safety(result: CheckResult, caller: str) -> tuple[bool, str]:
    """(safe, invariant broken) for one row: that caller's pattern, else the whole check."""
    p = result.for_caller(caller)
    if p is not None and p.ok is not None:
        return p.ok, "" if p.ok else p.counterexample.invariant  # type: ignore[union-attr]
    return result.ok, result.invariant or ""


__all__ = ["CHALLENGE", "RACE_METRICS", "challenge", "race"]
