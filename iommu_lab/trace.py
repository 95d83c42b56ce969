"""Append-only trace of what the CPU, the IOMMU and the device did, in simulated time.

Records are small tuples; conversion to pandas happens once, at the edge
(:meth:`Trace.to_dataframe`). A cap keeps memory bounded on huge step-by-step runs;
compact (extrapolated) stretches are summarised by one ``run`` record.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class TraceEvent(NamedTuple):
    """One span: ``actor`` (CPU | IOMMU | device) did ``op`` from ``t0`` to ``t1`` (ns)."""

    t0: int
    t1: int
    actor: str
    op: str
    iova: int
    size: int
    detail: str


class Trace:
    """A bounded append-only list of :class:`TraceEvent`.

    ``waits`` holds the CPUs' spin-waits (for a CMD_SYNC, a lock, a free slot) apart from
    ``events``: the events are what the kernel's tracepoints and the IOMMU would show, the
    waits are what the model derives, drawn as their own timeline segments."""

    def __init__(self, limit: int = 200_000) -> None:
        self.events: list[TraceEvent] = []
        self.waits: list[TraceEvent] = []
        self.limit = limit
        self.dropped = 0

    def wants(self) -> bool:
        """Is there room for one more record? (Callers check before building costly
        detail text; a ``False`` counts the record as dropped.)"""
        if len(self.events) < self.limit:
            return True
        self.dropped += 1
        return False

    def add(self, t0: int, t1: int, actor: str, op: str, iova: int = 0, size: int = 0,
            detail: str = "") -> None:
        """Append one record (counted as dropped past the limit)."""
        if len(self.events) < self.limit:
            self.events.append(TraceEvent(t0, t1, actor, op, iova, size, detail))
        else:
            self.dropped += 1

    def add_wait(self, t0: int, t1: int, lane: str, label: str) -> None:
        """Record that the CPU on ``lane`` spun from ``t0`` to ``t1`` (bounded like events)."""
        if len(self.waits) < self.limit:
            self.waits.append(TraceEvent(t0, t1, lane, label, 0, 0, ""))

    def recording(self) -> bool:
        """Is there room for another event or wait? (The op memo replays only ops whose
        records would all be dropped.)"""
        return len(self.events) < self.limit or len(self.waits) < self.limit

    def __len__(self) -> int:
        return len(self.events)

    def to_dataframe(self) -> Any:
        """All records as a pandas DataFrame (columns = TraceEvent fields)."""
        import pandas as pd

        df = pd.DataFrame(self.events, columns=list(TraceEvent._fields))
        df.attrs["dropped"] = self.dropped
        df.attrs["waits"] = list(self.waits)
        return df
