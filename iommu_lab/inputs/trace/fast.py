"""The block fast path of the trace import: one compiled regex over big blocks of text.

:func:`~.parse.parse_line` called once per line costs most of a million-line import. Here a
block of whole lines (:func:`~.source.blocks`) goes through :data:`LINE_RE` with ``findall``:
each match is one line, either a well-formed ``iommu:map``/``iommu:unmap`` line of any prefix
style and format generation (include/trace/events/iommu.h, kernel-api-history §6.1) with its
fields captured, or any other line, captured whole. The regex accepts only a subset of what
:func:`~.parse.parse_line` accepts, and gives the same fields; the few rules it cannot say
(event name against payload shape, the v5.17 range end, v3.16 hex sizes) are checked by
:func:`decode`. Every other line — noise, comments, faults, malformed or unusual text — and
every fast line :func:`decode` refuses goes through :func:`~.parse.parse_line` exactly as in
:meth:`~.reader.Reader.events`, so results, messages, skips, counts and line numbers are the
same. A block holding a lone ``\\r`` (a line break the regex does not see) or an ``IOMMU:``
twice in a line (the first one is the payload for :func:`~.parse.parse_line`) is read line by
line. :func:`fast_op` builds trusted :class:`~iommu_lab.inputs.ops.Op` records without
re-checking values already known valid.
"""

from __future__ import annotations

import gc
import io
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

from ..ops import Op
from .reader import Reader
from .record import EVENT_CODES, MAP, UNMAP, V3_16, V4_0, V5_17, Event

_H16 = r"[0-9a-fA-F]{16}"
# parse.py's prefix with a stricter irq-flags column (no ':'): the comm is split at its '-'s
# in turn (lazy: the leftmost split first, like parse_line's search). The tail after the
# split is rigid: a '-' inside it (in "(-)" or the flags) never starts another
# "-<pid> [<cpu>] ... <ts>: " reaching the same "IOMMU:", so a line has at most one split
# that fits, and both find it.
_PREFIX = (r"[^-\n]*+(?:-[^-\n]*+)*?-[0-9]{1,9}[ \t]+"
           r"(?:\([ \t]*(?:[0-9]+|-+)\)[ \t]+)?\[(?P<cpu>[0-9]{1,9})\][ \t]+"
           r"(?:[^ \t0-9\[:\n][^ \t:\n]*[ \t]+)?(?P<ts>[0-9]+(?:\.[0-9]+)?):[ \t]*")
# Decimal sizes of at most 19 digits without a leading 0 are never 0 and fit 64 bits.
_PAYLOAD = (rf"(?:(?:iommu:)?(?P<name>map|unmap):[ \t]*)?IOMMU:[ \t]+iova=0x(?P<iova>{_H16})"
            rf"(?:[ \t]+-[ \t]+0x(?P<end>{_H16}))?[ \t]+(?:paddr=0x(?P<paddr>{_H16})[ \t]+)?"
            r"size=(?:(?P<dsize>[1-9][0-9]{0,18})"
            r"(?:[ \t]+unmapped_size=(?P<done>0|[1-9][0-9]{0,18}))?"
            r"|0x(?P<hsize>0|[1-9a-fA-F][0-9a-fA-F]{0,15}))[ \t]*\r?\n")


LINE_RE = re.compile(rf"(?!#)[ \t]*+(?:{_PREFIX})?{_PAYLOAD}|(?P<other>[^\n]*)\n", re.ASCII)
"""One match per line of a block ending in a newline: a fast map/unmap line (groups cpu, ts,
name, iova, end, paddr, dsize, done, hsize) or another line (group other, the whole line)."""


def decode(name: str, iova_text: str, end: str, paddr_text: str, dsize: str, done: str,
           hsize: str) -> tuple[int, int, int, int, int, int] | None:
    """``(event, iova, paddr, size, unmapped_size, generation)`` of a fast line, as
    :func:`~.parse.parse_line` gives them, or None when it must judge the line (named event
    against payload shape, v3.16 hex size with a range or ``unmapped_size=``, a v5.17 range
    end that is not ``iova + size``, unmap size 0)."""
    named = EVENT_CODES[name] if name else None
    iova = int(iova_text, 16)
    if paddr_text:
        if named == UNMAP or done:
            return None
        if hsize:
            return None if end else (MAP, iova, int(paddr_text, 16), int(hsize, 16), 0, V3_16)
        size = int(dsize)
        if not end:
            return MAP, iova, int(paddr_text, 16), size, 0, V4_0
        if int(end, 16) != iova + size:
            return None
        return MAP, iova, int(paddr_text, 16), size, 0, V5_17
    if named == MAP:
        return None
    if hsize:
        size = int(hsize, 16)
        return None if end or not size else (UNMAP, iova, 0, size, size, V3_16)
    if not done:
        return None
    size = int(dsize)
    if not end:
        return UNMAP, iova, 0, size, int(done), V4_0
    if int(end, 16) != iova + size:
        return None
    return UNMAP, iova, 0, size, int(done), V5_17


Rows = list[tuple[str, ...]]
"""``findall`` rows of a block, one per line (see :data:`LINE_RE`)."""


class Chunk(NamedTuple):
    """A block of whole lines: its text and its regex ``rows`` (one per line)."""

    rows: Rows
    block: str


def chunks(blocks: Iterable[str]) -> Iterator[Chunk]:
    """Each block (whole lines; the last may lack its newline) as a :class:`Chunk` of
    :data:`LINE_RE` rows, or, when the regex cannot split the block the way :mod:`.source`
    does (see the module doc), of rows with only the ``other`` group set (the whole line)."""
    empty = ("",) * (LINE_RE.groups - 1)
    iova, other = itemgetter(LINE_RE.groupindex["iova"] - 1), itemgetter(-1)
    for block in blocks:
        if not block.endswith("\n"):
            block += "\n"  # the last line: parse_line strips the newline anyway
        if "\r" not in block or block.count("\r") == block.count("\r\n"):
            with no_gc():
                rows = LINE_RE.findall(block)
            # "\n" joins the other lines: no "IOMMU:" can span two of them
            if block.count("IOMMU:") == len(rows) - list(map(iova, rows)).count("") + (
                    "\n".join(map(other, rows)).count("IOMMU:")):
                yield Chunk(rows, block)
                continue
        yield Chunk([(*empty, raw) for raw in io.StringIO(block, newline="")], block)


class LineAt:
    """Line ``i`` of a block whose rows came from the regex (split when first asked)."""

    __slots__ = ("block", "lines")

    def __init__(self, block: str) -> None:
        self.block = block
        self.lines: list[str] | None = None

    def __call__(self, i: int) -> str:
        if self.lines is None:
            self.lines = self.block.split("\n")
        return self.lines[i]


def slow_line(reader: Reader, raw: str, n: int) -> Event | None:
    """Line ``n`` by :func:`~.parse.parse_line`, as :meth:`~.reader.Reader.events` takes it:
    the event, or None after counting another line or rejecting a malformed one.

    A line without ``IOMMU:``, ``map``, ``fault`` and ``LOST`` (most lines of other events)
    is counted at once: for it :func:`~.parse.parse_line` can only say "blank", "comment" or
    "other", with no lost events.
    """
    if "IOMMU:" not in raw and "map" not in raw and "fault" not in raw and "LOST" not in raw:
        reader.count_other()
        return None
    return reader.take(raw, n)


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a block's rows and ops are built: they form
    no cycles, and the collections their allocations trigger would rescan every live op (on
    this project's 2-core machine an op took ~1.3 µs to build with them, ~0.45 µs without)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_DEFAULTS = {f.name: f.default for f in fields(Op)}
_PROT = _DEFAULTS["prot"]


class _OpSlots:
    """:class:`Op`'s slot layout without its checks; each instance becomes an ``Op``."""

    __slots__ = Op.__slots__

    def __init__(self, kind: str, iova: int, size: int, paddr: int, write: bool,
                 at_ns: int | None, cpu: int) -> None:
        # one statement per slot: ~40% quicker than tuple assignments
        self.kind = kind
        self.iova = iova
        self.size = size
        self.paddr = paddr
        self.prot = _PROT
        self.write = write
        self.ns = 0
        self.count = 1
        self.stride = 0
        self.paddr_stride = 0
        self.at_ns = at_ns
        self.cpu = cpu
        self.__class__ = Op  # same slots, same layout: now a genuine (frozen) Op


class _OpFields:
    """:class:`Op` from every field in slot order, without its checks (see :class:`_OpSlots`)."""

    __slots__ = Op.__slots__

    def __init__(self, kind: str, iova: int, size: int, paddr: int, prot: int, write: bool,
                 ns: int, count: int, stride: int, paddr_stride: int, at_ns: int | None,
                 cpu: int) -> None:
        self.kind = kind
        self.iova = iova
        self.size = size
        self.paddr = paddr
        self.prot = prot
        self.write = write
        self.ns = ns
        self.count = count
        self.stride = stride
        self.paddr_stride = paddr_stride
        self.at_ns = at_ns
        self.cpu = cpu
        self.__class__ = Op


def _checked_op(kind: str, iova: int, size: int, paddr: int, write: bool,
                at_ns: int | None, cpu: int) -> Op:
    """The ordinary, checked constructor (used if :class:`Op` ever gains a field)."""
    return Op(kind, iova, size, paddr, write=write, at_ns=at_ns, cpu=cpu)


_SET = ("kind", "iova", "size", "paddr", "prot", "write", "ns", "count", "stride",
        "paddr_stride", "at_ns", "cpu")
_SAME_LAYOUT = Op.__slots__ == _SET and all(
    _DEFAULTS[name] == value for name, value in (("ns", 0), ("count", 1), ("stride", 0),
                                                 ("paddr_stride", 0)))
fast_op: Callable[[str, int, int, int, bool, int | None, int], Any] = (
    _OpSlots if _SAME_LAYOUT else _checked_op)
"""``fast_op(kind, iova, size, paddr, write, at_ns, cpu)``: an :class:`Op` equal to the
checked constructor's at a fraction of its cost (no ``__post_init__`` checks, no frozen
``object.__setattr__`` per field); only for values known valid (size > 0 where needed, no
negative field), as every trace event's are. Falls back to the checked constructor if
:class:`Op`'s fields or defaults ever change."""
op_from_fields: Callable[..., Any] = _OpFields if Op.__slots__ == _SET else Op
"""``op_from_fields(*fields)``: the :class:`Op` with these fields (``Op.__slots__`` order),
unchecked like :data:`fast_op`: only for the fields of an ``Op`` that was checked before."""

op_fields = attrgetter(*Op.__slots__)
"""Every field of an Op, in slot order, as a tuple (the inverse of :data:`op_from_fields`)."""


def _row(kind: str, iova: int, size: int, paddr: int, write: bool, at_ns: int | None,
         cpu: int) -> tuple[Any, ...]:
    return (kind, iova, size, paddr, _PROT, write, 0, 1, 0, 0, at_ns, cpu)


def _checked_row(kind: str, iova: int, size: int, paddr: int, write: bool,
                 at_ns: int | None, cpu: int) -> tuple[Any, ...]:
    return op_fields(_checked_op(kind, iova, size, paddr, write, at_ns, cpu))


fast_row: Callable[[str, int, int, int, bool, int | None, int], tuple[Any, ...]] = (
    _row if _SAME_LAYOUT else _checked_row)
"""``fast_row(...)``: ``op_fields(fast_op(...))`` without building the op (a tuple is ~10x
quicker to make than an ``Op``): what a parse-ahead child sends through its pipe."""
