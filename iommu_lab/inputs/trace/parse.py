"""Import ftrace / ``trace-cmd report`` text of the ``iommu:map``, ``iommu:unmap`` and
``iommu:io_page_fault`` tracepoints (include/trace/events/iommu.h) into a DataFrame or ops.

Three ``TP_printk`` generations exist (kernel-api-history §6.1)::

    v3.16        IOMMU: iova=0x%016llx paddr=0x%016llx size=0x%x          (unmap: no paddr)
    v4.0..v5.16  IOMMU: iova=0x%016llx paddr=0x%016llx size=%zu           (unmap: size=%zu
                                                                           unmapped_size=%zu)
    v5.17+       IOMMU: iova=0x%016llx - 0x%016llx paddr=0x%016llx size=%zu   (2nd = iova+size)
    io_page_fault (all): IOMMU:%s %s iova=0x%016llx flags=0x%04x          (driver, device)

Each line may carry ftrace's ``<comm>-<pid> [<cpu>] <irq flags> <ts>: <event>: `` prefix
(irq flags absent in older kernels and in ``trace-cmd report``), only the event name
(``options/context-info`` off), or nothing but the ``IOMMU:`` payload (the event is then told
by its fields). Other events, blank lines and header lines are counted and skipped. A line of
an iommu event whose payload does not parse exactly is *malformed*: an error naming the line
(strict) or a recorded skip (lenient) -- never a guessed value.

The parser streams: one line at a time into compact ``array.array`` columns, strings
interned, one DataFrame built at the end, so memory is ~80 bytes per event (~95 at peak) and
no Python object is kept per line.
"""

from __future__ import annotations

import gzip
import io
import re
import time
import tracemalloc
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import EINVAL, IommuError
from ..ops import Op
from .synth import GENERATIONS, make_synthetic_trace

__all__ = ["COLUMNS", "EVENTS", "GENERATIONS", "TraceFormatError", "bench_import",
           "iter_trace_ops", "make_synthetic_trace", "read_trace", "trace_to_ops"]

EVENTS = ("map", "unmap", "io_page_fault")
"""Event names of the iommu trace system that carry an IOVA."""

COLUMNS = ("event", "timestamp", "iova", "paddr", "size", "unmapped_size", "flags", "line",
           "cpu", "task", "device", "generation", "pid", "driver")
"""Columns of :func:`read_trace`, in order (``pid`` and ``driver`` are extras)."""

_U64 = 1 << 64
_NAN = float("nan")
_MAP, _UNMAP, _FAULT = 0, 1, 2
_V316, _V40, _V517 = 0, 1, 2
_EVENT_CODE = {name: i for i, name in enumerate(EVENTS)}
_EVENT_CODE.update({f"iommu:{name}": i for i, name in enumerate(EVENTS)})

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
_FIELD_RE = re.compile(r"([A-Za-z_]+)=(\S*)")
_FIELDS = {_MAP: ("iova", "paddr", "size"), _UNMAP: ("iova", "size", "unmapped_size"),
           _FAULT: ("iova", "flags")}
_FORMAT_HINT = {
    _MAP: "' iova=0x%016llx[ - 0x%016llx] paddr=0x%016llx size=N'",
    _UNMAP: "' iova=0x%016llx[ - 0x%016llx] size=N unmapped_size=N'",
    _FAULT: "'<driver> <device> iova=0x%016llx flags=0x%04x'",
}

Record = tuple[int, float, int, int, int, int, int, int, int, str, str, str, int]
"""(event, timestamp, iova, paddr, size, unmapped_size, flags, cpu, pid, task, device,
driver, generation) of one parsed event; codes index :data:`EVENTS` / :data:`GENERATIONS`."""


class TraceFormatError(IommuError):
    """A malformed iommu trace line (``-EINVAL``); ``.line`` is its 1-based number."""

    def __init__(self, message: str, line: int | None = None, reason: str | None = None) -> None:
        super().__init__(EINVAL, message)
        self.line = line
        self.reason = reason if reason is not None else message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.strerror, self.line, self.reason))


class _Malformed(Exception):
    """Internal: the line is an iommu event whose text does not parse; ``args[0]`` = reason."""


# --------------------------------------------------------------------------- line parsing


def _hex_reason(name: str, text: str, digits: int | None) -> str | None:
    """Why ``text`` is not a valid ``0x`` hex value of ``digits`` digits, or None if it is."""
    if not text.startswith("0x"):
        return f"{name} value {text!r} does not start with 0x"
    body = text[2:]
    if not body or not all(c in "0123456789abcdefABCDEF" for c in body):
        return f"{name} value {text!r} is not a hex number"
    if int(body, 16) >= _U64:
        return f"{name} value {text} overflows 64 bits"
    if digits is not None and len(body) != digits:
        return f"{name} value {text} has {len(body)} hex digits; the kernel prints {digits}"
    return None


def _size_reason(name: str, text: str) -> str | None:
    """Why ``text`` is not a size the kernel prints (``%zu`` or v3.16 ``0x%x``), or None."""
    if text.startswith("0x"):
        return _hex_reason(name, text, None)
    if not text.isascii() or not text.isdigit():
        return f"{name} value {text!r} is not a decimal number"
    if int(text) >= _U64:
        return f"{name} value {text} overflows 64 bits"
    if len(text) > 1 and text[0] == "0":
        return f"{name} value {text} has a leading zero; the kernel prints none"
    return None


def _diagnose(kind: int, payload: str) -> str:
    """A one-line reason why ``payload`` failed the strict pattern of event ``kind``."""
    name = EVENTS[kind]
    if "\ufffd" in payload:
        return f"{name} payload contains bytes that are not valid UTF-8"
    fields = _FIELD_RE.findall(payload)
    names = [n for n, _ in fields]
    for field in _FIELDS[kind]:
        if field not in names and not (field == "unmapped_size" and "size=0x" in payload):
            return f"{name} event has no {field}= field"
    for field in names:
        if field not in _FIELDS[kind]:
            return f"{name} event has an unexpected field {field}="
        if names.count(field) > 1:
            return f"{name} event has {field}= twice"
    for field, text in fields:
        if field in ("iova", "paddr"):
            reason = _hex_reason(field, text, 16)
        elif field == "flags":
            reason = _hex_reason(field, text, None)
            if reason is None and len(text) > 10:
                reason = f"flags value {text} is wider than the kernel's 32-bit int"
        else:
            reason = _size_reason(field, text)
        if reason:
            return f"{name} event: {reason}"
    range_m = re.search(r"iova=\S*[ \t]+-[ \t]*(\S*)", payload)
    if range_m:
        reason = _hex_reason("range end", range_m.group(1), 16)
        if reason:
            return f"{name} event: {reason}"
    return (f"{name} payload {payload.strip()!r} does not match the kernel format "
            f"{_FORMAT_HINT[kind]}")


def _map_values(iova_text: str, end: str | None, paddr_text: str, hsize: str | None,
                dsize: str | None) -> tuple[int, int, int, int, int]:
    """(iova, paddr, size, unmapped_size, generation) of a matched map payload."""
    iova = int(iova_text, 16)
    paddr = int(paddr_text, 16)
    if hsize is not None:
        if end is not None:
            raise _Malformed("map event mixes the v5.17 range form with a v3.16 hex size")
        # v3.16 traced the post-loop size, so 0x0 is what its kernel printed (§6.2).
        return iova, paddr, int(hsize, 16), 0, _V316
    assert dsize is not None  # the pattern has either hsize or dsize
    size = int(dsize)
    if size >= _U64:
        raise _Malformed(f"map event: size value {size} overflows 64 bits")
    if size == 0:
        raise _Malformed("map event has size 0")
    return iova, paddr, size, 0, _check_range("map", iova, size, end)


def _unmap_values(iova_text: str, end: str | None, hsize: str | None, dsize: str | None,
                  unmapped: str | None) -> tuple[int, int, int, int, int]:
    """(iova, 0, size, unmapped_size, generation) of a matched unmap payload."""
    iova = int(iova_text, 16)
    if hsize is not None:
        if end is not None:
            raise _Malformed("unmap event mixes the v5.17 range form with a v3.16 hex size")
        if unmapped is not None:
            raise _Malformed("unmap event has unmapped_size= with a v3.16 hex size")
        size = int(hsize, 16)
        if size == 0:
            raise _Malformed("unmap event has size 0")
        return iova, 0, size, size, _V316
    if unmapped is None:
        raise _Malformed("unmap event has no unmapped_size= field (decimal sizes are v4.0+, "
                         "which always print it)")
    assert dsize is not None  # the pattern has either hsize or dsize
    size, done = int(dsize), int(unmapped)
    if size >= _U64 or done >= _U64:
        raise _Malformed(f"unmap event: size {size} or unmapped_size {done} overflows 64 bits")
    if size == 0:
        raise _Malformed("unmap event has size 0")
    return iova, 0, size, done, _check_range("unmap", iova, size, end)


def _check_range(name: str, iova: int, size: int, end: str | None) -> int:
    """Generation of a decimal-size event; the v5.17 end must equal ``iova + size``."""
    if end is None:
        return _V40
    stop = int(end, 16)
    if iova + size != stop:
        if iova + size >= _U64:
            raise _Malformed(f"{name} event: iova 0x{iova:x} + size {size} overflows 64 bits")
        raise _Malformed(f"{name} event: range end 0x{stop:016x} != iova + size "
                         f"(0x{iova + size:016x})")
    return _V517


def _infer_kind(payload: str) -> int | None:
    """Event of a payload without an event name: fault, map or unmap by its fields."""
    if " flags=" in payload:
        return _FAULT
    if "paddr=" in payload:
        return _MAP
    if "iova=" in payload:
        return _UNMAP
    return None


def _no_payload(line: str) -> None:
    """Raise if an ``IOMMU:``-less line names an iommu event; else it is another event."""
    m = _ANY_HEAD_RE.match(line)
    if m and m["event"] in _EVENT_CODE:
        raise _Malformed(f"{m['event']} event has no 'IOMMU:' payload")


def _other_head(head: str) -> None:
    """Raise if an unparsable text before ``IOMMU:`` still names an iommu event."""
    m = _ANY_HEAD_RE.fullmatch(head.rstrip())
    if m and m["event"] not in _EVENT_CODE:
        return
    if _EVENT_WORD_RE.search(head):
        raise _Malformed("cannot parse the text before 'IOMMU:' (expected "
                         "'<comm>-<pid> [<cpu>] [<flags>] <timestamp>: <event>: ')")


def _parse_line(line: str) -> Record | None:
    """Parse one line: a :data:`Record`, None for other text, or raise ``_Malformed``."""
    idx = line.find("IOMMU:")
    if idx < 0:
        if "map" in line or "fault" in line:
            _no_payload(line)
        return None
    head = _TAIL_RE.search(line, 0, idx)
    if head is not None:
        task = line[:head.start()].lstrip(" \t")
        if "\n" in task:  # a comm never spans lines
            head = None
    if head is None:
        head = _NO_PREFIX_RE.fullmatch(line, 0, idx)
        if head is None:
            _other_head(line[:idx])
            return None
        ts, cpu, pid, task = _NAN, -1, -1, ""
    else:
        ts_text, cpu_text, pid_text = head.group("ts", "cpu", "pid")
        ts, cpu, pid = float(ts_text), int(cpu_text), int(pid_text)
    payload = line[idx + 6:]
    event = head["event"]
    kind = _EVENT_CODE[event] if event else _infer_kind(payload)
    if kind is None:
        return None
    if kind == _FAULT:
        m = _FAULT_RE.fullmatch(payload)
        if m is None:
            raise _Malformed(_diagnose(kind, payload))
        driver, device, iova_text, flags_text = m.groups()
        return (kind, ts, int(iova_text, 16), 0, 0, 0, int(flags_text, 16), cpu, pid, task,
                device, driver, -1)
    if kind == _MAP:
        m = _MAP_RE.fullmatch(payload)
        if m is None:
            raise _Malformed(_diagnose(kind, payload))
        iova, paddr, size, done, gen = _map_values(*m.groups())
    else:
        m = _UNMAP_RE.fullmatch(payload)
        if m is None:
            raise _Malformed(_diagnose(kind, payload))
        iova, paddr, size, done, gen = _unmap_values(*m.groups())
    return (kind, ts, iova, paddr, size, done, 0, cpu, pid, task, "", "", gen)


# --------------------------------------------------------------------------- input handling


def _is_path(src: object) -> bool:
    """A ``str``/``PathLike`` names a file; a ``str`` with a newline is the trace text itself."""
    return isinstance(src, PathLike) or (isinstance(src, str) and "\n" not in src)


def _open_text(path: str | PathLike[str]) -> io.TextIOBase:
    """Open a trace file as UTF-8 text; undecodable bytes become U+FFFD (then malformed)."""
    p = Path(path)
    if p.suffix == ".gz":
        return gzip.open(p, "rt", encoding="utf-8", errors="replace", newline="")
    return open(p, encoding="utf-8", errors="replace", newline="")


def _lines(src: Any) -> Iterator[str]:
    """Stream text lines from a path, a text blob, or an iterable of str/bytes lines."""
    if _is_path(src):
        with _open_text(src) as f:
            yield from f
    elif isinstance(src, str):
        yield from io.StringIO(src, newline="")
    elif isinstance(src, bytes | bytearray):
        raise IommuError(EINVAL, "read_trace takes a path or an iterable of lines, not bytes; "
                         "split the bytes into lines first")
    else:
        for item in src:
            if isinstance(item, bytes | bytearray):
                yield item.decode("utf-8", errors="replace")
            elif isinstance(item, str):
                yield item
            else:
                raise IommuError(EINVAL, f"trace lines must be str or bytes, not "
                                 f"{type(item).__name__}")


def _progress_bar(src: Any, progress: bool) -> Any:
    """A tqdm bar counting bytes of a file (or lines of an iterable), or None."""
    if not progress:
        return None
    from tqdm import tqdm  # the plain-text bar; tqdm.auto would import ipywidgets

    if _is_path(src) and Path(src).suffix != ".gz":
        return tqdm(total=Path(src).stat().st_size, unit="B", unit_scale=True,
                    desc=Path(src).name)
    return tqdm(unit=" lines", desc="trace")


def _counted(lines: Iterable[str], bar: Any) -> Iterator[str]:
    """Pass lines through, advancing ``bar`` by characters (files) or lines, in batches."""
    by_bytes = bar.unit == "B"
    done = 0
    for n, line in enumerate(lines, 1):
        done += len(line) if by_bytes else 1
        if not n & 0xFFF:
            bar.update(done)
            done = 0
        yield line
    bar.update(done)


def _snippet(line: str) -> str:
    """The start of a line for an error message."""
    text = line.strip()
    return repr(text if len(text) <= 100 else text[:97] + "...")


class _Reader:
    """Runs :func:`_parse_line` over a stream, counting other lines and handling bad ones."""

    def __init__(self, strict: bool, skips: list[tuple[int, str]] | None = None) -> None:
        self.strict = strict
        self.skips = skips if skips is not None else []
        self.other = 0
        self.lost = 0

    def records(self, src: Any, bar: Any = None) -> Iterator[tuple[int, Record]]:
        """Yield ``(line_number, record)`` per iommu event; bad lines raise or are skipped."""
        if bar is None:
            yield from self._records(_lines(src))
            return
        try:
            yield from self._records(_counted(_lines(src), bar))
        finally:
            if bar.total:  # a file: the byte count of the decoded text can differ a little
                bar.update(max(0, bar.total - bar.n))
            bar.close()

    def _records(self, lines: Iterable[str]) -> Iterator[tuple[int, Record]]:
        for n, raw in enumerate(lines, 1):
            line = raw.rstrip()
            if not line or line[0] == "#":
                self.other += 1
                continue
            try:
                rec = _parse_line(line)
            except _Malformed as exc:
                self._malformed(n, str(exc), raw)
                continue
            if rec is None:
                self.other += 1
                if "LOST" in line:
                    lost = _LOST_RE.search(line)
                    self.lost += int(lost.group(1)) if lost else 0
                continue
            yield n, rec

    def _malformed(self, n: int, reason: str, raw: str = "") -> None:
        """Raise (strict) or record the skip of bad line ``n``."""
        if self.strict:
            text = f": {_snippet(raw)}" if raw.strip() else ""
            raise TraceFormatError(f"line {n}: {reason}{text}", n, reason)
        self.skips.append((n, reason))


# --------------------------------------------------------------------------- DataFrame


class _Columns:
    """Compact growing columns (``array.array``) plus interned strings; one frame at the end."""

    def __init__(self) -> None:
        self.event = array("b")
        self.gen = array("b")
        self.ts = array("d")
        self.iova = array("Q")
        self.paddr = array("Q")
        self.size = array("Q")
        self.unmapped = array("Q")
        self.flags = array("I")
        self.line = array("q")
        self.cpu = array("i")
        self.pid = array("i")
        self.task = array("i")
        self.device = array("i")
        self.driver = array("i")
        self.strings: dict[str, int] = {"": 0}

    def adder(self) -> Any:
        """A fast ``add(n, record)`` appending record ``record`` of line ``n``."""
        ev_a, gen_a, ts_a = self.event.append, self.gen.append, self.ts.append
        iova_a, paddr_a, size_a = self.iova.append, self.paddr.append, self.size.append
        done_a, flags_a, line_a = self.unmapped.append, self.flags.append, self.line.append
        cpu_a, pid_a, task_a = self.cpu.append, self.pid.append, self.task.append
        device_a, driver_a = self.device.append, self.driver.append
        strings = self.strings

        def add(n: int, rec: Record) -> None:
            ev, ts, iova, paddr, size, done, flags, cpu, pid, task, device, driver, gen = rec
            ev_a(ev)
            gen_a(gen)
            ts_a(ts)
            iova_a(iova)
            paddr_a(paddr)
            size_a(size)
            done_a(done)
            flags_a(flags)
            line_a(n)
            cpu_a(cpu)
            pid_a(pid)
            code = strings.get(task)
            if code is None:
                code = strings[task] = len(strings)
            task_a(code)
            if ev == _FAULT:
                for s in (device, driver):
                    if s not in strings:
                        strings[s] = len(strings)
                device_a(strings[device])
                driver_a(strings[driver])
            else:
                device_a(0)
                driver_a(0)

        return add

    def _take(self, name: str, dtype: Any) -> np.ndarray:
        """The column as a numpy array; frees the ``array.array`` as it goes."""
        out = np.array(getattr(self, name), dtype=dtype)
        setattr(self, name, None)
        return out

    def _strings(self, name: str) -> pd.Categorical:
        """An interned string column as a Categorical over the strings it uses."""
        codes = self._take(name, np.int64)
        used = np.unique(codes)
        table = np.empty(len(self.strings), dtype=object)
        table[list(self.strings.values())] = list(self.strings.keys())
        remap = np.full(len(self.strings), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        return pd.Categorical.from_codes(remap[codes], categories=table[used].tolist())

    def frame(self) -> pd.DataFrame:
        """Build the DataFrame (columns :data:`COLUMNS`)."""
        event = self._take("event", np.int8)
        gen = self._take("gen", np.int8)

        def nullable(name: str, valid: np.ndarray, dtype: Any) -> pd.arrays.IntegerArray:
            return pd.arrays.IntegerArray(self._take(name, dtype), ~valid)

        cols: dict[str, Any] = {
            "event": pd.Categorical.from_codes(event, categories=list(EVENTS)),
            "timestamp": self._take("ts", np.float64),
            "iova": self._take("iova", np.uint64),
            "paddr": nullable("paddr", event == _MAP, np.uint64),
            "size": nullable("size", event != _FAULT, np.uint64),
            "unmapped_size": nullable("unmapped", event == _UNMAP, np.uint64),
            "flags": nullable("flags", event == _FAULT, np.uint32),
            "line": self._take("line", np.int64),
            "cpu": self._take("cpu", np.int64),
            "task": self._strings("task"),
            "device": self._strings("device"),
            "generation": pd.Categorical.from_codes(gen, categories=list(GENERATIONS)),
            "pid": self._take("pid", np.int64),
            "driver": self._strings("driver"),
        }
        return pd.DataFrame(cols, columns=list(COLUMNS), copy=False)


def read_trace(path_or_lines: Any, strict: bool = True, progress: bool = False) -> pd.DataFrame:
    """Read ftrace ``trace``/``trace_pipe`` or ``trace-cmd report`` text into a DataFrame.

    ``path_or_lines``: a path (``.gz`` too), a ``str`` holding the text (it has a newline),
    or an iterable of str/bytes lines. One row per ``map``/``unmap``/``io_page_fault``
    event, columns :data:`COLUMNS`: ``timestamp`` is NaN, ``cpu``/``pid`` -1 and ``task`` ""
    without a prefix; ``paddr`` is NA except for map, ``size`` NA for faults,
    ``unmapped_size`` NA except for unmap, ``flags`` NA except for faults; ``generation`` is
    the map/unmap format (v3.16, v4.0 = v4.0..v5.16, v5.17 = range form) and NA for faults.

    v3.16 rows carry the kernel's post-loop values (kernel-api-history §6.2): iova/paddr
    advanced past the range, map size 0, unmap iova advanced; ``unmapped_size`` = ``size``.
    v4.0..v4.12 maps trace the end ``paddr``; the format cannot tell them from v4.13+.

    Malformed iommu lines raise :class:`TraceFormatError` naming the line when ``strict``,
    else they are skipped and listed in ``df.attrs["skips"]`` as ``(line, reason)``.
    ``df.attrs`` also holds ``skipped_other`` (lines of other events, blanks, headers),
    ``generations`` (sorted list seen) and ``lost_events`` (ftrace ``[LOST n EVENTS]`` total).
    """
    reader = _Reader(strict)
    cols = _Columns()
    bar = _progress_bar(path_or_lines, progress)
    add = cols.adder()
    for n, rec in reader.records(path_or_lines, bar):
        add(n, rec)
    del add  # its bound appends keep the arrays alive; frame() frees them column by column
    gens = sorted({GENERATIONS[g] for g in set(cols.gen) if g >= 0}, key=GENERATIONS.index)
    df = cols.frame()
    df.attrs.update(skipped_other=reader.other, skips=reader.skips, generations=gens,
                    lost_events=reader.lost)
    return df


# --------------------------------------------------------------------------- ops


def _event_op(kind: int, iova: int, paddr: int, size: int, flags: int, at_ns: int | None,
              fault_write_mask: int) -> Op:
    """The :class:`Op` of one event: map, unmap (the size asked) or a device access."""
    if kind == _MAP:
        return Op("map", iova, size, paddr, at_ns=at_ns)
    if kind == _UNMAP:
        return Op("unmap", iova, size, at_ns=at_ns)
    return Op("access", iova, write=bool(flags & fault_write_mask), at_ns=at_ns)


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
                or op.write != first.write or op.prot != first.prot):
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
    runs (``count``/``stride``/``paddr_stride``, see :class:`~iommu_lab.ops.Op`).

    Only ops with ``at_ns is None`` merge, so timed replays keep every op's exact start time.
    """
    run: _Run | None = None
    for op in ops:
        if run is not None and run.extend(op):
            continue
        if run is not None:
            yield run.op()
        run = _Run(op)
    if run is not None:
        yield run.op()


def _not_replayable(kind: int, size: int, gen: int) -> str | None:
    """Why an event cannot become an op (v3.16 maps trace size 0, §6.2), or None."""
    if kind != _FAULT and size == 0:
        if gen == _V316:
            return ("v3.16 map event has size 0 (that kernel traced the post-loop size, "
                    "kernel-api-history §6.2); it cannot be replayed")
        return f"{EVENTS[kind]} event has size 0; it cannot be replayed"
    return None


def trace_to_ops(df: pd.DataFrame, *, merge_runs: bool = True, fault_write_mask: int = 0,
                 strict: bool = True) -> list[Op]:
    """Turn :func:`read_trace` rows into :class:`~iommu_lab.ops.Op` records, in row order.

    map -> ``Op("map", iova, size, paddr)``; unmap -> ``Op("unmap", iova, size)`` (the size
    asked, not ``unmapped_size``); io_page_fault -> ``Op("access", iova, write=...)``.
    ``write`` is ``bool(flags & fault_write_mask)``; the default mask 0 reads every fault as a
    read because drivers fill ``flags`` differently. Most callers of ``report_iommu_fault()``
    pass ``IOMMU_FAULT_WRITE`` (``0x1``, include/linux/iommu.h), so ``fault_write_mask=1`` fits
    them. ``at_ns`` is ``round((timestamp - t0) * 1e9)`` with ``t0`` the first timestamp
    (clamped at 0), None without one. With ``merge_runs`` consecutive *untimed* ops of one
    shape at a constant non-negative stride become one run (``count``/``stride``); timed ops
    never merge. Rows that cannot be ops (v3.16 maps of size 0) raise
    :class:`TraceFormatError` naming the line, or are dropped when ``strict`` is False.
    """
    missing = [c for c in ("event", "iova", "size", "paddr", "flags") if c not in df.columns]
    if missing:
        raise IommuError(EINVAL, f"trace DataFrame lacks column(s) {', '.join(missing)}")
    n = len(df)
    kinds = _event_codes(df["event"])
    iova = _u64_list(df["iova"])
    size = _u64_list(df["size"])
    paddr = _u64_list(df["paddr"])
    flags = _u64_list(df["flags"])
    at = _at_ns(df["timestamp"]) if "timestamp" in df.columns else [None] * n
    lines = df["line"].tolist() if "line" in df.columns else list(range(1, n + 1))
    gens = (df["generation"].astype(object).map({g: i for i, g in enumerate(GENERATIONS)})
            .fillna(-1).astype(int).tolist() if "generation" in df.columns else [_V40] * n)

    def ops() -> Iterator[Op]:
        for i in range(n):
            reason = _not_replayable(kinds[i], size[i], gens[i])
            if reason:
                if strict:
                    raise TraceFormatError(f"line {lines[i]}: {reason}", lines[i], reason)
                continue
            try:
                yield _event_op(kinds[i], iova[i], paddr[i], size[i], flags[i], at[i],
                                fault_write_mask)
            except IommuError as exc:
                raise TraceFormatError(f"line {lines[i]}: {exc.strerror}", lines[i],
                                       exc.strerror) from None

    return list(_merge_runs(ops()) if merge_runs else ops())


def _event_codes(col: pd.Series) -> list[int]:
    """Event names -> codes; unknown names are an error."""
    names = col.astype(object)
    codes = names.map(_EVENT_CODE)
    if codes.isna().any():
        bad = names[codes.isna()].iloc[0]
        raise IommuError(EINVAL, f"unknown trace event {bad!r}; expected one of "
                         f"{', '.join(EVENTS)}")
    return codes.astype(int).tolist()


def _u64_list(col: pd.Series) -> list[int]:
    """An integer column (NA -> 0) as Python ints, exact up to 2^64-1."""
    s = pd.Series(col)
    if s.hasnans:
        s = s.fillna(0)
    return s.to_numpy(dtype=np.uint64).tolist()


def _at_ns(ts: pd.Series) -> list[int | None]:
    """Nanoseconds since the first timestamp (clamped at 0); None where there is none."""
    t = pd.Series(ts, dtype=np.float64).to_numpy()
    valid = ~np.isnan(t)
    if not valid.any():
        return [None] * len(t)
    t0 = t[valid][0]
    ns = np.maximum(np.rint((np.where(valid, t, t0) - t0) * 1e9), 0).astype(np.int64)
    return [int(v) if ok else None for v, ok in zip(ns.tolist(), valid.tolist(), strict=True)]


def iter_trace_ops(path_or_lines: Any, strict: bool = True, *, fault_write_mask: int = 0,
                   merge_runs: bool = True, skips: list[tuple[int, str]] | None = None,
                   progress: bool = False) -> Iterator[Op]:
    """Stream ops straight from trace text, without a DataFrame (same rules as
    :func:`read_trace` + :func:`trace_to_ops`).

    ``at_ns`` counts from the first timestamped event. In lenient mode malformed and
    unreplayable lines are appended to ``skips`` (if given) as ``(line, reason)``.
    """
    reader = _Reader(strict, skips)

    def ops() -> Iterator[Op]:
        t0: float | None = None
        for n, rec in reader.records(path_or_lines, _progress_bar(path_or_lines, progress)):
            kind, ts, iova, paddr, size, _done, flags, *_rest, gen = rec
            reason = _not_replayable(kind, size, gen)
            if reason:
                reader._malformed(n, reason)
                continue
            at_ns = None
            if ts == ts:  # not NaN
                t0 = ts if t0 is None else t0
                at_ns = max(0, round((ts - t0) * 1e9))
            yield _event_op(kind, iova, paddr, size, flags, at_ns, fault_write_mask)

    yield from (_merge_runs(ops()) if merge_runs else ops())


# --------------------------------------------------------------------------- benchmark


def bench_import(n_lines: int = 1_000_000, generation: str = "v5.17",
                 path: str | PathLike[str] | None = None) -> tuple[float, int]:
    """Time :func:`read_trace` on an ``n_lines`` synthetic trace: ``(seconds, peak_bytes)``.

    Seconds come from a plain run; peak bytes (Python + numpy allocations, tracemalloc) from
    a second run, since tracing slows the parser. The trace is written to ``path`` (or a
    temporary file, removed afterwards).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(path) if path is not None else Path(tmp) / "bench-trace.txt"
        with open(target, "w", encoding="utf-8") as f:
            f.writelines(make_synthetic_trace(n_lines, generation=generation, seed=1))
        start = time.perf_counter()
        df = read_trace(target)
        seconds = time.perf_counter() - start
        del df
        tracemalloc.start()
        try:
            read_trace(target)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return seconds, peak
