"""``sweep()``: ``compare()`` over a grid of parameters, serially or on a cluster.

One tidy DataFrame row per (grid point, strategy, caller), the grid's columns first. A grid
key is, in this order of lookup:

- an argument of the workload when the workload is a factory (``workloads.kvm_teardown``:
  ``guest_mem``, ``page_size``...; ``workload.`` prefix to insist);
- a cost of :class:`~iommu_lab.hw.costs.Costs` (``hw_tlbi_ns``...; ``costs.`` prefix);
- a domain parameter that every chosen strategy accepts (``iotlb_entries``,
  ``cmdq_entries``, ``cpus``...; ``domain.`` prefix): whatever ``iommu_domain_alloc``
  accepts, so parameters added to the domain later work unchanged.

Anything else is refused (EINVAL naming it) before anything runs, and so is a grid value a
domain refuses. Runs go to ``executor`` (any ``concurrent.futures.Executor``: a process
pool, or a dask.distributed cluster's ``Client.get_executor()``) in batches, each run
being ``compare()`` of one (strategy, caller): the rows are the same wherever they ran.

    il.sweep(il.workloads.kvm_teardown, ["smmuv3-v4.14", "smmuv3-v5.4"], ["unmap-each"],
             {"guest_mem": ["64M", "256M"], "hw_tlbi_ns": [25, 50, 100]})
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from ..drivers.registry import get_strategy, iommu_domain_alloc, known_params
from ..errors import IommuError, einval
from ..hw.costs import Costs
from ..inputs.ops import Op
from .compare import compare, resolve_jobs

PREFIXES = ("workload", "costs", "domain")
MAX_TASKS = 256            # runs are batched so that at most this many tasks are submitted


@dataclass(frozen=True)
class Run:
    """One run of a sweep: grid point ``point`` (its index) under (strategy, caller)."""

    point: int
    strategy: str
    caller: str
    workload_args: tuple[tuple[str, Any], ...]
    params: Mapping[str, Any] = field(default_factory=dict)


def sweep(workload: Any, strategies: Sequence[str] | None = None,
          callers: Sequence[str] | None = None,
          grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None = None,
          executor: Executor | None = None, *, params: Mapping[str, Any] | None = None,
          progress: bool = True) -> Any:
    """Run ``workload`` under every (strategy, caller) at every point of ``grid``.

    ``workload``: ops (a :class:`Workload`, a list of :class:`Op`), or a factory called
    with the grid's workload arguments. ``grid``: ``{key: [values]}`` (every combination,
    keys in order) or a list of ``{key: value}`` points. ``params``: domain parameters for
    every run (``costs`` as a dict). Returns one row per (point, strategy, caller) in that
    order: the grid's columns, then ``compare()``'s. A tqdm bar counts runs.
    """
    import pandas as pd
    from tqdm import tqdm

    points = grid_points(grid)
    jobs = resolve_jobs(strategies, callers)
    factory = workload if callable(workload) and not isinstance(workload, Iterable) else None
    roles = classify(points, factory, sorted({s for s, _ in jobs}))
    base = dict(params or {})
    fixed_ops = None if factory else list(workload)
    runs = [Run(i, s, c, *split_point(p, roles, base))
            for i, p in enumerate(points) for s, c in jobs]
    check_values(runs)
    spec = WorkloadSpec(factory, fixed_ops)
    rows: list[dict[str, Any] | None] = [None] * len(runs)
    with tqdm(total=len(runs), desc="sweep", unit="run", disable=not progress) as bar:
        for first, out in _execute(runs, spec, executor):
            rows[first:first + len(out)] = out
            bar.update(len(out))
    table = [{**points[r.point], **row} for r, row in zip(runs, rows, strict=True)]
    df = pd.DataFrame(table)
    df.attrs["grid"] = list(points[0]) if points else []
    df.attrs["workload"] = getattr(workload, "name", getattr(workload, "__name__", "ops"))
    return df


def grid_points(grid: Any) -> list[dict[str, Any]]:
    """The grid as a list of points (dicts); ``None`` is one empty point."""
    if grid is None:
        return [{}]
    if isinstance(grid, Mapping):
        keys = list(grid)
        for k in keys:
            if isinstance(grid[k], str) or not isinstance(grid[k], Iterable):
                raise einval(f"grid[{k!r}] must be a list of values, not {grid[k]!r}")
        values = [list(grid[k]) for k in keys]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
    points = [dict(p) for p in grid]
    if not points or any(set(p) != set(points[0]) for p in points):
        raise einval("grid points must be a non-empty list of dicts with the same keys")
    return points


def classify(points: list[dict[str, Any]], factory: Callable[..., Any] | None,
             strategies: list[str]) -> dict[str, tuple[str, str]]:
    """``{key: (role, name)}``, role one of workload / costs / domain; EINVAL otherwise."""
    keys = list(points[0]) if points else []
    wl_args = _factory_args(factory)
    cost_names = {f.name for f in fields(Costs)}
    domain = {s: set(known_params(get_strategy(s))) for s in strategies}
    shared = set.intersection(*domain.values()) if domain else set()
    roles: dict[str, tuple[str, str]] = {}
    for key in keys:
        prefix, _, name = key.rpartition(".")
        if prefix and prefix not in PREFIXES:
            raise einval(f"grid key {key!r}: prefix must be one of {', '.join(PREFIXES)}")
        if name in wl_args and prefix in ("", "workload"):
            roles[key] = ("workload", name)
        elif name in cost_names and prefix in ("", "costs"):
            roles[key] = ("costs", name)
        elif name in shared and prefix in ("", "domain"):
            roles[key] = ("domain", name)
        else:
            raise einval(_unknown(key, name, prefix, wl_args, cost_names, domain, factory))
    return roles


def _factory_args(factory: Callable[..., Any] | None) -> set[str]:
    if factory is None:
        return set()
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return set()
    return {n for n, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _unknown(key: str, name: str, prefix: str, wl_args: set[str], cost_names: set[str],
             domain: dict[str, set[str]], factory: Any) -> str:
    """The error for a grid key that is nothing the sweep can vary."""
    if prefix == "costs":
        return f"unknown cost {name!r} in grid key {key!r}; known: {', '.join(sorted(cost_names))}"
    if prefix == "workload":
        return (f"grid key {key!r}: the workload takes no argument {name!r}"
                + (f" (it takes {', '.join(sorted(wl_args))})" if wl_args else ""))
    missing = [s for s, names in domain.items() if name not in names]
    if prefix in ("", "domain") and missing and any(name in n for n in domain.values()):
        return (f"grid parameter {key!r} is not a domain parameter of "
                f"{', '.join(missing)} (sweep those strategies separately)")
    shared = set.intersection(*domain.values()) if domain else set()
    if factory is not None:
        wl = (f"an argument of {getattr(factory, '__name__', 'the workload')} "
              f"({', '.join(sorted(wl_args))})")
    else:
        wl = ("a workload argument (pass a factory such as workloads.kvm_teardown to sweep "
              "sizes)")
    return (f"unknown grid parameter {key!r}: it is not {wl}, nor a cost "
            f"({', '.join(sorted(cost_names))}), nor a domain parameter "
            f"({', '.join(sorted(shared))})")


def split_point(point: dict[str, Any], roles: dict[str, tuple[str, str]],
                base: dict[str, Any]) -> tuple[tuple[tuple[str, Any], ...], dict[str, Any]]:
    """A point's (workload arguments, domain parameters with the cost overrides merged)."""
    wl: dict[str, Any] = {}
    params = dict(base)
    costs = dict(params.get("costs") or {})
    for key, value in point.items():
        role, name = roles[key]
        if role == "workload":
            wl[name] = value
        elif role == "costs":
            costs[name] = value
        elif name == "costs":
            costs.update(value or {})
        else:
            params[name] = value
    if costs:
        params["costs"] = costs
    return tuple(sorted(wl.items())), params


def check_values(runs: list[Run]) -> None:
    """Allocate one domain per (strategy, parameters): a value a domain refuses is
    reported, naming its grid point, before any run starts."""
    seen: set[tuple[str, str]] = set()
    for r in runs:
        key = (r.strategy, repr(sorted(r.params.items(), key=lambda kv: kv[0])))
        if key in seen:
            continue
        seen.add(key)
        try:
            iommu_domain_alloc(r.strategy, **r.params)
        except IommuError as exc:
            raise IommuError(exc.errno, f"grid point {r.point} ({r.strategy}, "
                                        f"{dict(r.params)}): {exc.strerror}") from None


@dataclass(frozen=True)
class WorkloadSpec:
    """What a worker needs to rebuild a point's ops: the factory, or the ops themselves."""

    factory: Callable[..., Any] | None
    ops: list[Op] | None

    def build(self, args: tuple[tuple[str, Any], ...]) -> list[Op]:
        if self.factory is None:
            assert self.ops is not None
            return self.ops
        return _built(self.factory, args)


@lru_cache(maxsize=8)
def _built(factory: Callable[..., Any], args: tuple[tuple[str, Any], ...]) -> list[Op]:
    """A factory's ops for one point, built once per process (per worker on a cluster)."""
    return list(factory(**dict(args)))


def run_batch(runs: list[Run], spec: WorkloadSpec) -> list[dict[str, Any]]:
    """Run consecutive runs of a sweep (a task for an executor): ``compare()`` rows."""
    out = []
    for r in runs:
        df = compare(spec.build(r.workload_args), [r.strategy], [r.caller], dict(r.params))
        out.append(df.to_dict("records")[0])
    return out


def _execute(runs: list[Run], spec: WorkloadSpec,
             executor: Executor | None) -> Iterable[tuple[int, list[dict[str, Any]]]]:
    """(index of the first run, its rows) per batch, as batches finish."""
    size = max(1, -(-len(runs) // MAX_TASKS))
    batches = [(i, runs[i:i + size]) for i in range(0, len(runs), size)]
    if executor is None:
        for first, batch in batches:
            for k, r in enumerate(batch):
                yield first + k, run_batch([r], spec)
        return
    futures = {executor.submit(run_batch, batch, spec): first for first, batch in batches}
    for fut in as_completed(futures):
        yield futures[fut], fut.result()


__all__ = ["Run", "WorkloadSpec", "classify", "grid_points", "run_batch", "sweep"]
