"""Kernel iommu tracepoint text (ftrace / trace-cmd) in, DataFrames and ops out."""

from .parse import (
    COLUMNS,
    EVENTS,
    GENERATIONS,
    TraceFormatError,
    bench_import,
    iter_trace_ops,
    make_synthetic_trace,
    read_trace,
    trace_to_ops,
)

__all__ = ["COLUMNS", "EVENTS", "GENERATIONS", "TraceFormatError", "bench_import",
           "iter_trace_ops", "make_synthetic_trace", "read_trace", "trace_to_ops"]
