"""Replay a captured ftrace / trace-cmd iommu trace under any strategies and callers.

Kernel tracepoints record each ``iommu_map`` / ``iommu_unmap`` call (and faults) but no
sync, flush or flush-queue activity (kernel-api-history.md §6.2): those are filled in by
the chosen caller pattern, and every result says so. Timestamps become ``at_ns`` so
simulated time (and the flush-queue timer) follows the capture. Given a path, the text is
parsed once: one pair streams it (a big file is parsed in a second process while this one
replays: :mod:`~iommu_lab.inputs.trace.ahead`); several read its ops back from a temporary file
(:class:`~iommu_lab.inputs.trace.spill.OpSpill`, in this process or a local pool's), so
memory stays bounded whatever its size. Workers elsewhere (a dask cluster) stream the
file themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..inputs.ops import Op
from ..inputs.trace.ahead import parse_ahead, worth_parsing_ahead
from ..inputs.trace.frame import read_trace
from ..inputs.trace.spill import OpSpill, read_spill
from ..inputs.trace.to_ops import iter_trace_ops, trace_to_ops
from .compare import resolve_jobs, row, with_cpus
from .session import Session

NOTE = ("kernel tracepoints record no sync or flush: the caller pattern decides when those "
        "happen; map/unmap calls, sizes and timestamps come from the trace")


def replay(trace: Any, strategies: Sequence[str] | None = None,
           callers: Sequence[str] | None = None, params: dict[str, Any] | None = None,
           strict: bool = True, progress: bool = False,
           executor: Executor | None = None, per_cpu: bool = False) -> Any:
    """One row per (strategy, caller), the same columns as ``compare()`` plus ``op_errors``.

    ``trace`` is a DataFrame from :func:`read_trace`, a path, or a list of lines.
    Operations the simulated domain refuses are counted in ``op_errors`` (the first three
    listed in ``notes``) instead of stopping: a map over an existing mapping (EEXIST) under
    any caller, and, under the DMA-API callers only, an unmap of a region not mapped
    throughout (``iommu_dma_unmap`` refuses it: EINVAL). Under the IOMMU-API callers an unmap
    of a hole (a region mapped before the capture began) is no error: ``iommu_unmap`` returns
    0 bytes unmapped, as the kernel's does, and nothing is counted
    (``lazy_faults.complete_trace`` maps such regions first).
    Lines skipped in lenient mode (``strict=False``) are in ``attrs["skips"]``.
    ``executor`` (a process pool, a dask.distributed ``Client.get_executor()``) replays the
    pairs in parallel. Given a path, the text is parsed once for every pair that runs here
    or in a local pool; other workers stream the file themselves (they must see it).
    ``per_cpu``: replay each traced CPU's events on its own simulated CPU, concurrently
    (the domain gets as many CPUs as the trace has); otherwise one CPU replays them all.
    """
    import pandas as pd

    jobs = resolve_jobs(strategies, callers)
    skips: list[tuple[int, str]] = []
    if per_cpu and not isinstance(trace, pd.DataFrame):
        trace = read_trace(trace, strict=strict)     # the CPU count is needed up front
    if isinstance(trace, pd.DataFrame):
        ops: list[Op] | None = trace_to_ops(trace, strict=strict, per_cpu=per_cpu)
        params = with_cpus(ops, params)
        gens = trace.attrs.get("generations", [])
        source: Any = None
    else:
        ops, gens = None, []
        source = str(trace) if isinstance(trace, str | Path) else list(trace)
    if ops is None and len(jobs) > 1 and (executor is None or local(executor)):
        # several pairs: parse the text once; each pair reads the ops back from a file
        with OpSpill(iter_trace_ops(source, strict=strict, skips=skips,
                                    progress=progress)) as spill:
            rows = _pairs(jobs, params, executor, spill, progress)
    elif ops is not None:
        rows = _pairs(jobs, params, executor, ops, progress)
    elif executor is not None:
        results = [f.result() for f in [executor.submit(_run_source, s, c, params, source,
                                                        strict) for s, c in jobs]]
        rows = [r for r, _ in results]
        skips = results[-1][1] if results else skips
    else:   # one pair streams the text (from a child process parsing ahead, if worth it)
        stream = parse_ahead if worth_parsing_ahead(source) else iter_trace_ops
        rows = [_run(s, c, params, stream(source, strict=strict, skips=skips,
                                          progress=progress)) for s, c in jobs]
    out = pd.DataFrame(rows)
    note = NOTE
    if "v3.16" in gens:
        note += "; v3.16 traces record post-loop iova/paddr values (unreliable)"
    out.attrs["note"] = note
    out.attrs["skips"] = list(skips)
    return out


def local(executor: Executor) -> bool:
    """Do the executor's workers share this machine's files (a local pool)?"""
    return isinstance(executor, ProcessPoolExecutor | ThreadPoolExecutor)


def _pairs(jobs: list[tuple[str, str]], params: dict[str, Any] | None,
           executor: Executor | None, ops: list[Op] | OpSpill,
           progress: bool) -> list[dict[str, Any]]:
    """The rows of every pair replaying ``ops``, here or on the executor's workers (which
    get the list, or the path of the :class:`OpSpill`); ``progress``: a bar counting pairs."""
    from tqdm import tqdm  # the plain-text bar; tqdm.auto would import ipywidgets

    with tqdm(total=len(jobs), unit=" pairs", disable=not progress) as bar:
        if executor is None:
            results: Iterable[Any] = (_run(s, c, params, ops) for s, c in jobs)
        else:
            run, shipped = (_run_spill, str(ops.path)) if isinstance(ops, OpSpill) else (_run, ops)
            futures = [executor.submit(run, s, c, params, shipped) for s, c in jobs]
            results = (f.result() for f in futures)
        rows = []
        for r in results:
            rows.append(r)
            bar.update()
        return rows


def _run_spill(strategy: str, caller: str, params: dict[str, Any] | None,
               path: str) -> dict[str, Any]:
    """One pair replaying the ops an :class:`OpSpill` keeps at ``path`` (a worker's task)."""
    return _run(strategy, caller, params, read_spill(path))


def _run_source(strategy: str, caller: str, params: dict[str, Any] | None, source: Any,
                strict: bool) -> tuple[dict[str, Any], list[tuple[int, str]]]:
    """One pair streaming the trace itself (an executor's task): its row and the skips."""
    skips: list[tuple[int, str]] = []
    row = _run(strategy, caller, params, iter_trace_ops(source, strict=strict, skips=skips))
    return row, skips


def _run(strategy: str, caller: str, params: dict[str, Any] | None,
         ops: Iterable[Op]) -> dict[str, Any]:
    # the row is made of counters: no trace is kept (unless asked), so a replay of a
    # million events runs in bounded memory and builds no trace text
    session = Session(strategy, caller, {"trace_limit": 0, **(params or {})}, lenient=True)
    session.run(ops)
    r = row(session)
    r["op_errors"] = len(session.op_errors)
    if session.op_errors:
        r["notes"] = "; ".join(filter(None, [r["notes"], *session.op_errors[:3]]))
    return r
