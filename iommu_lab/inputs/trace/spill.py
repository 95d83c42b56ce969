"""Ops read from a trace once, then handed to any number of replays, in bounded memory.

A replay of a trace file under several (strategy, caller) pairs used to read and parse the
text once per pair; on a 1,000,000-line trace that is ~7 s of every pair's ~30 s. An
:class:`OpSpill` takes the ops of one pass (:func:`~.to_ops.iter_trace_ops`) and keeps them
in a temporary file as pickled blocks of field tuples, so each pair reads them back in
about a sixth of the parsing time (~1 µs an op against ~6.5 µs), while memory holds one
block at a time, as when streaming the text. Worker processes on the same machine read
the file by its path (:func:`read_spill`); workers elsewhere (a dask cluster) stream the
trace themselves.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from itertools import islice, starmap
from pathlib import Path
from types import TracebackType
from typing import Any

from ..ops import Op
from .fast import no_gc, op_fields, op_from_fields

BLOCK = 65_536
"""Ops per pickled block: the most a reader holds at once (a few MB)."""


class OpSpill:
    """The ops of ``ops``, kept in a temporary file (in ``directory``, default the system's)
    until :meth:`close` or the ``with`` block's end, ``block`` ops per pickle. Iterating
    yields them again, in order, as often as wanted."""

    def __init__(self, ops: Iterable[Op], directory: str | None = None,
                 block: int = BLOCK) -> None:
        self.block = block
        self.dir = Path(tempfile.mkdtemp(prefix="iommu-lab-ops-", dir=directory))
        self.path = self.dir / "ops.pickle"
        self.count = 0
        try:
            self._write(iter(ops))
        except BaseException:
            self.close()   # a trace error (strict mode): no file is left behind
            raise

    def _write(self, ops: Iterator[Op]) -> None:
        with open(self.path, "wb") as f:
            while block := list(islice(ops, self.block)):
                pickle.dump(list(map(op_fields, block)), f, protocol=pickle.HIGHEST_PROTOCOL)
                self.count += len(block)

    def __iter__(self) -> Iterator[Op]:
        return read_spill(self.path)

    def __len__(self) -> int:
        return self.count

    def close(self) -> None:
        """Delete the file."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> OpSpill:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_spill(path: str | Path) -> Iterator[Op]:
    """The ops an :class:`OpSpill` wrote to ``path``, one block in memory at a time."""
    with open(path, "rb") as f:
        while True:
            try:
                rows = pickle.load(f)
            except EOFError:
                return
            yield from ops_of(rows)


def ops_of(rows: list[tuple[Any, ...]]) -> list[Op]:
    """The ops of one block of field tuples (:data:`op_fields`), built without the cyclic
    collector (they form no cycles: see no_gc)."""
    with no_gc():
        return list(starmap(op_from_fields, rows))
