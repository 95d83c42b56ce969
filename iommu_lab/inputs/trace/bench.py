"""How fast and how big the trace import is: :func:`bench_import` (DataFrame) and
:func:`bench_ops` (ops) on a synthetic trace."""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from os import PathLike
from pathlib import Path

from .frame import read_trace
from .synth import make_synthetic_trace
from .to_ops import iter_trace_ops


def bench_import(n_lines: int = 1_000_000, generation: str = "v5.17",
                 path: str | PathLike[str] | None = None) -> tuple[float, int]:
    """Time :func:`~.frame.read_trace` on an ``n_lines`` synthetic trace: ``(seconds, peak_bytes)``.

    Seconds come from a plain run; peak bytes (Python + numpy allocations, tracemalloc) from
    a second run, since tracing slows the parser. The trace is written to ``path`` (or a
    temporary file, removed afterwards).
    """
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(path) if path is not None else Path(tmp) / "bench-trace.txt"
        with open(target, "w", encoding="utf-8") as f:
            f.writelines(make_synthetic_trace(n_lines, generation=generation, seed=1))
        start = time.perf_counter()
        df = read_trace(target)
        seconds = time.perf_counter() - start
        del df
        tracemalloc.start()
        try:
            read_trace(target)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return seconds, peak


def bench_ops(n_lines: int = 1_000_000, generation: str = "v5.17", style: str = "ftrace",
              path: str | PathLike[str] | None = None) -> dict[str, float]:
    """Seconds of ``list(iter_trace_ops(path))`` on an ``n_lines`` synthetic trace, by the
    block path (``"fast"``) and the per-line reference path (``"per_line"``).

    v3.16 maps trace size 0 (§6.2), so that generation is read leniently. The trace is written
    to ``path`` (or a temporary file, removed afterwards).
    """
    strict = generation != "v3.16"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(path) if path is not None else Path(tmp) / "bench-trace.txt"
        with open(target, "w", encoding="utf-8") as f:
            f.writelines(make_synthetic_trace(n_lines, generation=generation, seed=1,
                                              style=style))
        for name, fast in (("fast", True), ("per_line", False)):
            start = time.perf_counter()
            ops = list(iter_trace_ops(target, strict, fast=fast))
            out[name] = time.perf_counter() - start
            del ops
    return out
