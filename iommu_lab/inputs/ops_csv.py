"""Ops as CSV: one :class:`~iommu_lab.ops.Op` per row, header :data:`~iommu_lab.ops.OP_FIELDS`.

Addresses and lengths (``iova``, ``paddr``, ``size``, ``stride``, ``paddr_stride``) are written
in ``0x`` hex like the kernel's trace output; ``write`` as 0/1; ``at_ns`` empty for None; the
rest in decimal. On input any int may be hex or decimal, sizes may be ``4K``/``2M``, cells
may be empty (the field's default) and columns may come in any order, but only known columns.
A bad cell raises :class:`~iommu_lab.errors.IommuError` (``EINVAL``) naming its row and column.
Writing then reading gives back equal ops.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from os import PathLike
from typing import Any, TextIO

from ..errors import IommuError, einval
from ..units import parse_size
from .ops import OP_FIELDS, OP_KINDS, Op

__all__ = ["HEX_FIELDS", "iter_ops_csv", "ops_to_csv_text", "read_ops_csv", "write_ops_csv"]

HEX_FIELDS = frozenset({"iova", "paddr", "size", "stride", "paddr_stride"})
"""Fields written as ``0x`` hex."""

def _cell(op: Op, name: str) -> str:
    """The CSV text of one field of ``op``."""
    value = getattr(op, name)
    if name in HEX_FIELDS:
        return f"0x{value:x}"
    if name == "write":
        return "1" if value else "0"
    if value is None:
        return ""
    return str(int(value)) if isinstance(value, int) else str(value)


def write_ops_csv(ops: Iterable[Op], path_or_file: str | PathLike[str] | TextIO) -> int:
    """Write ``ops`` as CSV with a header row; returns the number of ops written.

    ``path_or_file`` is a path (created/overwritten) or an open text file.
    """
    if isinstance(path_or_file, str | PathLike):
        with open(path_or_file, "w", encoding="utf-8", newline="") as f:
            return _write(ops, f)
    return _write(ops, path_or_file)


def _write(ops: Iterable[Op], f: TextIO) -> int:
    """Header, then one row per op."""
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(OP_FIELDS)
    n = 0
    for op in ops:
        if not isinstance(op, Op):
            raise einval(f"write_ops_csv: item {n + 1} is a {type(op).__name__}, not an Op")
        writer.writerow([_cell(op, name) for name in OP_FIELDS])
        n += 1
    return n


def _parse_int(text: str, what: str, signed: bool = False) -> int:
    """A decimal or ``0x`` int (negative only when ``signed``)."""
    t = text.strip().replace("_", "")
    neg = signed and t.startswith("-")
    body = t[1:] if neg else t
    try:
        if body.lower().startswith("0x"):
            value = int(body[2:], 16)
        elif body.isascii() and body.isdigit():
            value = int(body)
        else:
            raise ValueError
    except ValueError:
        raise einval(f"{what} {text!r} is not a decimal or 0x hex integer") from None
    return -value if neg else value


def _parse_bool(text: str, what: str) -> bool:
    """``0``/``1`` (also ``true``/``false``)."""
    t = text.strip().lower()
    if t in ("1", "true"):
        return True
    if t in ("0", "false"):
        return False
    raise einval(f"{what} {text!r} must be 0 or 1")


def _value(name: str, text: str) -> Any:
    """The Op field value of one non-empty cell; raises IommuError(EINVAL)."""
    if name == "kind":
        kind = text.strip()
        if kind not in OP_KINDS:
            raise einval(f"unknown op kind {kind!r}; expected one of {', '.join(OP_KINDS)}")
        return kind
    if name == "write":
        return _parse_bool(text, name)
    if name == "at_ns":
        return _parse_int(text, name, signed=True)
    if name in HEX_FIELDS:
        return parse_size(text.strip(), name)
    return _parse_int(text, name)


def _header(row: list[str], where: str) -> list[str]:
    """Validated column names of the header row."""
    names = [c.strip() for c in row]
    for i, name in enumerate(names, 1):
        if name not in OP_FIELDS:
            raise einval(f"{where}: header column {i} {name!r} is not an Op field; "
                         f"expected some of {', '.join(OP_FIELDS)}")
        if names.count(name) > 1:
            raise einval(f"{where}: header names column {name!r} twice")
    if "kind" not in names:
        raise einval(f"{where}: header has no 'kind' column")
    return names


def _row_op(names: list[str], row: list[str], where: str) -> Op:
    """The Op of one data row; errors name the row and column."""
    if len(row) != len(names):
        raise einval(f"{where}: has {len(row)} cells, the header has {len(names)}")
    kwargs: dict[str, Any] = {}
    for name, text in zip(names, row, strict=True):
        if not text.strip():
            if name == "kind":
                raise einval(f"{where}, column kind: empty")
            continue
        try:
            kwargs[name] = _value(name, text)
        except IommuError as exc:
            raise einval(f"{where}, column {name}: {exc.strerror}") from None
    try:
        return Op(**kwargs)
    except IommuError as exc:
        raise einval(f"{where}: {exc.strerror}") from None


def _rows(f: TextIO, label: str) -> Iterator[Op]:
    """Ops of the data rows after the header; blank and ``#`` rows are skipped."""
    reader = csv.reader(f)
    names: list[str] | None = None
    row_no = 0
    for row in reader:
        if not row or not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if names is None:
            names = _header(row, f"{label} line {reader.line_num}")
            continue
        row_no += 1
        yield _row_op(names, row, f"{label} row {row_no} (line {reader.line_num})")
    if names is None:
        raise einval(f"{label}: no header row (expected {', '.join(OP_FIELDS)})")


def iter_ops_csv(path_or_file: str | PathLike[str] | TextIO) -> Iterator[Op]:
    """Stream the ops of a CSV file written by :func:`write_ops_csv` (or by hand)."""
    if isinstance(path_or_file, str | PathLike):
        with open(path_or_file, encoding="utf-8-sig", newline="") as f:
            try:
                yield from _rows(f, str(path_or_file))
            except (UnicodeDecodeError, csv.Error) as exc:
                raise einval(f"{path_or_file}: not a readable CSV file ({exc})") from None
    else:
        label = getattr(path_or_file, "name", "ops csv")
        try:
            yield from _rows(path_or_file, str(label))
        except csv.Error as exc:
            raise einval(f"{label}: not a readable CSV file ({exc})") from None


def read_ops_csv(path_or_file: str | PathLike[str] | TextIO) -> list[Op]:
    """All ops of a CSV file (see :func:`iter_ops_csv`); raises IommuError(EINVAL) on bad rows."""
    return list(iter_ops_csv(path_or_file))


def ops_to_csv_text(ops: Iterable[Op]) -> str:
    """The CSV text of ``ops`` (handy in notebooks and tests)."""
    buf = io.StringIO()
    _write(ops, buf)
    return buf.getvalue()
