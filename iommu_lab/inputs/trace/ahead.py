"""Trace text parsed in a second process while this one replays it (parse ahead).

A replay streamed from a trace file parses a block, replays it, parses the next: on a
1,000,000-line trace about 6.5 s of parsing in every pair's ~30 s, with the machine's
other core idle. :func:`parse_ahead` runs :func:`~.to_ops.iter_trace_rows` (the fields of
the ops :func:`~.to_ops.iter_trace_ops` makes, without making them) in a child process,
which sends them through a pipe as pickled blocks of tuples (as :class:`~.spill.OpSpill`
stores them); this process builds the :class:`Op` records (~0.7 µs each) and replays them
while the child parses on. The pipe's buffer bounds memory: the
child waits once it is a block ahead. Ops, lenient skips, a strict error (after the ops
before its line) and the progress bar are those of :func:`~.to_ops.iter_trace_ops` run
here. Small files, one-core machines and daemonic processes (which may not start children)
parse here: :func:`worth_parsing_ahead`.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..ops import Op
from .source import is_path, progress_bar
from .spill import BLOCK, ops_of
from .to_ops import Skips, iter_trace_rows

AHEAD_BYTES = 4 << 20
"""Files smaller than this (~40,000 ftrace lines) are parsed here: starting the child costs
more than it saves."""

FIRST_BLOCK = 1024
"""Ops in the child's first block: the replay starts once it arrives (a whole block of
65,536 lines would keep it waiting ~0.4 s); each later block is twice the one before, up
to the block size."""

_OPS, _END, _ERROR = "ops", "end", "error"


def worth_parsing_ahead(source: Any) -> bool:
    """Is ``source`` a file big enough to parse in a child process, on a machine with a
    core to spare, from a process allowed children?"""
    if (not is_path(source) or (os.cpu_count() or 1) < 2
            or "fork" not in multiprocessing.get_all_start_methods()):
        return False
    if multiprocessing.current_process().daemon:
        return False
    try:
        return Path(source).stat().st_size >= AHEAD_BYTES
    except OSError:
        return False        # parsing here raises the error a reader expects


class _Tally:
    """Stands in for the progress bar in the child: counts what the bar would advance by,
    for the parent's bar (:func:`~.source.progress_bar` has the same unit and total)."""

    def __init__(self, unit: str, total: int | None) -> None:
        self.unit, self.total, self.n, self.sent = unit, total, 0, 0

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        """The blocks ended (the parent closes its own bar)."""

    def take(self) -> int:
        """What it advanced by since the last call."""
        out, self.sent = self.n - self.sent, self.n
        return out


def _parse(conn: Connection, source: str, strict: bool, bar: _Tally | None,
           block: int) -> None:
    """The child: every op of ``source`` to ``conn`` in blocks (the first small:
    :data:`FIRST_BLOCK`), then the skips and the error (if any)."""
    skips: Skips = []
    rows: list[tuple[Any, ...]] = []
    size = min(FIRST_BLOCK, block)
    try:
        try:
            for row in iter_trace_rows(source, strict, skips=skips, bar=bar):
                rows.append(row)
                if len(rows) == size:
                    conn.send((_OPS, rows, bar.take() if bar else 0))
                    rows = []
                    size = min(2 * size, block)
        except Exception as exc:    # a strict error: after the ops before its line
            conn.send((_OPS, rows, 0))
            conn.send((_ERROR, skips, _portable(exc)))
        else:
            conn.send((_OPS, rows, 0))
            conn.send((_END, skips, bar.take() if bar else 0))
    except BrokenPipeError:
        pass                        # the parent stopped reading
    finally:
        conn.close()


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives the pipe (pickled here, rebuilt there), else a RuntimeError
    naming it: the reader must get an error, not a parser that died sending one."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def parse_ahead(source: str | os.PathLike[str], strict: bool = True,
                skips: Skips | None = None, progress: bool = False,
                block: int = BLOCK) -> Iterator[Op]:
    """``iter_trace_ops(source, strict, skips=skips, progress=progress)``, parsed in a child
    process ``block`` ops ahead of the caller."""
    source = str(source)
    bar = progress_bar(source, progress)
    tally = _Tally(bar.unit, bar.total) if bar is not None else None
    # fork: the child has every module already, and imports no script's __main__ again
    # (spawn and forkserver do, which breaks a script without a __main__ guard)
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_parse, args=(send, source, strict, tally, block),
                        name="iommu-lab-parse", daemon=True)
    child.start()
    send.close()
    try:
        while True:
            try:
                tag, payload, extra = recv.recv()
            except EOFError:
                child.join()
                raise RuntimeError(f"the trace parser process ended unexpectedly "
                                   f"(exit code {child.exitcode})") from None
            if tag == _OPS:
                if bar is not None:
                    bar.update(extra)
                yield from ops_of(payload)
                continue
            if skips is not None:
                skips.extend(payload)
            if tag == _ERROR:
                raise extra
            if bar is not None:
                bar.update(extra)
            return
    finally:
        recv.close()
        if child.is_alive():
            child.terminate()
        child.join()
        if bar is not None:
            bar.close()
