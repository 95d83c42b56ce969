"""Parse a stream of trace lines: the events in order, the other lines counted, bad ones
raised (strict) or listed (lenient). Shared by :func:`~.frame.read_trace` and
:func:`~.to_ops.iter_trace_ops`, so both see the same events and report the same skips.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .parse import parse_line
from .record import Event, Malformed, Skips, TraceFormatError


def _snippet(line: str) -> str:
    """The start of a line for an error message."""
    text = line.strip()
    return repr(text if len(text) <= 100 else text[:97] + "...")


class Reader:
    """:func:`parse_line` over a stream of lines: yields the events, counts the rest.

    ``other`` counts blank, comment, header and other-event lines; ``lost`` sums ftrace's
    ``[LOST n EVENTS]``. A malformed line raises :class:`TraceFormatError` naming it
    (``strict``) or is appended to ``skips`` as ``(line, reason)``.
    """

    def __init__(self, strict: bool = True, skips: Skips | None = None) -> None:
        self.strict = strict
        self.skips = skips if skips is not None else []
        self.other = 0
        self.lost = 0

    def events(self, lines: Iterable[str]) -> Iterator[Event]:
        """The events of ``lines`` (numbered from 1), in order."""
        take = self.take
        for n, raw in enumerate(lines, 1):
            got = take(raw, n)
            if got is not None:
                yield got

    def take(self, raw: str, n: int) -> Event | None:
        """Line ``n`` by :func:`parse_line`: its event, or None once it is counted as another
        line or rejected as malformed."""
        got = parse_line(raw, n)
        if type(got) is Event:
            return got
        if type(got) is Malformed:
            self.reject(n, got.reason, raw)
        else:
            self.count_other(got.lost)
        return None

    def count_other(self, lost: int = 0) -> None:
        """Count a line that is no iommu event (``lost``: ftrace's ``[LOST n EVENTS]``)."""
        self.other += 1
        self.lost += lost

    def reject(self, n: int, reason: str, raw: str) -> None:
        """Raise (strict) or record the skip of bad line ``n``; the error quotes it."""
        if self.strict:
            raise TraceFormatError(f"line {n}: {reason}: {_snippet(raw)}", n, reason)
        self.skips.append((n, reason))
