"""Why an iommu event's payload does not parse: the one-line reason a malformed line carries.

Called by :mod:`.parse` only after its strict pattern has failed, so this can be slow and
thorough: each field is checked against what ``TP_printk`` prints (include/trace/events/
iommu.h, kernel-api-history §6.1), and the first problem found is named.
"""

from __future__ import annotations

import re

from .record import EVENTS, FAULT, MAP, U64, UNMAP

_FIELD_RE = re.compile(r"([A-Za-z_]+)=(\S*)")
_RANGE_RE = re.compile(r"iova=\S*[ \t]+-[ \t]*(\S*)")
_FIELDS = {MAP: ("iova", "paddr", "size"), UNMAP: ("iova", "size", "unmapped_size"),
           FAULT: ("iova", "flags")}
_FORMAT_HINT = {
    MAP: "' iova=0x%016llx[ - 0x%016llx] paddr=0x%016llx size=N'",
    UNMAP: "' iova=0x%016llx[ - 0x%016llx] size=N unmapped_size=N'",
    FAULT: "'<driver> <device> iova=0x%016llx flags=0x%04x'",
}


def diagnose(kind: int, payload: str) -> str:
    """A one-line reason why ``payload`` (after ``IOMMU:``) failed event ``kind``'s pattern."""
    name = EVENTS[kind]
    if "\ufffd" in payload:
        return f"{name} payload contains bytes that are not valid UTF-8"
    fields = _FIELD_RE.findall(payload)
    reason = _field_names_reason(kind, [n for n, _ in fields], payload)
    if reason:
        return f"{name} {reason}"
    for field, text in fields:
        reason = _value_reason(field, text)
        if reason:
            return f"{name} event: {reason}"
    range_m = _RANGE_RE.search(payload)
    if range_m:
        reason = _hex_reason("range end", range_m.group(1), 16)
        if reason:
            return f"{name} event: {reason}"
    return (f"{name} payload {payload.strip()!r} does not match the kernel format "
            f"{_FORMAT_HINT[kind]}")


def _field_names_reason(kind: int, names: list[str], payload: str) -> str | None:
    """A missing, unexpected or repeated ``name=`` field, or None."""
    for field in _FIELDS[kind]:
        # v3.16 unmaps (hex size) print no unmapped_size (§6.1)
        if field not in names and not (field == "unmapped_size" and "size=0x" in payload):
            return f"event has no {field}= field"
    for field in names:
        if field not in _FIELDS[kind]:
            return f"event has an unexpected field {field}="
        if names.count(field) > 1:
            return f"event has {field}= twice"
    return None


def _value_reason(field: str, text: str) -> str | None:
    """Why ``text`` is not a value the kernel prints for ``field``, or None."""
    if field in ("iova", "paddr"):
        return _hex_reason(field, text, 16)  # 0x%016llx
    if field == "flags":  # 0x%04x of an int
        reason = _hex_reason(field, text, None)
        if reason is None and len(text) > 10:
            reason = f"flags value {text} is wider than the kernel's 32-bit int"
        return reason
    return _size_reason(field, text)


def _hex_reason(name: str, text: str, digits: int | None) -> str | None:
    """Why ``text`` is not a valid ``0x`` hex value of ``digits`` digits, or None if it is."""
    if not text.startswith("0x"):
        return f"{name} value {text!r} does not start with 0x"
    body = text[2:]
    if not body or not all(c in "0123456789abcdefABCDEF" for c in body):
        return f"{name} value {text!r} is not a hex number"
    if int(body, 16) >= U64:
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
    if int(text) >= U64:
        return f"{name} value {text} overflows 64 bits"
    if len(text) > 1 and text[0] == "0":
        return f"{name} value {text} has a leading zero; the kernel prints none"
    return None
