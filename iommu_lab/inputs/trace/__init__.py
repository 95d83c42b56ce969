"""Kernel iommu tracepoint text (ftrace / trace-cmd) in, DataFrames and ops out.

The pipeline, one module per step: :mod:`.source` (lines from a path, ``.gz``, text or an
iterable), :mod:`.parse` (one line -> one :mod:`.record`; :mod:`.diagnose` says why a line is
malformed), :mod:`.reader` (a stream of lines -> events, strict or lenient), then either
:mod:`.frame` (events -> DataFrame, :func:`read_trace`) or :mod:`.to_ops` (events or rows ->
ops, one rule for both). For ops from a path or a text blob, :mod:`.fast` reads the text in
blocks through one regex (other lines still go to :mod:`.parse`) and :mod:`.fast_ops` applies
the same rule, with the same results (``fast=False`` keeps the per-line reference path).
:mod:`.synth` writes traces; :mod:`.bench` times the import.
"""

from .bench import bench_import
from .frame import COLUMNS, EVENTS, read_trace
from .record import TraceFormatError
from .synth import GENERATIONS, make_synthetic_trace
from .to_ops import iter_trace_ops, trace_to_ops

__all__ = ["COLUMNS", "EVENTS", "GENERATIONS", "TraceFormatError", "bench_import",
           "iter_trace_ops", "make_synthetic_trace", "read_trace", "trace_to_ops"]
