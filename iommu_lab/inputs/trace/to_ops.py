"""Trace events -> :class:`~iommu_lab.inputs.ops.Op` records, by one rule for both paths.

:func:`trace_to_ops` reads the rows of a :func:`~.frame.read_trace` DataFrame and
:func:`iter_trace_ops` streams straight from the text; both turn their
:class:`~.record.Event` records into ops with :func:`events_to_ops`, so the same trace gives
the same ops either way. The kernel traces ``iommu_map`` / ``iommu_unmap`` calls and faults,
never a sync or a flush (kernel-api-history §6.2): the replay's caller pattern adds those.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import replace
from functools import partial
from itertools import groupby, repeat, starmap
from typing import Any

import numpy as np
import pandas as pd

from ...errors import EINVAL, IommuError
from ..ops import Op
from .fast import fast_row, op_fields, op_from_fields
from .fast_ops import fast_trace_ops
from .reader import Reader
from .record import (
    EVENT_CODES,
    EVENTS,
    FAULT,
    MAP,
    NO_GENERATION,
    UNMAP,
    V4_0,
    Event,
    Skips,
    TraceFormatError,
    drop_unreplayable,
    trace_at_ns,
)
from .source import blocks, lines, progress_bar
from .synth import GENERATIONS


def events_to_ops(events: Iterable[Event], *, fault_write_mask: int = 0, strict: bool = True,
                  skips: Skips | None = None, per_cpu: bool = False) -> Iterator[Op]:
    """The ops of ``events``, in order: the one rule from trace event to :class:`Op`.

    map -> ``Op("map", iova, size, paddr)``; unmap -> ``Op("unmap", iova, size)`` (the size
    asked, not ``unmapped_size``); io_page_fault -> ``Op("access", iova, write=...)`` with
    ``write = bool(flags & fault_write_mask)``. ``at_ns`` is ``round((timestamp - t0) * 1e9)``
    clamped at 0, ``t0`` the first event's timestamp (replayable or not, so dropping an event
    never shifts the others); None without a timestamp. A map/unmap of size 0 (v3.16 maps,
    §6.2) cannot be replayed: :class:`TraceFormatError` naming its line when ``strict``, else
    appended to ``skips`` (if given) as ``(line, reason)`` and dropped.

    ``per_cpu``: each op keeps the CPU that traced it (``Op.cpu``), numbered 0, 1, … in order
    of first appearance, so a replay runs the CPUs' streams concurrently; events without a
    CPU (no prefix) go to CPU 0.
    """
    t0: float | None = None
    cpus: dict[int, int] = {}
    for ev in events:
        at_ns, t0 = trace_at_ns(ev.timestamp, t0)
        kind, size = ev.event, ev.size
        if not size and kind != FAULT:
            drop_unreplayable(ev.line, kind, ev.generation, strict, skips)
            continue
        cpu = cpus.setdefault(ev.cpu, len(cpus)) if per_cpu and ev.cpu >= 0 else 0
        try:
            if kind == MAP:
                op = Op("map", ev.iova, size, ev.paddr, at_ns=at_ns, cpu=cpu)
            elif kind == UNMAP:
                op = Op("unmap", ev.iova, size, at_ns=at_ns, cpu=cpu)
            else:
                op = Op("access", ev.iova, write=bool(ev.flags & fault_write_mask), at_ns=at_ns,
                        cpu=cpu)
        except IommuError as exc:  # values from a hand-made DataFrame
            raise TraceFormatError(f"line {ev.line}: {exc.strerror}", ev.line,
                                   exc.strerror) from None
        yield op


class _Run:
    """A run being built: its first op, how many ops, and the strides."""

    __slots__ = ("first", "count", "stride", "paddr_stride")

    def __init__(self, first: Op) -> None:
        self.first, self.count, self.stride, self.paddr_stride = first, 1, 0, 0

    def extend(self, op: Op) -> bool:
        """Take ``op`` if it is the run's next item (same shape, next stride step)."""
        first = self.first
        if (op.at_ns is not None or first.at_ns is not None or first.count != 1
                or op.count != 1 or op.kind != first.kind or op.size != first.size
                or op.write != first.write or op.prot != first.prot or op.cpu != first.cpu):
            return False
        if self.count == 1:
            if op.iova < first.iova or op.paddr < first.paddr:
                return False
            self.stride, self.paddr_stride = op.iova - first.iova, op.paddr - first.paddr
        elif (op.iova != first.iova + self.count * self.stride
              or op.paddr != first.paddr + self.count * self.paddr_stride):
            return False
        self.count += 1
        return True

    def op(self) -> Op:
        """The run as one :class:`Op`."""
        if self.count == 1:
            return self.first
        return replace(self.first, count=self.count, stride=self.stride,
                       paddr_stride=self.paddr_stride)


def _merge_runs(ops: Iterable[Op]) -> Iterator[Op]:
    """Fold consecutive untimed single ops of one shape at a constant non-negative stride into
    runs (``count``/``stride``/``paddr_stride``, see :class:`~iommu_lab.inputs.ops.Op`).

    Only ops with ``at_ns is None`` merge, so timed replays keep every op's exact start time.
    """
    run: _Run | None = None
    for op in ops:
        if op.at_ns is not None:    # a timed op never merges: no run is started for it
            if run is not None:
                yield run.op()
                run = None
            yield op
            continue
        if run is not None and run.extend(op):
            continue
        if run is not None:
            yield run.op()
        run = _Run(op)
    if run is not None:
        yield run.op()


_AT_NS = Op.__slots__.index("at_ns")


def _untimed(row: tuple[Any, ...]) -> bool:
    return row[_AT_NS] is None


def _merge_rows(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """:func:`_merge_runs` on ops' fields (``op_fields``): a timed op never merges, so its
    fields pass as they are; each stretch of untimed ones is merged as ops."""
    for untimed, group in groupby(rows, _untimed):
        if untimed:
            yield from map(op_fields, _merge_runs(starmap(op_from_fields, group)))
        else:
            yield from group


def _row_events(df: pd.DataFrame, per_cpu: bool = False) -> Iterator[Event]:
    """The rows of a :func:`~.frame.read_trace` DataFrame as :class:`Event` records for
    :func:`events_to_ops`: the fields it reads come from the frame, the others keep their
    no-prefix defaults (copying them too made :func:`trace_to_ops` ~4% slower).

    A hand-made frame needs ``event``, ``iova``, ``size``, ``paddr`` and ``flags`` columns;
    NA reads as 0, a missing ``timestamp`` as NaN, ``line`` as the row number from 1 and
    ``generation`` as v4.0. ``cpu`` is read only for a ``per_cpu`` replay.
    """
    missing = [c for c in ("event", "iova", "size", "paddr", "flags") if c not in df.columns]
    if missing:
        raise IommuError(EINVAL, f"trace DataFrame lacks column(s) {', '.join(missing)}")
    n = len(df)
    columns: list[Iterable[Any]] = []
    for name in Event._fields:
        if (name in _READ or (per_cpu and name == "cpu")) and name in df.columns:
            read = _READ.get(name, pd.Series.tolist)
            columns.append(read(df[name]))
        else:
            columns.append(range(1, n + 1) if name == "line" else repeat(_ABSENT[name], n))
    return map(partial(tuple.__new__, Event), zip(*columns))  # Event._make, minus a call


def _event_codes(col: pd.Series) -> list[int]:
    """Event names -> codes; unknown names are an error."""
    names = col.astype(object)
    codes = names.map(EVENT_CODES)
    if codes.isna().any():
        bad = names[codes.isna()].iloc[0]
        raise IommuError(EINVAL, f"unknown trace event {bad!r}; expected one of "
                         f"{', '.join(EVENTS)}")
    return codes.astype(int).tolist()


def _generation_codes(col: pd.Series) -> list[int]:
    """Generation names -> codes (NA -> :data:`~.record.NO_GENERATION`)."""
    codes = col.astype(object).map({g: i for i, g in enumerate(GENERATIONS)})
    return codes.fillna(NO_GENERATION).astype(int).tolist()


def _u64_list(col: pd.Series) -> list[int]:
    """An integer column (NA -> 0) as Python ints, exact up to 2^64-1."""
    s = pd.Series(col)
    if s.hasnans:
        s = s.fillna(0)
    return s.to_numpy(dtype=np.uint64).tolist()


def _floats(col: pd.Series) -> list[float]:
    """A timestamp column as Python floats (NaN where there is none)."""
    return pd.Series(col, dtype=np.float64).to_numpy().tolist()


_READ = {"event": _event_codes, "timestamp": _floats, "iova": _u64_list, "paddr": _u64_list,
         "size": _u64_list, "flags": _u64_list, "line": pd.Series.tolist,
         "generation": _generation_codes}
_ABSENT = {"timestamp": np.nan, "unmapped_size": 0, "cpu": -1, "task": "", "device": "",
           "generation": V4_0, "pid": -1, "driver": ""}


def trace_to_ops(df: pd.DataFrame, *, merge_runs: bool = True, fault_write_mask: int = 0,
                 strict: bool = True, per_cpu: bool = False) -> list[Op]:
    """Turn :func:`~.frame.read_trace` rows into :class:`~iommu_lab.inputs.ops.Op` records.

    Row order, by the rule of :func:`events_to_ops`. ``fault_write_mask``: the default 0 reads
    every fault as a read because drivers fill ``flags`` differently; most callers of
    ``report_iommu_fault()`` pass ``IOMMU_FAULT_WRITE`` (``0x1``, include/linux/iommu.h), so
    ``fault_write_mask=1`` fits them. With ``merge_runs`` consecutive *untimed* ops of one
    shape at a constant non-negative stride become one run (``count``/``stride``); timed ops
    never merge. Rows that cannot be ops (v3.16 maps of size 0) raise
    :class:`~.record.TraceFormatError` naming the line, or are dropped when ``strict`` is False.
    ``per_cpu`` keeps each event's CPU (see :func:`events_to_ops`).
    """
    ops = events_to_ops(_row_events(df, per_cpu), fault_write_mask=fault_write_mask,
                        strict=strict, per_cpu=per_cpu)
    return list(_merge_runs(ops) if merge_runs else ops)


def iter_trace_ops(path_or_lines: Any, strict: bool = True, *, fault_write_mask: int = 0,
                   merge_runs: bool = True, skips: Skips | None = None,
                   progress: bool = False, per_cpu: bool = False, fast: bool = True,
                   bar: Any = None) -> Iterator[Op]:
    """Stream ops straight from trace text, without a DataFrame: the ops
    ``trace_to_ops(read_trace(path_or_lines))`` would give, by the same rule.

    ``at_ns`` counts from the first timestamped event. In lenient mode malformed and
    unreplayable lines are appended to ``skips`` (if given) as ``(line, reason)``. A path or
    a text blob is read in blocks (:mod:`.fast_ops`, ~2x faster, same results) unless
    ``fast`` is False; an iterable of lines, and ``fast=False``, go line by line (the
    reference path the tests compare the block path with). ``bar``: advance this instead
    of a progress bar of its own (:mod:`.ahead` counts for a bar in another process).
    """
    reader = Reader(strict, skips)
    bar = progress_bar(path_or_lines, progress) if bar is None else bar
    text = blocks(path_or_lines, bar) if fast else None
    if text is not None:
        with closing(text):
            ops = fast_trace_ops(text, reader, fault_write_mask=fault_write_mask,
                                 per_cpu=per_cpu)
            yield from (_merge_runs(ops) if merge_runs else ops)
        return
    with closing(lines(path_or_lines, bar)) as text:
        ops = events_to_ops(reader.events(text), fault_write_mask=fault_write_mask,
                            strict=strict, skips=reader.skips, per_cpu=per_cpu)
        yield from (_merge_runs(ops) if merge_runs else ops)


def iter_trace_rows(path_or_lines: Any, strict: bool = True, *, fault_write_mask: int = 0,
                    merge_runs: bool = True, skips: Skips | None = None, per_cpu: bool = False,
                    bar: Any = None) -> Iterator[tuple[Any, ...]]:
    """``map(op_fields, iter_trace_ops(...))`` with the same arguments, made without the ops
    on the block path (:data:`~.fast.fast_row`): what the parse-ahead child (:mod:`.ahead`)
    sends, ~1.5 µs an op sooner than building each op and taking it apart."""
    text = blocks(path_or_lines, bar)
    if text is None:
        yield from map(op_fields, iter_trace_ops(
            path_or_lines, strict, fault_write_mask=fault_write_mask, merge_runs=merge_runs,
            skips=skips, per_cpu=per_cpu, bar=bar))
        return
    with closing(text):
        rows = fast_trace_ops(text, Reader(strict, skips), fault_write_mask=fault_write_mask,
                              per_cpu=per_cpu, make=fast_row)
        yield from (_merge_rows(rows) if merge_runs else rows)
