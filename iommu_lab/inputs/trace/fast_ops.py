"""Trace text -> ops on the block fast path (:mod:`.fast`), for :func:`~.to_ops.iter_trace_ops`.

The same ops, skips and errors as its per-line path (:meth:`~.reader.Reader.events` ->
:func:`~.to_ops.events_to_ops` -> ``_merge_runs``), by the same rule; only the bookkeeping
is done a block at a time. The per-line path stays the reference (``fast=False``) that the
tests compare this one with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .fast import Chunk, LineAt, chunks, decode, fast_op, no_gc, slow_line
from .reader import Reader
from .record import FAULT, MAP, UNMAP, drop_unreplayable, trace_at_ns

_NAN = float("nan")


class _Rule:
    """``events_to_ops`` over rows, block by block: ``t0`` and the CPU numbering persist."""

    def __init__(self, reader: Reader, fault_write_mask: int, per_cpu: bool) -> None:
        self.reader, self.mask, self.per_cpu = reader, fault_write_mask, per_cpu
        self.t0: float | None = None
        self.cpus: dict[int, int] = {}

    def ops(self, chunk: Chunk, n: int, out: list[Any],
            make: Callable[..., Any] = fast_op) -> int:
        """Append the ops of a chunk's lines ``n + 1``... to ``out``, each made by ``make``
        (:data:`~.fast.fast_op`, or :data:`~.fast.fast_row` for its fields); the last line
        number.

        One loop on purpose: it runs once per line, so every call saved counts.
        """
        reader, mask, per_cpu, cpus, t0 = self.reader, self.mask, self.per_cpu, self.cpus, self.t0
        strict, skips, append, line_at, first = reader.strict, reader.skips, out.append, None, n
        rows, block = chunk.rows, chunk.block
        try:
            for cpu_t, ts_t, name, iova_t, end, paddr_t, dsize, done, hsize, other in rows:
                n += 1
                got = decode(name, iova_t, end, paddr_t, dsize, done, hsize) if iova_t else None
                if got is not None:
                    kind, iova, paddr, size, _, gen = got
                    flags = 0
                    if ts_t:
                        ts = float(ts_t)
                        cpu = int(cpu_t) if per_cpu else 0
                    else:
                        ts = _NAN
                        cpu = -1
                else:
                    if iova_t:  # a fast line decode() leaves to parse_line
                        line_at = line_at or LineAt(block)
                        other = line_at(n - first - 1)
                    ev = slow_line(reader, other, n)
                    if ev is None:
                        continue
                    kind, ts, iova, paddr, size, flags, cpu, gen = (
                        ev.event, ev.timestamp, ev.iova, ev.paddr, ev.size, ev.flags, ev.cpu,
                        ev.generation)
                at_ns, t0 = trace_at_ns(ts, t0)
                if not size and kind != FAULT:
                    drop_unreplayable(n, kind, gen, strict, skips)
                    continue
                c = cpus.setdefault(cpu, len(cpus)) if per_cpu and cpu >= 0 else 0
                if kind == MAP:
                    append(make("map", iova, size, paddr, False, at_ns, c))
                elif kind == UNMAP:
                    append(make("unmap", iova, size, 0, False, at_ns, c))
                else:
                    append(make("access", iova, 0, 0, bool(flags & mask), at_ns, c))
        finally:
            self.t0 = t0
        return n


def fast_trace_ops(blocks: Iterable[str], reader: Reader, *, fault_write_mask: int = 0,
                   per_cpu: bool = False, make: Callable[..., Any] = fast_op) -> Iterator[Any]:
    """The ops of ``blocks`` (:func:`~.source.blocks`): what ``events_to_ops`` makes of
    ``reader.events`` over their lines, with the same skips in ``reader.skips``; an error
    comes after the ops the per-line path yields before it. Runs are merged by the caller
    (``_merge_runs``), as on the per-line path. ``make``: :data:`~.fast.fast_row` yields
    each op's fields instead (``op_fields(op)``)."""
    rule, n = _Rule(reader, fault_write_mask, per_cpu), 0
    for chunk in chunks(blocks):
        ops: list[Any] = []
        try:
            with no_gc():
                n = rule.ops(chunk, n, ops, make)
        except Exception:
            yield from ops   # the ops before the bad line, as the per-line path yields them
            raise
        yield from ops
