"""Text lines from wherever a trace is: a path (``.gz`` too), a ``str`` of text, or an
iterable of ``str``/``bytes`` lines, optionally behind a tqdm progress bar.

Nothing here knows about iommu events; :mod:`.reader` parses what this yields. Files are read
as UTF-8 with undecodable bytes turned into U+FFFD, which the parser reports as malformed.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator
from os import PathLike
from pathlib import Path
from typing import Any

from ...errors import EINVAL, IommuError


def is_path(src: object) -> bool:
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
    if is_path(src):
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


BLOCK_CHARS = 1 << 20
"""Characters per block of :func:`blocks` (~7,000 ftrace lines): big enough that the per-block
calls cost nothing, small enough that a block's rows and ops stay ~20 MB."""


def blocks(src: Any, bar: Any = None, size: int | None = None) -> Iterator[str] | None:
    """``src`` as blocks of whole lines (each ends in a newline but perhaps the last), or None
    when ``src`` is an iterable of lines (those are read line by line with :func:`lines`).

    ``src`` is a path (``.gz`` too) or a ``str`` holding the text, decoded as :func:`lines`
    does. ``bar`` (:func:`progress_bar`, or None) advances block by block and is closed when
    the blocks end or are closed. ``size``: characters per block (default :data:`BLOCK_CHARS`).
    """
    size = size or BLOCK_CHARS
    if is_path(src):
        text: Iterator[str] = _file_blocks(src, size)
    elif isinstance(src, str):
        text = _text_blocks(src, size)
    else:
        return None
    return text if bar is None else _counted_blocks(text, bar)


def _file_blocks(path: str | PathLike[str], size: int) -> Iterator[str]:
    """Blocks of a file, cut after a newline (a ``\\r\\n`` is never split)."""
    with _open_text(path) as f:
        carry = ""
        while chunk := f.read(size):
            cut = chunk.rfind("\n") + 1
            if cut:
                yield carry + chunk[:cut]
                carry = chunk[cut:]
            else:
                carry += chunk
        if carry:
            yield carry


def _text_blocks(text: str, size: int) -> Iterator[str]:
    """Blocks of a text blob, cut after a newline."""
    start = 0
    while start < len(text):
        cut = text.rfind("\n", start, start + size) + 1
        if cut <= start:
            cut = text.find("\n", start + size) + 1 or len(text)
        yield text[start:cut]
        start = cut


def _counted_blocks(text: Iterator[str], bar: Any) -> Iterator[str]:
    """Pass blocks through, advancing ``bar`` by characters (files) or lines."""
    by_bytes = bar.unit == "B"
    try:
        for block in text:
            bar.update(len(block) if by_bytes else block.count("\n"))
            yield block
    finally:
        if bar.total:  # a file: the byte count of the decoded text can differ a little
            bar.update(max(0, bar.total - bar.n))
        bar.close()


def progress_bar(src: Any, progress: bool) -> Any:
    """A tqdm bar counting bytes of a file (or lines of an iterable), or None."""
    if not progress:
        return None
    from tqdm import tqdm  # the plain-text bar; tqdm.auto would import ipywidgets

    if is_path(src) and Path(src).suffix != ".gz":
        return tqdm(total=Path(src).stat().st_size, unit="B", unit_scale=True,
                    desc=Path(src).name)
    return tqdm(unit=" lines", desc="trace")


def lines(src: Any, bar: Any = None) -> Iterator[str]:
    """The text lines of ``src``, advancing ``bar`` (:func:`progress_bar`, or None) as they go.

    ``src`` is a path (``.gz`` too), a ``str`` holding the text (it has a newline), or an
    iterable of str/bytes lines. The bar is closed when the lines end or are closed.
    """
    if bar is None:
        return _lines(src)  # not wrapped: one generator fewer per line
    return _counted(_lines(src), bar)


def _counted(text: Iterable[str], bar: Any) -> Iterator[str]:
    """Pass lines through, advancing ``bar`` by characters (files) or lines, in batches."""
    by_bytes = bar.unit == "B"
    done = 0
    try:
        for n, line in enumerate(text, 1):
            done += len(line) if by_bytes else 1
            if not n & 0xFFF:
                bar.update(done)
                done = 0
            yield line
        bar.update(done)
    finally:
        if bar.total:  # a file: the byte count of the decoded text can differ a little
            bar.update(max(0, bar.total - bar.n))
        bar.close()
