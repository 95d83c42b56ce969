"""Parse and format the units people use for IOVAs and sizes: ``0x1000``, ``4K``, ``2M``, ``16G``."""

from __future__ import annotations

import re

from .errors import einval

SZ_4K = 1 << 12
SZ_16K = 1 << 14
SZ_64K = 1 << 16
SZ_2M = 1 << 21
SZ_32M = 1 << 25
SZ_512M = 1 << 29
SZ_1G = 1 << 30

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_MAX = 1 << 64


def parse_size(value: int | str, what: str = "size") -> int:
    """Return bytes for ``4096``, ``"4K"``, ``"2MiB"``, ``"0x1000"``; raise IommuError(EINVAL) naming `what`."""
    if isinstance(value, bool):
        raise einval(f"{what} must be a number or a string like '4K', not {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        text = value.strip().replace("_", "")
        if text.lower().startswith("0x"):
            try:
                n = int(text, 16)
            except ValueError:
                raise einval(f"{what} {value!r} is not a hex number") from None
        else:
            m = _SIZE_RE.match(text)
            if not m:
                raise einval(f"{what} {value!r} is not a number like 4096, 0x1000, 4K, 2M or 1G")
            n = int(m.group(1)) * _SUFFIX[m.group(2).upper()]
    else:
        raise einval(f"{what} must be a number or a string like '4K', not {type(value).__name__}")
    if n < 0 or n >= _MAX:
        raise einval(f"{what} {value!r} is outside 0 .. 2^64-1")
    return n


def parse_addr(value: int | str, what: str = "iova") -> int:
    """Return an address from ``0x...`` hex, decimal, or a size-like string (``"1G"``)."""
    return parse_size(value, what)


def fmt_size(n: int) -> str:
    """Format bytes compactly: 4096 -> '4K', 2097152 -> '2M', 12288 -> '12K', 5 -> '5'."""
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def fmt_ns(ns: float) -> str:
    """A simulated duration as people read it: ``840 ns``, ``3.58 µs``, ``1.25 ms``, ``2.1 s``."""
    ns = float(ns)
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:,.3g} {unit}" if abs(ns) < 1000 * scale else f"{ns / scale:,.0f} {unit}"
    return f"{ns:,.0f} ns"
