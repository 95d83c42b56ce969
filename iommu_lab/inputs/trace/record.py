"""The typed records :func:`~.parse.parse_line` hands to the rest of the trace importer.

One line of ftrace / ``trace-cmd report`` text becomes exactly one of: an :class:`Event` (an
``iommu:map``, ``iommu:unmap`` or ``iommu:io_page_fault`` tracepoint, include/trace/events/
iommu.h), an :class:`Other` (blank, ``#`` comment, another event or a header), or a
:class:`Malformed` (an iommu event whose text does not parse; never a guessed value).
:mod:`.frame` stores events as DataFrame columns; :mod:`.to_ops` turns them into ops.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ...errors import EINVAL, IommuError
from .synth import GENERATIONS

EVENTS = ("map", "unmap", "io_page_fault")
"""Event names of the iommu trace system that carry an IOVA."""

MAP, UNMAP, FAULT = 0, 1, 2
"""Event codes (``Event.event``): indices into :data:`EVENTS`."""

EVENT_CODES = {name: i for i, name in enumerate(EVENTS)} | {
    f"iommu:{name}": i for i, name in enumerate(EVENTS)}
"""Event name -> code; ``trace-cmd report`` may spell a name ``iommu:<name>``."""

V3_16, V4_0, V5_17 = (GENERATIONS.index(g) for g in ("v3.16", "v4.0", "v5.17"))
"""Format generation codes (``Event.generation``): indices into ``GENERATIONS``."""

U64 = 1 << 64
"""First value past ``u64``: the tracepoint fields are ``u64`` / ``size_t`` (§6.1)."""

NO_GENERATION = -1
"""``Event.generation`` of an io_page_fault: its format never changed (§6.1)."""


class Event(NamedTuple):
    """One parsed iommu event: a :func:`~.frame.read_trace` row, fields in ``COLUMNS`` order.

    ``event`` and ``generation`` are codes (:data:`EVENTS`, ``GENERATIONS``; generation
    :data:`NO_GENERATION` for faults). Without a line prefix ``timestamp`` is NaN, ``cpu`` and
    ``pid`` -1 and ``task`` "". Fields an event lacks are 0 / "" (``paddr`` of an unmap,
    ``size`` of a fault, ``flags`` of a map...). v3.16 values are the kernel's post-loop ones.
    """

    event: int
    timestamp: float
    iova: int
    paddr: int
    size: int
    unmapped_size: int
    flags: int
    line: int
    cpu: int
    task: str
    device: str
    generation: int
    pid: int
    driver: str


class Other(NamedTuple):
    """A line that is no iommu event: ``why`` is "blank", "comment" or "other" (another
    event, a header line); ``lost`` is the count of an ftrace ``[LOST n EVENTS]`` line."""

    why: str
    lost: int = 0


BLANK, COMMENT, OTHER = Other("blank"), Other("comment"), Other("other")
"""The :class:`Other` lines that lost no events (shared instances)."""


class Malformed(NamedTuple):
    """A line of an iommu event whose text does not parse exactly; ``reason`` says why."""

    reason: str


def unreplayable(event: int, generation: int) -> str:
    """Why a map/unmap event of size 0 cannot be replayed (v3.16 maps trace size 0, §6.2)."""
    if generation == V3_16:
        return ("v3.16 map event has size 0 (that kernel traced the post-loop size, "
                "kernel-api-history §6.2); it cannot be replayed")
    return f"{EVENTS[event]} event has size 0; it cannot be replayed"


Skips = list[tuple[int, str]]
"""``(line, reason)`` of each line lenient mode left out: malformed, or not replayable."""


class TraceFormatError(IommuError):
    """A malformed iommu trace line (``-EINVAL``); ``.line`` is its 1-based number."""

    def __init__(self, message: str, line: int | None = None, reason: str | None = None) -> None:
        super().__init__(EINVAL, message)
        self.line = line
        self.reason = reason if reason is not None else message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.strerror, self.line, self.reason))


def trace_at_ns(ts: float, t0: float | None) -> tuple[int | None, float | None]:
    """``(at_ns, t0)`` of an event at ``ts`` seconds: nanoseconds since ``t0``, the first
    timestamp of the trace (``ts`` itself when none came before), clamped at 0. An event
    without a timestamp (NaN: no ftrace prefix) has no time: ``(None, t0)``."""
    if ts != ts:
        return None, t0
    if t0 is None:
        t0 = ts
    at = (ts - t0) * 1e9
    return (round(at) if at > 0 else 0), t0


def drop_unreplayable(line: int, event: int, generation: int, strict: bool,
                      skips: Skips | None) -> None:
    """A map/unmap of size 0 cannot be replayed (v3.16 maps trace size 0, §6.2): raise
    naming its line (``strict``), else note it in ``skips``."""
    reason = unreplayable(event, generation)
    if strict:
        raise TraceFormatError(f"line {line}: {reason}", line, reason)
    if skips is not None:
        skips.append((line, reason))
