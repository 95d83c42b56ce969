"""One line of ftrace / ``trace-cmd report`` text -> one :mod:`.record` (the line grammar).

The ``iommu:map``, ``iommu:unmap`` and ``iommu:io_page_fault`` tracepoints
(include/trace/events/iommu.h) have three ``TP_printk`` generations (kernel-api-history §6.1)::

    v3.16        IOMMU: iova=0x%016llx paddr=0x%016llx size=0x%x          (unmap: no paddr)
    v4.0..v5.16  IOMMU: iova=0x%016llx paddr=0x%016llx size=%zu           (unmap: size=%zu
                                                                           unmapped_size=%zu)
    v5.17+       IOMMU: iova=0x%016llx - 0x%016llx paddr=0x%016llx size=%zu   (2nd = iova+size)
    io_page_fault (all): IOMMU:%s %s iova=0x%016llx flags=0x%04x          (driver, device)

Each line may carry ftrace's ``<comm>-<pid> [<cpu>] <irq flags> <ts>: <event>: `` prefix
(irq flags absent in older kernels and in ``trace-cmd report``), only the event name
(``options/context-info`` off), or nothing but the ``IOMMU:`` payload (the event is then told
by its fields). A line of an iommu event whose payload does not parse exactly is
:class:`~.record.Malformed`, with the reason from :func:`~.diagnose.diagnose`;
:class:`~.reader.Reader` applies :func:`parse_line` to a whole stream.
"""

from __future__ import annotations

import re

from .diagnose import diagnose
from .record import (
    BLANK,
    COMMENT,
    EVENT_CODES,
    FAULT,
    MAP,
    NO_GENERATION,
    OTHER,
    U64,
    UNMAP,
    V3_16,
    V4_0,
    V5_17,
    Event,
    Malformed,
    Other,
)

_NAN = float("nan")
_H16 = r"[0-9a-fA-F]{16}"
_DEC = r"0|[1-9][0-9]{0,19}"
_HEX = r"0|[1-9a-fA-F][0-9a-fA-F]{0,15}"
# pid/cpu: at most 9 digits (PID_MAX_LIMIT and NR_CPUS are far below) so they fit an int32.
_PREFIX = (r"(?P<task>.*?)-(?P<pid>[0-9]{1,9})[ \t]+(?:\([ \t]*(?:[0-9]+|-+)\)[ \t]+)?"
           r"\[(?P<cpu>[0-9]{1,9})\][ \t]+(?:[^ \t0-9\[][^ \t]*[ \t]+)?"
           r"(?P<ts>[0-9]+(?:\.[0-9]+)?):[ \t]*")
_EVENT = r"(?:(?:iommu:)?(?P<event>map|unmap|io_page_fault):[ \t]*)?"
# The text before "IOMMU:" is [prefix][event: ]. The prefix is found from its end (search for
# "-<pid> [<cpu>] ... <ts>: " reaching the payload), which is quicker than a lazy <comm> group
# and gives the same split: the leftmost start, i.e. the shortest comm.
_TAIL_RE = re.compile(_PREFIX.replace("(?P<task>.*?)", "") + _EVENT + r"\Z", re.ASCII)
_NO_PREFIX_RE = re.compile(r"[ \t]*" + _EVENT, re.ASCII)
_ANY_HEAD_RE = re.compile(rf"[ \t]*(?:{_PREFIX})?(?P<event>[A-Za-z_][A-Za-z0-9_:]*):", re.ASCII)
_EVENT_WORD_RE = re.compile(r"(?<![A-Za-z0-9_:])(?:iommu:)?(?:map|unmap|io_page_fault):",
                            re.ASCII)
_MAP_RE = re.compile(rf"[ \t]+iova=0x(?P<iova>{_H16})(?:[ \t]+-[ \t]+0x(?P<end>{_H16}))?"
                     rf"[ \t]+paddr=0x(?P<paddr>{_H16})[ \t]+size=(?:0x(?P<hsize>{_HEX})"
                     rf"|(?P<dsize>{_DEC}))", re.ASCII)
_UNMAP_RE = re.compile(rf"[ \t]+iova=0x(?P<iova>{_H16})(?:[ \t]+-[ \t]+0x(?P<end>{_H16}))?"
                       rf"[ \t]+size=(?:0x(?P<hsize>{_HEX})|(?P<dsize>{_DEC}))"
                       rf"(?:[ \t]+unmapped_size=(?P<unmapped>{_DEC}))?", re.ASCII)
_FAULT_RE = re.compile(rf"(?P<driver>[!-~]*)[ \t](?P<device>[!-~]+)[ \t]+iova=0x(?P<iova>{_H16})"
                       r"[ \t]+flags=0x(?P<flags>[0-9a-fA-F]{4}|[1-9a-fA-F][0-9a-fA-F]{4,7})",
                       re.ASCII)
_LOST_RE = re.compile(r"\[LOST ([0-9]+) EVENTS\]")
_new = tuple.__new__  # _new(Event, values): Event(*values) without its Python-level __new__


class _Malformed(Exception):
    """The line is an iommu event whose text does not parse; ``args[0]`` = reason."""


def parse_line(raw: str, number: int = 1) -> Event | Other | Malformed:
    """Classify line ``number`` (1-based; it becomes ``Event.line``) of a trace.

    One function rather than three on purpose: it runs once per line, and each call saved
    is ~2% of a million-line import.
    """
    line = raw.rstrip()
    if not line or line[0] == "#":
        return COMMENT if line else BLANK
    idx = line.find("IOMMU:")
    if idx < 0:
        return _no_payload(line)
    head = _TAIL_RE.search(line, 0, idx)
    if head is not None and "\n" not in (task := line[:head.start()].lstrip(" \t")):
        ts_text, cpu_text, pid_text, name = head.group("ts", "cpu", "pid", "event")
        ts, cpu, pid = float(ts_text), int(cpu_text), int(pid_text)
    else:  # no prefix, or a "comm" spanning lines (a comm never does)
        head = _NO_PREFIX_RE.fullmatch(line, 0, idx)
        if head is None:
            return _other_head(line, idx)
        ts, cpu, pid, task, name = _NAN, -1, -1, "", head["event"]
    payload = line[idx + 6:]
    kind = EVENT_CODES[name] if name else _infer_kind(payload)
    try:
        if kind == FAULT:
            driver, device, iova, flags = _fault_values(payload)
            return _new(Event, (FAULT, ts, iova, 0, 0, 0, flags, number, cpu, task, device,
                                NO_GENERATION, pid, driver))
        if kind is None:
            return _other(line)
        iova, paddr, size, done, gen = (_map_values if kind == MAP else _unmap_values)(payload)
    except _Malformed as exc:
        return Malformed(exc.args[0])
    return _new(Event, (kind, ts, iova, paddr, size, done, 0, number, cpu, task, "", gen, pid,
                        ""))


def _other(line: str) -> Other:
    """A line of another event, or a header; ftrace's ``[LOST n EVENTS]`` keeps its count."""
    lost = _LOST_RE.search(line) if "LOST" in line else None
    return Other("other", int(lost.group(1))) if lost else OTHER


def _fault_values(payload: str) -> tuple[str, str, int, int]:
    """(driver, device, iova, flags) of an io_page_fault payload."""
    m = _FAULT_RE.fullmatch(payload)
    if m is None:
        raise _Malformed(diagnose(FAULT, payload))
    driver, device, iova_text, flags_text = m.groups()
    return driver, device, int(iova_text, 16), int(flags_text, 16)


def _map_values(payload: str) -> tuple[int, int, int, int, int]:
    """(iova, paddr, size, unmapped_size, generation) of a map payload."""
    m = _MAP_RE.fullmatch(payload)
    if m is None:
        raise _Malformed(diagnose(MAP, payload))
    iova_text, end, paddr_text, hsize, dsize = m.groups()
    iova, paddr = int(iova_text, 16), int(paddr_text, 16)
    if hsize is not None:
        if end is not None:
            raise _Malformed("map event mixes the v5.17 range form with a v3.16 hex size")
        # v3.16 traced the post-loop size, so 0x0 is what its kernel printed (§6.2).
        return iova, paddr, int(hsize, 16), 0, V3_16
    size = int(dsize)
    if size >= U64:
        raise _Malformed(f"map event: size value {size} overflows 64 bits")
    if size == 0:
        raise _Malformed("map event has size 0")
    if end is None:
        return iova, paddr, size, 0, V4_0
    if int(end, 16) != iova + size:
        raise _range_error("map", iova, size, end)
    return iova, paddr, size, 0, V5_17


def _unmap_values(payload: str) -> tuple[int, int, int, int, int]:
    """(iova, 0, size, unmapped_size, generation) of an unmap payload."""
    m = _UNMAP_RE.fullmatch(payload)
    if m is None:
        raise _Malformed(diagnose(UNMAP, payload))
    iova_text, end, hsize, dsize, unmapped = m.groups()
    iova = int(iova_text, 16)
    if hsize is not None:
        if end is not None:
            raise _Malformed("unmap event mixes the v5.17 range form with a v3.16 hex size")
        if unmapped is not None:
            raise _Malformed("unmap event has unmapped_size= with a v3.16 hex size")
        size = int(hsize, 16)
        if size == 0:
            raise _Malformed("unmap event has size 0")
        return iova, 0, size, size, V3_16
    if unmapped is None:
        raise _Malformed("unmap event has no unmapped_size= field (decimal sizes are v4.0+, "
                         "which always print it)")
    size, done = int(dsize), int(unmapped)
    if size >= U64 or done >= U64:
        raise _Malformed(f"unmap event: size {size} or unmapped_size {done} overflows 64 bits")
    if size == 0:
        raise _Malformed("unmap event has size 0")
    if end is None:
        return iova, 0, size, done, V4_0
    if int(end, 16) != iova + size:
        raise _range_error("unmap", iova, size, end)
    return iova, 0, size, done, V5_17


def _range_error(name: str, iova: int, size: int, end: str) -> _Malformed:
    """The v5.17 range end is not ``iova + size`` (TP_printk prints ``iova + size``)."""
    if iova + size >= U64:
        return _Malformed(f"{name} event: iova 0x{iova:x} + size {size} overflows 64 bits")
    return _Malformed(f"{name} event: range end 0x{int(end, 16):016x} != iova + size "
                      f"(0x{iova + size:016x})")


def _infer_kind(payload: str) -> int | None:
    """Event of a payload without an event name: fault, map or unmap by its fields."""
    if " flags=" in payload:
        return FAULT
    if "paddr=" in payload:
        return MAP
    if "iova=" in payload:
        return UNMAP
    return None


def _no_payload(line: str) -> Other | Malformed:
    """An ``IOMMU:``-less line: malformed if it names an iommu event, else another line."""
    if "map" in line or "fault" in line:
        m = _ANY_HEAD_RE.match(line)
        if m and m["event"] in EVENT_CODES:
            return Malformed(f"{m['event']} event has no 'IOMMU:' payload")
    return _other(line)


def _other_head(line: str, idx: int) -> Other | Malformed:
    """Unparsable text before ``IOMMU:``: malformed if it still names an iommu event."""
    head = line[:idx]
    m = _ANY_HEAD_RE.fullmatch(head.rstrip())
    if (not m or m["event"] in EVENT_CODES) and _EVENT_WORD_RE.search(head):
        return Malformed("cannot parse the text before 'IOMMU:' (expected "
                         "'<comm>-<pid> [<cpu>] [<flags>] <timestamp>: <event>: ')")
    return _other(line)
